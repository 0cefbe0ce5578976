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
	w, err := s.widgets.WidgetByKey(key)
	if err != nil {
		return w, "", ErrUnknownWidget
	}
	origin, err := checkOrigin(w, r.Header.Get("Origin"))
	if err != nil {
		return w, "", err
	}
	if !w.IsLive() {
		return w, "", ErrWidgetNotLive
	}
	return w, origin, nil
}

// checkOrigin checks an Origin header against a widget and returns it in
// canonical form.
func checkOrigin(w configs.WidgetConfig, origin string) (string, error) {
	if origin == "" {
		return "", ErrOriginRequired
	}
	if !widgetAllows(w, origin) {
		return "", fmt.Errorf("%w: %s", ErrOriginNotAllowed, origin)
	}
	return strings.ToLower(origin), nil
}

// anyWidgetAllows reports whether some widget allows origin (for CORS).
func (s *Server) anyWidgetAllows(origin string) bool {
	for _, w := range s.widgets.ListWidgets("") {
		if widgetAllows(w.WidgetConfig, origin) {
			return true
		}
	}
	return false
}

// limit applies a rate limit of kind to the request's client IP and the
// widget, setting the X-RateLimit headers; a refusal is ErrRateLimited.
func (s *Server) limit(w http.ResponseWriter, r *http.Request, kind, widgetID string) error {
	res := s.allowRate(r.Context(), kind, s.ips.of(r), widgetID)
	res.setHeaders(w.Header())
	return res.err()
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

// publicWidget is what a page may know about a widget: never its key
// (the page has it), never a secret.
type publicWidget struct {
	ID               string                        `json:"id"`
	DisplayTitle     string                        `json:"display_title"`
	LauncherLabel    string                        `json:"launcher_label"`
	WelcomeText      string                        `json:"welcome_text,omitempty"`
	Mode             string                        `json:"mode"`
	Modes            []string                      `json:"modes"`
	VoiceTransport   string                        `json:"voice_transport,omitempty"` // with voice in modes: webrtc or livekit
	Theme            string                        `json:"theme"`
	LauncherPosition string                        `json:"launcher_position"`
	Colors           configs.WidgetColors          `json:"colors"`
	Translations     map[string]configs.WidgetText `json:"translations"`
	IdentityPolicy   string                        `json:"identity_policy"`
	NavMap           []configs.NavTarget           `json:"nav_map"`
	Triggers         []configs.TriggerRule         `json:"triggers"`
	MaxMessageChars  int                           `json:"max_message_chars"`
}

func (s *Server) publicWidget(wc configs.WidgetConfig) publicWidget {
	modes := []string{}
	if wc.AllowsChat() {
		modes = append(modes, "chat")
	}
	transport := ""
	if s.voiceAvailable(wc) {
		modes = append(modes, "voice")
		transport = wc.VoiceTransport
	}
	return publicWidget{ID: wc.ID, DisplayTitle: wc.DisplayTitle, LauncherLabel: wc.LauncherLabel,
		WelcomeText: wc.WelcomeText, Mode: wc.Mode, Modes: modes, VoiceTransport: transport, Theme: wc.Theme,
		LauncherPosition: wc.LauncherPosition, Colors: wc.Colors, Translations: wc.Translations,
		IdentityPolicy: wc.IdentityPolicy, NavMap: wc.NavMap, Triggers: wc.Triggers,
		MaxMessageChars: s.cfg.Chat.MaxMessageChars}
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
// session challenge bound to the widget, the Origin and the client IP.
func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request) error {
	var req resolveRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	wc, origin, err := s.widgetFor(r, req.WidgetKey)
	if err != nil {
		return err
	}
	if err := s.limit(w, r, limitResolve, wc.ID); err != nil {
		return err
	}
	now := time.Now()
	writeJSON(w, http.StatusOK, resolveResponse{
		Widget:             s.publicWidget(wc),
		Challenge:          s.challenger.mint(wc.ID, origin, s.ips.of(r).String(), now),
		ChallengeExpiresAt: now.Add(s.cfg.Sessions.ChallengeTTL).UTC().Truncate(time.Second),
	})
	return nil
}
