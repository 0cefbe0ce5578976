package signaling

import (
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// callMarks: a call starts at a mode_changed to voice and ends at its
// session's next mode_changed to chat or session_ended; another session's
// events, a repeated voice and a chat without a call mark nothing.
func TestCallMarks(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 14, 2, 0, 0, time.UTC)
	ev := func(seq uint64, sec int, typ, sess, mode string) agentbridge.Event {
		return agentbridge.Event{Type: typ, Seq: seq, TS: t0.Add(time.Duration(sec) * time.Second), SessionID: sess, Mode: mode}
	}
	mc, se, um := agentbridge.EventModeChanged, agentbridge.EventSessionEnded, agentbridge.EventUserMessage
	events := []agentbridge.Event{
		ev(1, 0, um, "a", ""),
		ev(2, 1, mc, "a", "chat"),   // no call open: nothing
		ev(3, 2, mc, "a", "voice"),  // call 1 starts
		ev(4, 3, mc, "a", "voice"),  // already on: nothing
		ev(5, 4, mc, "b", "voice"),  // another session's call starts
		ev(6, 122, mc, "a", "chat"), // call 1 ends after 2 min
		ev(7, 130, se, "b", ""),     // call 2 ends with its session
		ev(8, 140, mc, "a", "voice"),
	}
	got := callMarks(events)
	want := []callMark{
		{Type: "call_started", Seq: 3, At: t0.Add(2 * time.Second)},
		{Type: "call_started", Seq: 5, At: t0.Add(4 * time.Second)},
		{Type: "call_ended", Seq: 6, At: t0.Add(122 * time.Second), DurationMS: 120000},
		{Type: "call_ended", Seq: 7, At: t0.Add(130 * time.Second), DurationMS: 126000},
		{Type: "call_started", Seq: 8, At: t0.Add(140 * time.Second)},
	}
	if len(got) != len(want) {
		t.Fatalf("marks %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("mark %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if n := len(callMarks(nil)); n != 0 {
		t.Fatalf("%d marks of no events", n)
	}
}
