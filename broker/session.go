package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// Session is one visitor attachment to a conversation (a page load). Only
// the hash of its token is stored.
type Session struct {
	ID             string         `json:"id"`
	ConversationID string         `json:"conversation_id"`
	Widget         string         `json:"widget"`
	Agent          string         `json:"agent"`
	Origin         string         `json:"origin"`
	Mode           string         `json:"mode"`
	Language       string         `json:"language,omitempty"`
	Visitor        map[string]any `json:"visitor,omitempty"`
	TokenHash      string         `json:"token_hash"`
	CreatedAt      time.Time      `json:"created_at"`
	ExpiresAt      time.Time      `json:"expires_at"`
	EndedAt        *time.Time     `json:"ended_at,omitempty"`
	EndReason      string         `json:"end_reason,omitempty"`
}

// StartRequest asks for a new session, on a new conversation or, with a
// resume token, on the conversation the token belongs to (or, asked
// explicitly, on the identified visitor's latest one).
type StartRequest struct {
	Widget      string
	Agent       string
	Origin      string
	Mode        string
	Language    string
	Visitor     map[string]any
	ResumeToken string
	// ResumeIdentity continues the verified Visitor's latest open
	// conversation on the widget, if there is one (the caller checked
	// that the widget's policy lets this identity do so); without one the
	// session starts a new conversation. A ResumeToken wins over it.
	ResumeIdentity bool
}

// StartResult is a started session with its secrets, which are returned
// exactly once.
type StartResult struct {
	Session      Session
	SessionToken string
	ResumeToken  string
	Resumed      bool
}

// resumeRecord is stored under the hash of a resume token.
type resumeRecord struct {
	ConversationID string    `json:"conversation_id"`
	Widget         string    `json:"widget"`
	ExpiresAt      time.Time `json:"expires_at"`
}

