package signaling

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

type createSessionRequest struct {
	WidgetKey   string `json:"widget_key"`
	Challenge   string `json:"challenge"`
	Token       string `json:"token"` // bootstrap token from POST /v1/tokens, instead of key + challenge
	Mode        string `json:"mode"`
	Language    string `json:"language"`
	ResumeToken string `json:"resume_token"`
	// ResumeIdentity asks to continue the verified visitor's latest
	// conversation, when the widget's identity_resume policy allows it.
	ResumeIdentity bool `json:"resume_identity"`
	// Visitor identity, one style at a time.
	VisitorToken string `json:"visitor_token"` // HS256 JWT signed with the widget's identity secret
	UserID       string `json:"user_id"`       // with user_hash = hex HMAC-SHA256(user_id)
	UserHash     string `json:"user_hash"`
	UserToken    string `json:"user_token"` // from POST /v1/user-tokens
}

type createSessionResponse struct {
	SessionID      string         `json:"session_id"`
	ConversationID string         `json:"conversation_id"`
	SessionToken   string         `json:"session_token"`
	ResumeToken    string         `json:"resume_token"`
	ExpiresAt      time.Time      `json:"expires_at"`
	Mode           string         `json:"mode"`
	Resumed        bool           `json:"resumed"`
	VisitorClaims  *VisitorClaims `json:"visitor_claims"`
	WebSocketPath  string         `json:"websocket_path"`
	VoicePath      string         `json:"voice_path,omitempty"`
	ICEServers     []iceServer    `json:"ice_servers"`
}

// serveCreateSession: POST /v1/sessions. The caller proves it came through
// resolve (widget key + the challenge, bound to widget, origin and client
// IP, single use) or through the site's own server (a bootstrap token);
// a resume_token re-attaches to its conversation; identity is verified
// here and never taken from the browser as is.
func (s *Server) serveCreateSession(w http.ResponseWriter, r *http.Request) error {
	var req createSessionRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	now := time.Now()
	var (
		wc     configs.WidgetConfig
		origin string
		nonce  string
		boot   *VisitorClaims
		err    error
		ip     = s.ips.of(r)
	)
	if req.Token != "" {
		var widgetID, bootOrigin string
		widgetID, bootOrigin, nonce, boot, err = s.tokens.verifyBootstrapToken(req.Token, now)
		if err == nil {
			wc, err = s.liveWidgetByID(widgetID)
		}
		if err == nil {
			origin, err = checkOrigin(wc, r.Header.Get("Origin"))
		}
		if err == nil && bootOrigin != "" && canonicalOrigin(bootOrigin) != canonicalOrigin(origin) {
			err = fmt.Errorf("%w: issued for another origin", ErrBootstrapTokenInvalid)
		}
	} else {
		wc, origin, err = s.widgetFor(r, req.WidgetKey)
		if err == nil {
			nonce, err = s.challenger.verify(req.Challenge, wc.ID, origin, ip.String(), now)
		}
	}
	if err != nil {
		return err
	}
	if err := s.limit(w, r, limitSessions, wc.ID); err != nil {
		return err
	}
	switch req.Mode {
	case "", agentbridge.ModeChat, agentbridge.ModeVoice:
		// A session is in voice once its voice leg is up (POST webrtc).
		req.Mode = agentbridge.ModeChat
	default:
		return fmt.Errorf("%w: mode must be %q or %q", broker.ErrValidation, agentbridge.ModeChat, agentbridge.ModeVoice)
	}
	if len(req.Language) > 35 || !validLanguage(req.Language) {
		return fmt.Errorf("%w: language must be a BCP 47 tag such as \"en\" or \"pt-BR\"", broker.ErrValidation)
	}
	claims, err := s.visitorIdentity(wc, req, boot, now)
	if err != nil {
		return err
	}
	if err := s.sessions.UseNonce(ctx, nonce); err != nil {
		if errors.Is(err, broker.ErrNonceUsed) {
			err = fmt.Errorf("%w: already used; get a new one", ErrChallengeInvalid)
			if req.Token != "" {
				err = fmt.Errorf("%w: already used", ErrBootstrapTokenInvalid)
			}
		}
		return err
	}
	if req.ResumeIdentity && req.ResumeToken == "" { // a resume token wins
		if err := identityMayResume(wc, claims); err != nil {
			return err
		}
	}
	var visitor map[string]any
	if claims != nil {
		visitor = claims.Map()
	}
	res, err := s.sessions.StartSession(ctx, broker.StartRequest{
		Widget: wc.ID, Agent: wc.Agent, Origin: origin, Mode: req.Mode,
		Language: req.Language, ResumeToken: req.ResumeToken, Visitor: visitor,
		ResumeIdentity: req.ResumeIdentity,
	})
	if err != nil {
		return err
	}
	sess := res.Session
	writeJSON(w, http.StatusCreated, createSessionResponse{
		SessionID: sess.ID, ConversationID: sess.ConversationID,
		SessionToken: res.SessionToken, ResumeToken: res.ResumeToken,
		ExpiresAt: sess.ExpiresAt.Truncate(time.Second), Mode: sess.Mode, Resumed: res.Resumed,
		VisitorClaims: claims,
		WebSocketPath: "/v1/sessions/" + sess.ID + "/ws",
		VoicePath:     s.voicePath(wc, sess.ID),
		ICEServers:    s.iceServers(sess.ID, now),
	})
	return nil
}

