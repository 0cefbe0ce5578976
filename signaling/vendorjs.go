package signaling

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
)

// The LiveKit client SDK for widgets whose voice goes over LiveKit
// (voice_transport: livekit): the official livekit-client npm package's
// UMD build, vendored unmodified in static/vendor/livekit-client/ by `make
// vendor-livekit-client` (pinned, checksum-verified, with its Apache-2.0
// licence) and served from the binary, so a self-hosted Parley needs no
// CDN. The widget injects it only when a visitor starts a LiveKit call
// (livekit.js); a page whose widget uses Parley's own WebRTC never fetches
// it.
//
// It is served wrapped: inside a function where module and exports are
// local (so the UMD takes its CommonJS branch, whatever AMD loader or
// LivekitClient global the page has), and handing its exports to the
// widget with a "parley:livekit-client" event on document. So it defines
// no global and cannot clash with a page's own copy of LiveKit.

// liveKitClientVersion is the vendored livekit-client's version
// (LIVEKIT_CLIENT_VERSION in the Makefile); it is in the served path, so
// browsers may cache the file for a year.
const liveKitClientVersion = "2.23.0"

// liveKitClientSHA256 pins the vendored file (LIVEKIT_CLIENT_UMD_SHA256 in
// the Makefile); TestLiveKitClientVendored checks the embedded bytes.
const liveKitClientSHA256 = "fb646f2260d84f91238d0a2dc10726c456631d6a26c7cafc43cfee5959b4d31d"

// liveKitClientPath is where the wrapped SDK is served.
const liveKitClientPath = "/widget/vendor/livekit-client-" + liveKitClientVersion + ".umd.js"

// liveKitClientEvent is the event the wrapped SDK dispatches on document,
// its exports in detail.
const liveKitClientEvent = "parley:livekit-client"

//go:embed static/vendor/livekit-client/livekit-client.umd.js
var liveKitClientUMD string

// The served SDK and its validators, computed once at start-up and never
// changed: liveKitClientETag is a strong ETag, liveKitClientIntegrity its
// Subresource Integrity digest (the widget loads it with integrity=, so a
// proxy or cache that altered it is refused by the browser).
var (
	liveKitClientJS        = wrapLiveKitClient(liveKitClientUMD)
	liveKitClientETag      = strongETag(liveKitClientJS)
	liveKitClientIntegrity = sriSHA384(liveKitClientJS)
)

// liveKitClientGzip is the served SDK gzipped, on first use (about a
// quarter of its size; compressing takes tens of milliseconds, and most
// processes never serve it).
var liveKitClientGzip = sync.OnceValue(func() []byte { return gzipped(liveKitClientJS) })

// wrapLiveKitClient wraps the UMD file as described above.
func wrapLiveKitClient(umd string) []byte {
	var b strings.Builder
	b.WriteString("/*! livekit-client " + liveKitClientVersion +
		" (Apache-2.0, https://github.com/livekit/client-sdk-js), unmodified between the markers." +
		" Served by Parley for its widget (docs/WIDGET.md): no global, it hands itself to the widget. */\n")
	b.WriteString("(function () {\nvar module = { exports: {} }, exports = module.exports, define;\n// ---- livekit-client.umd.js ----\n")
	b.WriteString(umd)
	if !strings.HasSuffix(umd, "\n") {
		b.WriteString("\n")
	}
	b.WriteString("// ---- end of livekit-client.umd.js ----\ndocument.dispatchEvent(new CustomEvent(\"" + liveKitClientEvent +
		"\", { detail: module.exports }));\n})();\n")
	return []byte(b.String())
}

func strongETag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

func sriSHA384(b []byte) string {
	sum := sha512.Sum384(b)
	return "sha384-" + base64.StdEncoding.EncodeToString(sum[:])
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // a valid level: no error
	_, _ = zw.Write(b)                                       // a bytes.Buffer does not fail
	_ = zw.Close()
	return buf.Bytes()
}

// vendorMaxAge: the path names the version, so the bytes behind it never
// change; browsers and CDNs keep it a year.
const vendorMaxAge = "public, max-age=31536000, immutable"

// serveLiveKitClient: GET /widget/vendor/livekit-client-<version>.umd.js.
// Any site may load it (it is public code); the widget loads it with
// crossorigin=anonymous and integrity=, hence the CORS header.
func (s *Server) serveLiveKitClient(w http.ResponseWriter, r *http.Request) {
	script{body: liveKitClientJS, etag: liveKitClientETag, cacheControl: vendorMaxAge, gzip: liveKitClientGzip}.serve(w, r)
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip (RFC
// 9110 §12.5.3; "gzip;q=0" refuses it).
func acceptsGzip(header string) bool {
	for v := range strings.SplitSeq(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(v), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.TrimSpace(name) != "*" {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
