package signaling

import (
	"net/http"
	"strings"
	"time"
)

// http.Server's ReadHeaderTimeout bounds the headers, but nothing bounded
// the body: a client trickling a byte every few seconds held a connection
// (and a handler) as long as it liked, on routes no one needs to be
// authenticated for. bodyDeadline gives every request that has a body
// limits.body_timeout to send it (serveUpload extends its own to
// limits.upload_timeout). The deadline ends with the body: when a body is
// read to its end net/http clears it before it starts its own background
// read, so a handler that then waits (a reply, a long poll) is not cut off;
// a body never finished stays under the deadline, also for the discarding
// net/http does after the handler.
func (s *Server) bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hasBody(r) {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.Limits.BodyTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// hasBody reports whether r carries a body (not a WebSocket upgrade, which
// has none and lives on).
func hasBody(r *http.Request) bool {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return false
	}
	return r.ContentLength > 0 || (r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody)
}

// extendBodyDeadline gives the rest of r's body d from now (uploads).
func extendBodyDeadline(w http.ResponseWriter, d time.Duration) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
}