// StartSession creates a session (and its conversation unless resuming)
// and writes session_started to the log. A new conversation is dispatched
// on the visitor's first message or call, not here: a session that sends
// nothing holds no worker slot. A resumed one that was dispatched before
// is dispatched again at once, so its worker answers what is unanswered.
func (b *Broker) StartSession(ctx context.Context, req StartRequest) (StartResult, error) {
	if !b.ready.Load() {
		return StartResult{}, ErrNotReady
	}
	switch req.Mode {
	case "":
		req.Mode = agentbridge.ModeChat
	case agentbridge.ModeChat, agentbridge.ModeVoice:
	default:
		return StartResult{}, fmt.Errorf("%w: mode must be chat or voice", ErrValidation)
	}
	if !agentbridge.ValidToken(req.Agent) {
		return StartResult{}, fmt.Errorf("%w: agent name", ErrValidation)
	}
	now := time.Now().UTC()
	var (
		conv    Conversation
		resumed bool
		err     error
	)
	switch {
	case req.ResumeToken != "":
		// A resume token means that token: one that is unknown, expired or
		// of a closed conversation is refused, whoever the visitor proves
		// to be (resuming by identity is its own, explicit request).
		if conv, err = b.redeemResume(ctx, req.ResumeToken, req.Widget, now); err != nil {
			return StartResult{}, err
		}
		resumed = true
	case req.ResumeIdentity:
		conv, resumed = b.identifiedConversation(ctx, req.Widget, req.Visitor)
	}
	res := StartResult{SessionToken: newSecret(32), ResumeToken: newSecret(32), Resumed: resumed}
	s := Session{
		ID: newID("ses_"), Widget: req.Widget, Agent: req.Agent, Origin: req.Origin,
		Mode: req.Mode, Language: req.Language, Visitor: req.Visitor,
		TokenHash: hashHex(res.SessionToken), CreatedAt: now, ExpiresAt: now.Add(b.cfg.Sessions.TTL),
	}
	if resumed {
		s.ConversationID = conv.ID
		conv, err = b.updateConversation(ctx, conv.ID, func(c *Conversation) error {
			c.ActiveSessions++
			c.Mode = req.Mode
			c.SessionID, c.Language, c.Visitor = s.ID, s.Language, s.Visitor
			return nil
		})
		if err != nil {
			return StartResult{}, err
		}
	} else {
		conv = Conversation{ID: newID("conv_"), Widget: req.Widget, Agent: req.Agent,
			Mode: req.Mode, CreatedAt: now, ActiveSessions: 1,
			SessionID: s.ID, Language: s.Language, Visitor: s.Visitor}
		s.ConversationID = conv.ID
		if err := b.putNew(ctx, b.conversations, conv.ID, conv); err != nil {
			return StartResult{}, err
		}
	}
	if err := b.putNew(ctx, b.sessions, s.ID, s); err != nil {
		return StartResult{}, err
	}
	rr := resumeRecord{ConversationID: conv.ID, Widget: req.Widget, ExpiresAt: now.Add(b.cfg.Sessions.ResumeWindow)}
	if err := b.putNew(ctx, b.resume, hashHex(res.ResumeToken), rr); err != nil {
		return StartResult{}, err
	}
	seq, err := b.appendInbound(ctx, agentbridge.Event{
		Type: agentbridge.EventSessionStarted, ConversationID: conv.ID, SessionID: s.ID,
		Mode: s.Mode, Language: s.Language, Widget: s.Widget, Visitor: s.Visitor,
	}, "", conv.Agent)
	if err != nil {
		return StartResult{}, err
	}
	if conv.FirstSeq == 0 {
		conv, err = b.updateConversation(ctx, conv.ID, func(c *Conversation) error {
			if c.FirstSeq == 0 {
				c.FirstSeq = seq
			}
			return nil
		})
		if err != nil {
			return StartResult{}, err
		}
	}
	if sub, _ := s.Visitor["sub"].(string); sub != "" {
		if _, err := b.resume.Put(ctx, visitorKey(s.Widget, sub), []byte(conv.ID)); err != nil {
			b.log.Warn("visitor index not stored", "conversation_id", conv.ID, "err", err)
		}
	}
	res.Session = s
	b.obs().SessionStarted(resumed)
	if resumed && (conv.EngagedAt != nil || conv.Epoch > 0 || b.dispatcher.busy(conv.ID)) {
		b.dispatcher.ensure(conv.ID, conv.Agent)
	}
	b.log.Info("session started", "session_id", s.ID, "conversation_id", conv.ID,
		"widget", s.Widget, "resumed", resumed)
	return res, nil
}

// redeemResume consumes a resume token (single use: a new one is issued
// with every session) and returns its conversation.
func (b *Broker) redeemResume(ctx context.Context, token, widget string, now time.Time) (Conversation, error) {
	key := hashHex(token)
	e, err := b.resume.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Conversation{}, ErrResumeInvalid
	}
	if err != nil {
		return Conversation{}, fmt.Errorf("%w: resume: %w", ErrStore, err)
	}
	var rr resumeRecord
	if err := json.Unmarshal(e.Value(), &rr); err != nil || rr.Widget != widget {
		return Conversation{}, ErrResumeInvalid
	}
	if now.After(rr.ExpiresAt) {
		return Conversation{}, ErrSessionExpired
	}
	// A closed conversation's token is refused, not consumed: every try
	// says closed (until the token expires) rather than, from the second
	// on, that it is unknown.
	conv, err := b.Conversation(ctx, rr.ConversationID)
	if err != nil {
		return Conversation{}, err
	}
	if conv.ClosedAt != nil {
		return Conversation{}, ErrConversationClosed
	}
	// Delete only the revision we read, so one token resumes once.
	if err := b.resume.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		return Conversation{}, ErrResumeInvalid
	}
	return conv, nil
}

// visitorKey indexes an identified visitor's latest conversation in the
// resume bucket (kept as long as resume records).
func visitorKey(widget, sub string) string { return "visitor." + widget + "." + hashHex(sub) }

