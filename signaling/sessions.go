package signaling

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
)

type createSessionRequest struct {
	WidgetKey   string `json:"widget_key"`
	Challenge   string `json:"challenge"`
	Mode        string `json:"mode"`
	Language    string `json:"language"`
	ResumeToken string `json:"resume_token"`
}

type createSessionResponse struct {
	SessionID      string      `json:"session_id"`
	ConversationID string      `json:"conversation_id"`
	SessionToken   string      `json:"session_token"`
	ResumeToken    string      `json:"resume_token"`
	ExpiresAt      time.Time   `json:"expires_at"`
	Mode           string      `json:"mode"`
	Resumed        bool        `json:"resumed"`
	WebSocketPath  string      `json:"websocket_path"`
	VoicePath      string      `json:"voice_path,omitempty"`
	ICEServers     []iceServer `json:"ice_servers"`
}

// serveCreateSession: POST /v1/sessions. The challenge from resolve is
// checked and consumed; a resume_token re-attaches to its conversation.
func (s *Server) serveCreateSession(w http.ResponseWriter, r *http.Request) {
	var req createSessionRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	wc, origin, err := s.widgetFor(r, req.WidgetKey)
	if err != nil {
		writeError(w, err)
		return
	}
	switch req.Mode {
	case "", agentbridge.ModeChat:
		req.Mode = agentbridge.ModeChat
	case agentbridge.ModeVoice:
		// The session is in voice once its voice leg is up (POST webrtc);
		// until then it chats.
		req.Mode = agentbridge.ModeChat
	default:
		writeError(w, fmt.Errorf("%w: mode must be %q or %q", broker.ErrValidation, agentbridge.ModeChat, agentbridge.ModeVoice))
		return
	}
	if len(req.Language) > 35 {
		writeError(w, fmt.Errorf("%w: language must be a BCP 47 tag", broker.ErrValidation))
		return
	}
	nonce, err := s.challenger.verify(req.Challenge, wc.Key, origin, time.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.b.UseNonce(r.Context(), nonce); err != nil {
		if errors.Is(err, broker.ErrNonceUsed) {
			err = fmt.Errorf("%w: already used; resolve again for a new one", ErrChallengeInvalid)
		}
		writeError(w, err)
		return
	}
	res, err := s.b.StartSession(r.Context(), broker.StartRequest{
		Widget: wc.Key, Agent: wc.Agent, Origin: origin, Mode: req.Mode,
		Language: req.Language, ResumeToken: req.ResumeToken,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	sess := res.Session
	writeJSON(w, http.StatusCreated, createSessionResponse{
		SessionID: sess.ID, ConversationID: sess.ConversationID,
		SessionToken: res.SessionToken, ResumeToken: res.ResumeToken,
		ExpiresAt: sess.ExpiresAt.Truncate(time.Second), Mode: sess.Mode, Resumed: res.Resumed,
		WebSocketPath: "/v1/sessions/" + sess.ID + "/ws",
		VoicePath:     s.voicePath(sess.ID),
		ICEServers:    s.iceServers(sess.ID, time.Now()),
	})
}

// voicePath is where a session posts its voice offer ("" without voice).
func (s *Server) voicePath(sessionID string) string {
	if s.engine == nil {
		return ""
	}
	return "/v1/sessions/" + sessionID + "/webrtc"
}

// authSession authenticates a session-token request: the session exists,
// the token matches, and an Origin, when sent, is allowed for its widget.
func (s *Server) authSession(r *http.Request, token string) (broker.Session, error) {
	id := r.PathValue("id")
	if token == "" {
		// Do not reveal whether the session exists without a token.
		return broker.Session{}, ErrSessionTokenInvalid
	}
	sess, err := s.b.Authenticate(r.Context(), id, token)
	if err != nil {
		return sess, err
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		wc, ok := s.cfg.Widget(sess.Widget)
		if !ok || !widgetAllows(wc, origin) {
			return sess, fmt.Errorf("%w: %s", ErrOriginNotAllowed, origin)
		}
	}
	return sess, nil
}

// serveEndSession: DELETE /v1/sessions/{id} ends the session; the
// conversation stays and can be resumed with the resume token.
func (s *Server) serveEndSession(w http.ResponseWriter, r *http.Request) {
	sess, err := s.authSession(r, bearer(r))
	if err != nil && !errors.Is(err, broker.ErrSessionEnded) {
		writeError(w, err)
		return
	}
	if err == nil {
		if err := s.b.EndSession(r.Context(), sess.ID, "visitor_ended"); err != nil {
			writeError(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

type historyResponse struct {
	ConversationID string           `json:"conversation_id"`
	Messages       []broker.Message `json:"messages"`
}

// Bounds of GET history's message_limit.
const (
	defaultHistoryLimit = 50
	maxHistoryLimit     = 500
)

// serveHistory: GET /v1/sessions/{id}/history?message_limit=N, oldest first.
func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request) {
	sess, err := s.authSession(r, bearer(r))
	if err != nil {
		writeError(w, err)
		return
	}
	limit := defaultHistoryLimit
	if v := r.URL.Query().Get("message_limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxHistoryLimit {
			writeError(w, fmt.Errorf("%w: message_limit must be an integer from 1 to %d", broker.ErrValidation, maxHistoryLimit))
			return
		}
		limit = n
	}
	msgs, err := s.b.History(r.Context(), sess.ConversationID, limit)
	if err != nil {
		writeError(w, err)
		return
	}
	if msgs == nil {
		msgs = []broker.Message{}
	}
	writeJSON(w, http.StatusOK, historyResponse{ConversationID: sess.ConversationID, Messages: msgs})
}
