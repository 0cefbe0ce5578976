package broker

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// TestConversationTranscript folds a log with every kind of line: a reply
// streamed in many deltas is one turn (with all its events), a call starts
// and ends, a voice turn, a spoken reply cut by a barge-in (the words
// heard, the text written), a hand-over to another worker, an agent's
// handoff request, and a reply still streaming. The visitor's history
// (Transcript) is the finished turns of the same folding.
func TestConversationTranscript(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var log []agentbridge.Event
	add := func(ev agentbridge.Event) uint64 {
		ev.Seq = uint64(len(log) + 1)
		ev.TS = t0.Add(time.Duration(ev.Seq) * time.Second)
		log = append(log, ev)
		return ev.Seq
	}
	heard := "Our opening"
	heardMS := int64(640)
	add(agentbridge.Event{Type: agentbridge.EventSessionStarted, SessionID: "ses_1", Mode: "chat"})
	add(agentbridge.Event{Type: agentbridge.EventUserMessage, MessageID: "msg_v1", Text: "hello", Via: "chat", SessionID: "ses_1"})
	var deltas []uint64
	words := strings.Fields("hello there, how can I help you today?")
	for i, w := range words {
		deltas = append(deltas, add(agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: "msg_a1", ReplyTo: "msg_v1",
			Index: i, Text: w + " ", WorkerID: "wrk_a", Epoch: 1}))
	}
	add(agentbridge.Event{Type: agentbridge.EventAgentState, State: "idle", WorkerID: "wrk_a", Epoch: 1})
	done1 := add(agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "msg_a1", ReplyTo: "msg_v1",
		Text: "hello there, how can I help you today?", WorkerID: "wrk_a", Epoch: 1})
	add(agentbridge.Event{Type: agentbridge.EventModeChanged, SessionID: "ses_1", Mode: "voice", PreviousMode: "chat", Reason: "voice_leg"})
	add(agentbridge.Event{Type: agentbridge.EventTranscript, MessageID: "msg_v2", Text: "when are you", Via: "voice", WorkerID: "wrk_a", Epoch: 1})
	add(agentbridge.Event{Type: agentbridge.EventTranscript, MessageID: "msg_v2", Text: "when are you open", Final: true, Via: "voice", WorkerID: "wrk_a", Epoch: 1})
	add(agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: "msg_a2", ReplyTo: "msg_v2", Text: "Our opening hours are ", WorkerID: "wrk_a", Epoch: 1})
	add(agentbridge.Event{Type: agentbridge.EventInterrupt, MessageID: "msg_a2", Reason: agentbridge.ReasonBargeIn, HeardMS: &heardMS, HeardText: &heard, SessionID: "ses_1"})
	add(agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "msg_a2", ReplyTo: "msg_v2", Text: "Our opening hours are nine to five.", WorkerID: "wrk_a", Epoch: 1})
	add(agentbridge.Event{Type: agentbridge.EventAgentAssigned, WorkerID: "wrk_b", Epoch: 2})
	// A late delta of the worker that lost the conversation is fenced off.
	add(agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: "msg_stale", Text: "stale", WorkerID: "wrk_a", Epoch: 1})
	add(agentbridge.Event{Type: agentbridge.EventAction, Action: agentbridge.ActionHandoff, Data: json.RawMessage(`{"queue":"sales"}`), WorkerID: "wrk_b", Epoch: 2})
	add(agentbridge.Event{Type: agentbridge.EventModeChanged, SessionID: "ses_1", Mode: "chat", PreviousMode: "voice", Reason: "visitor_hangup"})
	add(agentbridge.Event{Type: agentbridge.EventUserMessage, MessageID: "msg_v3", Text: "thanks", Via: "chat", SessionID: "ses_1"})
	streamingFrom := add(agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: "msg_a3", ReplyTo: "msg_v3", Text: "You are ", WorkerID: "wrk_b", Epoch: 2})
	add(agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: "msg_a3", ReplyTo: "msg_v3", Index: 1, Text: "welcome", WorkerID: "wrk_b", Epoch: 2})

	got := ConversationTranscript(log, "sales-bot")
	var lines []string
	for _, e := range got {
		line := e.Kind
		if e.Turn != nil {
			line += fmt.Sprintf(" %s/%s %q", e.Turn.Role, e.Turn.Via, e.Turn.Body)
			if e.Turn.Interrupted {
				line += fmt.Sprintf(" interrupted, written %q", e.Turn.Written)
			}
			if e.InProgress {
				line += " in progress"
			}
			if e.Turn.Role == RoleAgent {
				line += " by " + e.Agent + " " + e.WorkerID
			}
		}
		switch e.Kind {
		case EntryCallStarted, EntryCallEnded:
			line += " " + e.Reason
		case EntryInterrupt:
			line += fmt.Sprintf(" %s %dms %q", e.MessageID, *e.HeardMS, *e.HeardText)
		case EntryHandOver:
			line += " " + e.PreviousWorkerID + " → " + e.WorkerID
		case EntryHandoff:
			line += " " + string(e.Data)
		}
		lines = append(lines, line)
	}
	want := []string{
		`visitor_joined`,
		`turn visitor/chat "hello"`,
		`turn agent/chat "hello there, how can I help you today?" by sales-bot wrk_a`,
		`call_started voice_leg`,
		`turn visitor/voice "when are you open"`,
		`interrupt msg_a2 640ms "Our opening"`,
		`turn agent/voice "Our opening" interrupted, written "Our opening hours are nine to five." by sales-bot wrk_a`,
		`hand_over wrk_a → wrk_b`,
		`handoff {"queue":"sales"}`,
		`call_ended visitor_hangup`,
		`turn visitor/chat "thanks"`,
		`turn agent/chat "You are welcome" in progress by sales-bot wrk_b`,
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("transcript:\n  %s\nwant:\n  %s", strings.Join(lines, "\n  "), strings.Join(want, "\n  "))
	}
	if reply := got[2]; !slices.Equal(reply.Events, append(slices.Clone(deltas), done1)) || reply.Seq != done1 {
		t.Fatalf("the streamed reply's events %v seq %d, want %v and %d", reply.Events, reply.Seq, append(deltas, done1), done1)
	}
	if last := got[len(got)-1]; last.Seq != streamingFrom || len(last.Events) != 2 {
		t.Fatalf("the reply in progress: seq %d events %v, want from %d with 2 events", last.Seq, last.Events, streamingFrom)
	}

	// The visitor's history: the finished turns, nothing else.
	var history []string
	for _, m := range Transcript(log) {
		history = append(history, m.Role+": "+m.Body)
	}
	if want := []string{"visitor: hello", "agent: hello there, how can I help you today?", "visitor: when are you open",
		"agent: Our opening", "visitor: thanks"}; !slices.Equal(history, want) {
		t.Fatalf("history %q, want %q", history, want)
	}
}