// identifiedConversation finds the latest conversation of a verified
// visitor on a widget.
func (b *Broker) identifiedConversation(ctx context.Context, widget string, visitor map[string]any) (Conversation, bool) {
	sub, _ := visitor["sub"].(string)
	if sub == "" {
		return Conversation{}, false
	}
	e, err := b.resume.Get(ctx, visitorKey(widget, sub))
	if err != nil {
		return Conversation{}, false
	}
	conv, err := b.Conversation(ctx, string(e.Value()))
	return conv, err == nil && conv.ClosedAt == nil
}

// Authenticate checks a session token and returns the live session.
func (b *Broker) Authenticate(ctx context.Context, sessionID, token string) (Session, error) {
	s, err := b.Session(ctx, sessionID)
	if err != nil {
		return Session{}, err
	}
	if token == "" || !hashEqual(token, s.TokenHash) {
		return Session{}, ErrBadToken
	}
	if s.EndedAt != nil {
		return Session{}, ErrSessionEnded
	}
	if time.Now().After(s.ExpiresAt) {
		return Session{}, ErrSessionExpired
	}
	return s, nil
}

// Session loads a session by id.
func (b *Broker) Session(ctx context.Context, id string) (Session, error) {
	s, err := load[Session](ctx, b.sessions, id, "ses_", ErrUnknownSession)
	switch {
	case errors.Is(err, ErrUnknownSession) && validID(id, "ses_"):
		b.missInLostStore(bucketSessions, "session_id", id)
	case errors.Is(err, ErrStore) && ctx.Err() == nil:
		b.log.Error("store read failed", "store", "KV_"+b.subj.Bucket(bucketSessions), "session_id", id, "err", err)
	}
	return s, err
}

// EndSession ends a session; its conversation stays. Ending an ended session
// is not an error.
func (b *Broker) EndSession(ctx context.Context, id, reason string) error {
	_, err := b.endSession(ctx, id, reason)
	return err
}

// endSession ends a session and reports whether this call ended it. Ending
// is a compare-and-set of the session record, so when several callers
// (brokers sweeping, a visitor, an operator) end one session at once, one
// wins: only it counts the session out of its conversation and writes
// session_ended (with a Nats-Msg-Id, so a retried append is stored once).
func (b *Broker) endSession(ctx context.Context, id, reason string) (bool, error) {
	if !validID(id, "ses_") {
		return false, ErrUnknownSession
	}
	s, err := update(ctx, b.sessions, id, func(s *Session) error {
		if s.EndedAt != nil {
			return errNoChange
		}
		now := time.Now().UTC()
		s.EndedAt, s.EndReason = &now, reason
		return nil
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, ErrUnknownSession
	case errors.Is(err, errNoChange):
		return false, nil // already ended
	case err != nil:
		return false, err
	}
	b.rooms.leave(s.ConversationID, s.ID)
	// A conversation being deleted still counts its sessions out: the
	// record is updated directly, not through updateConversation.
	conv, err := update(ctx, b.conversations, s.ConversationID, func(c *Conversation) error {
		c.ActiveSessions = max(c.ActiveSessions-1, 0)
		return nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return true, nil // the conversation is gone: nothing to tell
	}
	if err != nil {
		return true, err
	}
	idle := conv.ActiveSessions == 0
	seq, err := b.appendInbound(ctx, agentbridge.Event{
		Type: agentbridge.EventSessionEnded, ConversationID: s.ConversationID, SessionID: s.ID,
		Reason: reason, Idle: idle,
	}, sessionEndedID(s.ConversationID, s.ID), conv.Agent)
	if err == nil && idle {
		// The worker releases the conversation on this event; the next
		// session must dispatch it again rather than trust a stale view.
		b.registry.release(s.ConversationID, seq)
	}
	b.log.Info("session ended", "session_id", s.ID, "conversation_id", s.ConversationID, "reason", reason)
	return true, err
}
