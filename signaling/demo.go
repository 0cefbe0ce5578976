package signaling

import (
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"html/template"
	"net/http"

	"github.com/parley-rtc/parley/configs"
)

//go:embed static/demo.html
var demoHTML string

var demoTemplate = template.Must(template.New("demo").Parse(demoHTML))

// serveDemo: GET / is a small product page that embeds the widget with one
// script tag, as a site would, using the demo widget (or the first one).
func (s *Server) serveDemo(w http.ResponseWriter, r *http.Request) {
	key := configs.DemoWidgetKey
	if w, err := s.widgets.WidgetByID("wdg_demo"); err == nil {
		key = w.Key // rotated
	} else if ws := s.widgets.ListWidgets(""); len(ws) > 0 {
		key = ws[0].Key
	}
	var n [16]byte
	_, _ = rand.Read(n[:])
	nonce := base64.RawStdEncoding.EncodeToString(n[:])
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; script-src 'self' 'nonce-"+nonce+"'")
	_ = demoTemplate.Execute(w, map[string]string{"WidgetKey": key, "Nonce": nonce})
}
