package signaling

import (
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// callMark is a start or end of a voice call in a conversation, as the
// widget shows it in the transcript ("Call started 14:02", "Call ended
// (2 min)"). It is derived from the log, not stored: a call starts at a
// mode_changed to voice and ends at the next mode_changed of that session
// back to chat, or at its session_ended.
type callMark struct {
	Type       string    `json:"type"` // "call_started" or "call_ended"
	Seq        uint64    `json:"seq"`  // the log position of the event it comes from
	At         time.Time `json:"at"`
	DurationMS int64     `json:"duration_ms,omitempty"` // call_ended: since its call_started
}

// callMarks lists the call marks of a conversation's events, in log order.
func callMarks(events []agentbridge.Event) []callMark {
	out := []callMark{}
	started := map[string]time.Time{} // session id → start of its open call
	for _, ev := range events {
		switch {
		case ev.Type == agentbridge.EventModeChanged && ev.Mode == agentbridge.ModeVoice:
			if _, open := started[ev.SessionID]; open {
				continue
			}
			started[ev.SessionID] = ev.TS
			out = append(out, callMark{Type: "call_started", Seq: ev.Seq, At: ev.TS})
		case ev.Type == agentbridge.EventModeChanged && ev.Mode == agentbridge.ModeChat,
			ev.Type == agentbridge.EventSessionEnded:
			at, open := started[ev.SessionID]
			if !open {
				continue
			}
			delete(started, ev.SessionID)
			out = append(out, callMark{Type: "call_ended", Seq: ev.Seq, At: ev.TS, DurationMS: ev.TS.Sub(at).Milliseconds()})
		}
	}
	return out
}
