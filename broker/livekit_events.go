package broker

import (
	"context"
	"errors"

	"github.com/parley-rtc/parley/agentbridge"
)

// TransportEvent records a voice transport's state change that was
// reported from outside the media path — a LiveKit webhook saying the
// visitor joined or left the room, or that the room finished — as a
// media_state event in the conversation's log, where the visitor's
// WebSocket, the agent and the rooms view see it like the media path's
// own. sessionID may be empty (room-wide events) or name a session of the
// conversation; the event carries that session's live voice leg id, if
// any. dedup, when set, is the event's Nats-Msg-Id: a webhook LiveKit
// retries is recorded once. It returns the event's log position.
func (b *Broker) TransportEvent(ctx context.Context, cid, sessionID, state, reason, dedup string) (uint64, error) {
	if _, err := b.Conversation(ctx, cid); err != nil {
		return 0, err
	}
	if sessionID != "" {
		s, err := b.Session(ctx, sessionID)
		switch {
		case errors.Is(err, ErrUnknownSession):
			sessionID = "" // not ours: keep the event, drop the claim
		case err != nil:
			return 0, err
		case s.ConversationID != cid:
			sessionID = ""
		}
	}
	ev := agentbridge.Event{Type: agentbridge.EventMediaState, ConversationID: cid, SessionID: sessionID,
		State: state, Reason: reason}
	if v, ok := b.Voice(sessionID); ok && sessionID != "" {
		ev.LegID = v.ID()
	}
	seq, err := b.appendInbound(ctx, ev, dedup, "")
	if err != nil {
		return 0, err
	}
	b.log.Info("transport event", "conversation_id", cid, "session_id", sessionID, "state", state, "reason", reason)
	return seq, nil
}
