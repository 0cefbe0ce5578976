package signaling

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestLiveKitClientVendored: the embedded livekit-client is the committed
// file, matches its pin (here and in the Makefile, which checks it offline
// in `make test`), comes with its licence and README, and the widget loads
// exactly the served bytes (path and integrity).
func TestLiveKitClientVendored(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("static", "vendor", "livekit-client")
	sum := sha256.Sum256([]byte(liveKitClientUMD))
	if got := hex.EncodeToString(sum[:]); got != liveKitClientSHA256 {
		t.Fatalf("embedded livekit-client.umd.js has sha256 %s, pinned %s: run make vendor-livekit-client", got, liveKitClientSHA256)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "livekit-client.umd.js"))
	if err != nil || string(onDisk) != liveKitClientUMD {
		t.Fatalf("the embedded file is not the committed one (%v)", err)
	}
	if !strings.Contains(liveKitClientUMD, ".LivekitClient={})") || !strings.Contains(liveKitClientUMD, `"object"==typeof exports`) {
		t.Fatal("not livekit-client's UMD build (its CommonJS branch is what the wrapper relies on)")
	}
	lic, err := os.ReadFile(filepath.Join(dir, "LICENSE"))
	if err != nil || !bytes.Contains(lic, []byte("Apache License")) || !bytes.Contains(lic, []byte("Version 2.0")) {
		t.Fatalf("LICENSE: %v", err)
	}
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil || !bytes.Contains(readme, []byte("| version | "+liveKitClientVersion+" |")) ||
		!bytes.Contains(readme, []byte(liveKitClientSHA256)) {
		t.Fatalf("README.md does not name version %s and sha256 %s (%v)", liveKitClientVersion, liveKitClientSHA256, err)
	}
	mk, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"LIVEKIT_CLIENT_VERSION": liveKitClientVersion, "LIVEKIT_CLIENT_UMD_SHA256": liveKitClientSHA256} {
		m := regexp.MustCompile(`(?m)^` + name + `\s*[?:]?=\s*(\S+)`).FindSubmatch(mk)
		if m == nil || string(m[1]) != want {
			t.Errorf("Makefile %s = %q, want %s (vendorjs.go)", name, m, want)
		}
	}

	// Served: the file verbatim, once, inside the wrapper.
	if strings.Count(string(liveKitClientJS), liveKitClientUMD) != 1 || !bytes.HasSuffix(liveKitClientJS, []byte("})();\n")) ||
		!bytes.Contains(liveKitClientJS, []byte(`new CustomEvent("`+liveKitClientEvent+`", { detail: module.exports })`)) {
		t.Fatal("the served SDK is not the file inside the wrapper")
	}
	if !strings.HasPrefix(liveKitClientPath, "/widget/vendor/") || !strings.Contains(liveKitClientPath, liveKitClientVersion) {
		t.Fatalf("path %s does not name the version: it is cached for a year", liveKitClientPath)
	}
	sri := sha512.Sum384(liveKitClientJS)
	if want := "sha384-" + base64.StdEncoding.EncodeToString(sri[:]); liveKitClientIntegrity != want {
		t.Fatalf("integrity %s, want %s", liveKitClientIntegrity, want)
	}
	wantConst := "const LIVEKIT_CLIENT = { path: " + strconv.Quote(liveKitClientPath) + ", integrity: " + strconv.Quote(liveKitClientIntegrity)
	if strings.Count(string(widgetJS), wantConst) != 1 {
		t.Fatalf("widget.js does not tell livekit.js the served path and integrity (%s)", wantConst)
	}
}

func TestServeLiveKitClient(t *testing.T) {
	t.Parallel()
	s := &Server{}
	get := scriptGetter(liveKitClientPath, s.serveLiveKitClient)
	rec := get(http.MethodGet, "Origin", "https://shop.example")
	h := rec.Header()
	if rec.Code != http.StatusOK || h.Get("Content-Type") != "text/javascript; charset=utf-8" ||
		h.Get("Cache-Control") != "public, max-age=31536000, immutable" || h.Get("ETag") != liveKitClientETag ||
		h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Cross-Origin-Resource-Policy") != "cross-origin" ||
		h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Content-Encoding") != "" ||
		!bytes.Equal(rec.Body.Bytes(), liveKitClientJS) || h.Get("Content-Length") != strconv.Itoa(len(liveKitClientJS)) {
		t.Fatalf("GET: %d %v (%d bytes)", rec.Code, h, rec.Body.Len())
	}
	if !strings.HasPrefix(liveKitClientETag, `"`) || len(liveKitClientETag) != 26 {
		t.Fatalf("ETag %s is not a quoted strong validator", liveKitClientETag)
	}
	// gzip when asked: the same bytes, a quarter of the size or less.
	rec = get(http.MethodGet, "Accept-Encoding", "gzip, deflate, br")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Encoding") != "gzip" || rec.Header().Get("Vary") != "Accept-Encoding" ||
		rec.Header().Get("ETag") != liveKitClientETag {
		t.Fatalf("gzip GET: %d %v", rec.Code, rec.Header())
	}
	gzLen := rec.Body.Len()
	if gzLen > len(liveKitClientJS)/3 {
		t.Errorf("gzipped: %d of %d bytes", gzLen, len(liveKitClientJS))
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(plain, liveKitClientJS) {
		t.Fatalf("gunzipped body is not the SDK (%v)", err)
	}
	t.Logf("served SDK: %d bytes, %d gzipped", len(liveKitClientJS), gzLen)
	if rec := get(http.MethodGet, "Accept-Encoding", "gzip;q=0"); rec.Header().Get("Content-Encoding") != "" || rec.Body.Len() != len(liveKitClientJS) {
		t.Errorf("gzip;q=0: %v", rec.Header())
	}
	checkScriptRequests(t, get, liveKitClientETag, len(liveKitClientJS))
}

func TestAcceptsGzip(t *testing.T) {
	t.Parallel()
	for header, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "br, gzip": true, "gzip;q=0.5": true, "gzip;q=0": false, "gzip; q=0.000": false,
		"*": true, "deflate, br": false, "identity": false, "x-gzip": false,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}