// visitorIdentity verifies the identity a session request carries, if
// any, against the widget's policy: identified widgets refuse guests.
func (s *Server) visitorIdentity(wc configs.WidgetConfig, req createSessionRequest, boot *VisitorClaims, now time.Time) (*VisitorClaims, error) {
	var (
		c   VisitorClaims
		err error
	)
	styles := 0
	for _, set := range []bool{req.VisitorToken != "", req.UserID != "" || req.UserHash != "", req.UserToken != "", boot != nil} {
		if set {
			styles++
		}
	}
	if styles > 1 {
		return nil, fmt.Errorf("%w: send one identity: visitor_token, user_id + user_hash, user_token or a bootstrap token with a visitor", broker.ErrValidation)
	}
	if wc.IdentityPolicy == "guest" {
		return nil, nil // guests only: identities are not used
	}
	secret := []byte(wc.IdentitySecret)
	switch {
	case boot != nil:
		c = *boot
	case req.VisitorToken != "":
		if len(secret) == 0 {
			return nil, fmt.Errorf("%w: this widget has no identity secret", ErrInvalidVisitorToken)
		}
		c, err = verifyVisitorJWT(req.VisitorToken, secret, now, s.cfg.Security.ClockSkew)
	case req.UserID != "" || req.UserHash != "":
		if len(secret) == 0 {
			return nil, fmt.Errorf("%w: this widget has no identity secret", ErrInvalidVisitorToken)
		}
		c, err = verifyUserHash(req.UserID, req.UserHash, secret)
	case req.UserToken != "":
		c, err = s.tokens.verifyUserToken(req.UserToken, wc.ID, now)
	default:
		if wc.IdentityPolicy == "identified" {
			return nil, ErrGuestNotAllowed
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// identityMayResume checks a resume_identity request against the widget's
// identity_resume policy. Only identities that expire resume by default: a
// user_hash never changes, so whoever once saw one could otherwise read
// that user's history for ever.
func identityMayResume(wc configs.WidgetConfig, c *VisitorClaims) error {
	if c == nil {
		return fmt.Errorf("%w: resume_identity needs a verified identity (visitor_token, user_id + user_hash, user_token or a bootstrap token with a visitor)", broker.ErrValidation)
	}
	switch wc.IdentityResume {
	case configs.IdentityResumeAny:
		return nil
	case configs.IdentityResumeExpiring:
		if c.Method != methodUserHash {
			return nil
		}
		return fmt.Errorf("%w: a user_hash never expires, so it resumes only where identity_resume is \"any\"", ErrIdentityResumeRefused)
	default:
		return fmt.Errorf("%w: identity_resume is %q", ErrIdentityResumeRefused, wc.IdentityResume)
	}
}

// liveWidgetByID returns a live widget by id.
func (s *Server) liveWidgetByID(id string) (configs.WidgetConfig, error) {
	rec, err := s.widgets.WidgetByID(id)
	if err != nil {
		return configs.WidgetConfig{}, ErrUnknownWidget
	}
	if !rec.IsLive() {
		return rec.WidgetConfig, ErrWidgetNotLive
	}
	return rec.WidgetConfig, nil
}

// validLanguage reports whether s is empty or looks like a BCP 47 tag.
func validLanguage(s string) bool {
	if s == "" {
		return true
	}
	for i, part := range strings.Split(s, "-") {
		if len(part) < 1 || len(part) > 8 || (i == 0 && len(part) < 2) {
			return false
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

// voicePath is where a session starts voice ("" without voice): its WHIP
// endpoint, or, for a livekit widget, its LiveKit token endpoint.
func (s *Server) voicePath(wc configs.WidgetConfig, sessionID string) string {
	if !s.voiceAvailable(wc) {
		return ""
	}
	if wc.VoiceTransport == transportLiveKit {
		return "/v1/sessions/" + sessionID + "/livekit-token"
	}
	return "/v1/sessions/" + sessionID + "/webrtc"
}

// voiceAvailable reports whether this server can carry wc's voice: the
// widget allows voice, the server runs media, and, for a livekit widget,
// LiveKit is configured.
func (s *Server) voiceAvailable(wc configs.WidgetConfig) bool {
	if s.engine == nil || !wc.AllowsVoice() {
		return false
	}
	return wc.VoiceTransport != transportLiveKit || s.livekit != nil
}

// session is the gate of the session API: h runs with the session of the
// path, once the Bearer session token is checked (authSession).
func (s *Server) session(h func(w http.ResponseWriter, r *http.Request, sess broker.Session) error) http.HandlerFunc {
	return gate(func(r *http.Request) (broker.Session, error) { return s.authSession(r, bearer(r)) }, h)
}

// authSession authenticates a session-token request: the session exists,
// the token matches, and an Origin, when sent, is allowed for its widget.
func (s *Server) authSession(r *http.Request, token string) (broker.Session, error) {
	id := r.PathValue("id")
	if token == "" {
		// Do not reveal whether the session exists without a token.
		return broker.Session{}, ErrSessionTokenInvalid
	}
	sess, err := s.sessions.Authenticate(r.Context(), id, token)
	if err != nil {
		return sess, err
	}
	wc, err := s.widgets.WidgetByID(sess.Widget)
	if errors.Is(err, broker.ErrUnknownWidget) {
		// Deleted stays deleted: nothing of a deleted widget's sessions
		// (history, uploads, voice) is reachable, Origin or not.
		return sess, fmt.Errorf("%w: its widget was deleted", broker.ErrSessionEnded)
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if err != nil || !widgetAllows(wc.WidgetConfig, origin) {
			s.refusals.refused(time.Now(), origin, sess.Widget, r.Pattern)
			return sess, fmt.Errorf("%w: %s", ErrOriginNotAllowed, origin)
		}
	}
	return sess, nil
}

// serveEndSession: DELETE /v1/sessions/{id} ends the session; the
// conversation stays and can be resumed with the resume token.
func (s *Server) serveEndSession(w http.ResponseWriter, r *http.Request) error {
	sess, err := s.authSession(r, bearer(r))
	if err != nil && !errors.Is(err, broker.ErrSessionEnded) {
		return err
	}
	if err == nil {
		if err := s.sessions.EndSession(r.Context(), sess.ID, "visitor_ended"); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type historyResponse struct {
	ConversationID string           `json:"conversation_id"`
	Messages       []broker.Message `json:"messages"`
	// Calls are the starts and ends of voice calls among the messages
	// (from the first message's seq on), for the transcript's markers.
	Calls []callMark `json:"calls"`
}

// Bounds of GET history's message_limit.
const (
	defaultHistoryLimit = 50
	maxHistoryLimit     = 500
)

// serveHistory: GET /v1/sessions/{id}/history?message_limit=N, oldest first.
func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	limit := defaultHistoryLimit
	if v := r.URL.Query().Get("message_limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxHistoryLimit {
			return fmt.Errorf("%w: message_limit must be an integer from 1 to %d", broker.ErrValidation, maxHistoryLimit)
		}
		limit = n
	}
	// One read of the log for the messages (as History makes them) and
	// the call marks between them.
	events, err := s.convs.ReadLog(r.Context(), sess.ConversationID, 0)
	if err != nil {
		return err
	}
	msgs := broker.Transcript(events)
	if len(msgs) > limit {
		msgs = msgs[len(msgs)-limit:]
	}
	if msgs == nil {
		msgs = []broker.Message{}
	}
	calls := callMarks(events)
	if len(msgs) > 0 && len(msgs) == limit {
		first := msgs[0].Seq
		calls = slices.DeleteFunc(calls, func(c callMark) bool { return c.Seq < first })
	}
	writeJSON(w, http.StatusOK, historyResponse{ConversationID: sess.ConversationID, Messages: msgs, Calls: calls})
	return nil
}
