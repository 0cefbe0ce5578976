package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/parley-rtc/parley/agentbridge"
)

// errNoChange aborts a record update that would change nothing.
var errNoChange = errors.New("no change")

// ModeChange describes the result of SetMode.
type ModeChange struct {
	Mode         string
	PreviousMode string
	Changed      bool
	Seq          uint64 // log position of mode_changed when Changed
}

// SetMode switches a session between chat and voice. A switch appends
// mode_changed to the conversation log; the conversation, its context and
// every event stay as they are. Switching to chat hangs up the session's
// voice leg. Setting the mode a session already has changes nothing.
func (b *Broker) SetMode(ctx context.Context, s Session, mode, reason string) (ModeChange, Session, error) {
	if mode != agentbridge.ModeChat && mode != agentbridge.ModeVoice {
		return ModeChange{}, s, fmt.Errorf("%w: mode must be %q or %q", ErrValidation, agentbridge.ModeChat, agentbridge.ModeVoice)
	}
	var prev string
	cur, err := update(ctx, b.sessions, s.ID, func(x *Session) error {
		if x.EndedAt != nil {
			return ErrSessionEnded
		}
		prev = x.Mode
		if x.Mode == mode {
			return errNoChange
		}
		x.Mode = mode
		return nil
	})
	switch {
	case errors.Is(err, errNoChange):
		return ModeChange{Mode: mode, PreviousMode: prev}, cur, nil
	case err != nil:
		return ModeChange{}, s, err
	}
	if _, err := b.updateConversation(ctx, s.ConversationID, func(c *Conversation) error {
		c.Mode = mode
		return nil
	}); err != nil {
		return ModeChange{}, cur, err
	}
	seq, err := b.appendInbound(ctx, agentbridge.Event{Type: agentbridge.EventModeChanged,
		ConversationID: s.ConversationID, SessionID: s.ID, Mode: mode, PreviousMode: prev, Reason: reason}, "", s.Agent)
	if err != nil {
		return ModeChange{}, cur, err
	}
	if mode == agentbridge.ModeChat {
		if v, ok := b.Voice(s.ID); ok {
			v.end(ctx, reason, false)
		}
	}
	b.obs().ModeChanged(mode)
	b.log.Info("mode changed", "session_id", s.ID, "conversation_id", s.ConversationID,
		"mode", mode, "previous_mode", prev, "reason", reason)
	b.dispatcher.ensure(s.ConversationID, s.Agent)
	return ModeChange{Mode: mode, PreviousMode: prev, Changed: true, Seq: seq}, cur, nil
}
