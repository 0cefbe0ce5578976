package signaling

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/parley-rtc/parley/configs"
)

// widgetFor checks a public widget key and the request's Origin, in this
// order: the key is known, an Origin is present and allowed, the widget is
// live. It returns the widget and the origin header value.
func (s *Server) widgetFor(r *http.Request, key string) (configs.WidgetConfig, string, error) {
	w, ok := s.cfg.Widget(key)
	if !ok || key == "" {
		return w, "", ErrUnknownWidget
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return w, "", ErrOriginRequired
	}
	if !widgetAllows(w, origin) {
		return w, "", fmt.Errorf("%w: %s", ErrOriginNotAllowed, origin)
	}
	if !w.IsLive() {
		return w, "", ErrWidgetNotLive
	}
	return w, strings.ToLower(origin), nil
}

// anyWidgetAllows reports whether some widget allows origin (for CORS).
func (s *Server) anyWidgetAllows(origin string) bool {
	for _, w := range s.cfg.Widgets {
		if widgetAllows(w, origin) {
			return true
		}
	}
	return false
}

// cors answers preflights and lets pages on an allowed origin read the
// responses of the public API. Access is still decided per widget by the
// handlers; this only controls what the browser exposes.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin != "" && s.anyWidgetAllows(origin) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "Location, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining")
			if r.Method == http.MethodOptions {
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, PATCH, OPTIONS")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// modes lists the modes this server offers.
func (s *Server) modes() []string {
	if s.engine == nil {
		return []string{"chat"}
	}
	return []string{"chat", "voice"}
}

// publicWidget is what a page may know about a widget.
type publicWidget struct {
	Key             string   `json:"key"`
	Title           string   `json:"title"`
	WelcomeText     string   `json:"welcome_text,omitempty"`
	Modes           []string `json:"modes"`
	MaxMessageChars int      `json:"max_message_chars"`
}

type resolveRequest struct {
	WidgetKey string `json:"widget_key"`
}

type resolveResponse struct {
	Widget             publicWidget `json:"widget"`
	Challenge          string       `json:"challenge"`
	ChallengeExpiresAt time.Time    `json:"challenge_expires_at"`
}

// serveResolve: POST /v1/widget/resolve → the widget's public config and a
// session challenge bound to the widget and the Origin.
func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request) {
	var req resolveRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	wc, origin, err := s.widgetFor(r, req.WidgetKey)
	if err != nil {
		writeError(w, err)
		return
	}
	now := time.Now()
	writeJSON(w, http.StatusOK, resolveResponse{
		Widget: publicWidget{Key: wc.Key, Title: wc.DisplayTitle, WelcomeText: wc.WelcomeText,
			Modes: s.modes(), MaxMessageChars: s.cfg.Chat.MaxMessageChars},
		Challenge:          s.challenger.mint(wc.Key, origin, now),
		ChallengeExpiresAt: now.Add(s.cfg.Sessions.ChallengeTTL).UTC().Truncate(time.Second),
	})
}
