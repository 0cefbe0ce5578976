package signaling

import (
	"errors"
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
		if errors.Is(err, ErrOriginNotAllowed) {
			s.refusals.refused(time.Now(), r.Header.Get("Origin"), w.ID, r.Pattern)
			err = fmt.Errorf("%w: %s is not in the widget's allowed_origins", ErrOriginNotAllowed, r.Header.Get("Origin"))
		}
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
//
// A page on an origin that no widget allows gets its preflight answered
// too, and may read error responses only (errorsOnlyCORS): so the widget
// there can read ORIGIN_NOT_ALLOWED and say what is wrong, instead of a
// bare network failure. A success response is never exposed to such an
// origin, and no response carries Access-Control-Allow-Credentials
// (docs/SECURITY.md, "CORS").
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin != "" && !s.anyWidgetAllows(origin) {
			if _, ok := parseOrigin(origin); !ok {
				next.ServeHTTP(w, r) // "null" or garbage: no CORS at all
				return
			}
			w = &errorsOnlyCORS{ResponseWriter: w, preflight: r.Method == http.MethodOptions}
		}
		if origin != "" {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Post, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining")
			if r.Method == http.MethodOptions {
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, PATCH, OPTIONS")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// errorsOnlyCORS is the response writer of a request from an origin no
// widget allows: the CORS headers cors sets stay on a preflight and on an
// error response (status 400 or more: a coded error body, never widget or
// session data), and are taken off anything else, so the browser keeps
// such a response from the page.
type errorsOnlyCORS struct {
	http.ResponseWriter
	preflight bool
	wrote     bool
}

func (w *errorsOnlyCORS) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		if !w.preflight && code < http.StatusBadRequest {
			h := w.Header()
			h.Del("Access-Control-Allow-Origin")
			h.Del("Access-Control-Expose-Headers")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *errorsOnlyCORS) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *errorsOnlyCORS) Unwrap() http.ResponseWriter { return w.ResponseWriter }

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
	IdentityResume   string                        `json:"identity_resume"`
	NavMap           []configs.NavTarget           `json:"nav_map"`
	Triggers         []configs.TriggerRule         `json:"triggers"`
	MaxMessageChars  int                           `json:"max_message_chars"`
	Uploads          *publicUploads                `json:"uploads,omitempty"` // nil: the widget takes no attachments
}

// publicUploads is what POST …/uploads takes, so the widget can refuse a
// file before sending it (the server checks again, by the content).
type publicUploads struct {
	MaxBytes int64    `json:"max_bytes"`
	Types    []string `json:"types"`
}

// uploadTypes are the accepted upload types (uploadTypeAllowed), as an
// <input accept> list.
func uploadTypes() []string { return []string{"image/*", "application/pdf", "text/plain"} }

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
	var uploads *publicUploads
	if wc.AllowsUploads() {
		uploads = &publicUploads{MaxBytes: s.cfg.Limits.MaxUploadBytes, Types: uploadTypes()}
	}
	return publicWidget{Uploads: uploads, ID: wc.ID, DisplayTitle: wc.DisplayTitle, LauncherLabel: wc.LauncherLabel,
		WelcomeText: wc.WelcomeText, Mode: wc.Mode, Modes: modes, VoiceTransport: transport, Theme: wc.Theme,
		LauncherPosition: wc.LauncherPosition, Colors: wc.Colors, Translations: wc.Translations,
		IdentityPolicy: wc.IdentityPolicy, IdentityResume: wc.IdentityResume, NavMap: wc.NavMap, Triggers: wc.Triggers,
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
