package signaling

import (
	_ "embed"
	"html/template"
	"net/http"

	"github.com/parley-rtc/parley/configs"
)

//go:embed static/demo.html
var demoHTML string

var demoTemplate = template.Must(template.New("demo").Parse(demoHTML))

// serveDemo: GET / is a small page that chats with the demo widget's agent
// over the WebSocket. It uses the public API exactly as a site would.
func (s *Server) serveDemo(w http.ResponseWriter, r *http.Request) {
	key := configs.DemoWidgetKey
	if w, err := s.b.WidgetByID("wdg_demo"); err == nil {
		key = w.Key // rotated
	} else if ws := s.b.ListWidgets(""); len(ws) > 0 {
		key = ws[0].Key
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	_ = demoTemplate.Execute(w, map[string]string{"WidgetKey": key})
}
