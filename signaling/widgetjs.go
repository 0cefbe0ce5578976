package signaling

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strings"
)

// The embeddable widget: one <script src=".../widget.js" data-widget-key=…>
// on a site's page. It is plain JavaScript served from the binary, so a
// self-hosted Parley needs no CDN and no build step.

//go:embed static/widget.js
var widgetJS []byte

// widgetJSETag is a strong validator of widgetJS, computed once (the file
// is fixed at build time).
var widgetJSETag = func() string {
	sum := sha256.Sum256(widgetJS)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}()

// widgetJSMaxAge is how long browsers and CDNs may use the script without
// asking again: short, so an upgrade reaches every site within minutes;
// after that the ETag makes the check a 304.
const widgetJSMaxAge = "public, max-age=300"

// serveWidgetJS: GET /widget.js. Any site may load the script itself (it
// holds no secret); what a page may do with it is decided per widget by
// the API (origins, challenges).
func (s *Server) serveWidgetJS(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("Cache-Control", widgetJSMaxAge)
	h.Set("ETag", widgetJSETag)
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	if etagMatches(r.Header.Get("If-None-Match"), widgetJSETag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	_, _ = w.Write(widgetJS)
}

// etagMatches reports whether an If-None-Match header names etag (RFC 9110
// §13.1.2: weak comparison, "*" matches anything).
func etagMatches(header, etag string) bool {
	for v := range strings.SplitSeq(header, ",") {
		v = strings.TrimSpace(v)
		if v == "*" || strings.TrimPrefix(v, "W/") == etag {
			return true
		}
	}
	return false
}
