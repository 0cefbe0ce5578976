package agentbridge_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

func TestSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"dispatch", agentbridge.NewSubjects("").Dispatch("sales"), "parley.agents.sales.dispatch"},
		{"heartbeat", agentbridge.NewSubjects("").Heartbeat("sales"), "parley.agents.sales.heartbeat"},
		{"all heartbeats", agentbridge.NewSubjects("").AllHeartbeats(), "parley.agents.*.heartbeat"},
		{"in event", agentbridge.NewSubjects("").InEvent("conv_1"), "parley.conv.conv_1.in.event"},
		{"out event", agentbridge.NewSubjects("").OutEvent("conv_1"), "parley.conv.conv_1.out.event"},
		{"in audio", agentbridge.NewSubjects("").InAudio("sales", "conv_1"), "parley.agents.sales.conv.conv_1.in.audio"},
		{"out audio", agentbridge.NewSubjects("").OutAudio("sales", "conv_1"), "parley.agents.sales.conv.conv_1.out.audio"},
		{"agent namespace", agentbridge.NewSubjects("").Agent("sales"), "parley.agents.sales"},
		{"append", agentbridge.NewSubjects("").Append("sales"), "parley.agents.sales.append"},
		{"append to", agentbridge.NewSubjects("").AppendTo("sales", "brk_1"), "parley.agents.sales.append.brk_1"},
		{"all appends", agentbridge.NewSubjects("").AllAppends(), "parley.agents.*.append"},
		{"all appends to", agentbridge.NewSubjects("").AllAppendsTo("brk_1"), "parley.agents.*.append.brk_1"},
		{"read", agentbridge.NewSubjects("").Read("sales"), "parley.agents.sales.read"},
		{"all reads", agentbridge.NewSubjects("").AllReads(), "parley.agents.*.read"},
		{"conv event", agentbridge.NewSubjects("").ConvEvent("sales", "conv_1"), "parley.agents.sales.conv.conv_1.event"},
		{"any conv event", agentbridge.NewSubjects("").AnyConvEvent("conv_1"), "parley.agents.*.conv.conv_1.event"},
		{"inbox", agentbridge.NewSubjects("").Inbox("sales"), "parley.agents.sales.inbox"},
		{"events", agentbridge.NewSubjects("").Events("conv_1"), "parley.conv.conv_1.*.event"},
		{"room", agentbridge.NewSubjects("").Room("conv_1"), "parley.rooms.conv_1"},
		{"status", agentbridge.NewSubjects("").Status("conv_1"), "parley.status.conv_1"},
		{"stream", agentbridge.NewSubjects("").StreamName(), "PARLEY_CONV"},
		{"custom prefix dispatch", agentbridge.NewSubjects("acme").Dispatch("a"), "acme.agents.a.dispatch"},
		{"custom prefix in event", agentbridge.NewSubjects("acme").InEvent("c"), "acme.conv.c.in.event"},
		{"custom prefix stream", agentbridge.NewSubjects("acme").StreamName(), "ACME_CONV"},
		{"dashed prefix stream", agentbridge.NewSubjects("my-co").StreamName(), "MY_CO_CONV"},
		{"literal prefix", agentbridge.Subjects{Prefix: "x"}.OutAudio("a", "c"), "x.agents.a.conv.c.out.audio"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestNewSubjectsDefaultPrefix(t *testing.T) {
	t.Parallel()
	if got := agentbridge.NewSubjects("").Prefix; got != agentbridge.DefaultPrefix {
		t.Fatalf("prefix %q, want %q", got, agentbridge.DefaultPrefix)
	}
	if got := agentbridge.NewSubjects("p").Prefix; got != "p" {
		t.Fatalf("prefix %q, want p", got)
	}
}

func TestLogSubjectsCoverEventSubjectsOnly(t *testing.T) {
	t.Parallel()
	s := agentbridge.NewSubjects("")
	got := s.LogSubjects()
	want := []string{"parley.conv.*.in.event", "parley.conv.*.out.event"}
	if !slices.Equal(got, want) {
		t.Fatalf("LogSubjects = %q, want %q", got, want)
	}
	for _, subj := range []string{s.InEvent("c"), s.OutEvent("c")} {
		if !matchesAny(got, subj) {
			t.Errorf("%s is not stored by the log", subj)
		}
	}
	// Audio is never durable.
	for _, subj := range []string{s.InAudio("a", "c"), s.OutAudio("a", "c"), s.Room("c"), s.Dispatch("a"),
		s.ConvEvent("a", "c"), s.Append("a"), s.Read("a")} {
		if matchesAny(got, subj) {
			t.Errorf("%s must not be stored by the log", subj)
		}
	}
}

// matchesAny reports whether subject matches one of the patterns ('*' only).
func matchesAny(patterns []string, subject string) bool {
	st := strings.Split(subject, ".")
	for _, p := range patterns {
		pt := strings.Split(p, ".")
		if len(pt) != len(st) {
			continue
		}
		ok := true
		for i := range pt {
			if pt[i] != "*" && pt[i] != st[i] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func TestConversationFromSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix  string
		subject string
		want    string
		ok      bool
	}{
		{"", "parley.conv.conv_1.in.event", "conv_1", true},
		{"", "parley.conv.conv_1.out.event", "conv_1", true},
		{"", "parley.conv.conv_1.in.audio", "conv_1", true},
		{"", "parley.conv.c.x", "c", true},
		{"acme", "acme.conv.c9.out.audio", "c9", true},
		{"", "parley.conv.conv_1", "", false},       // no token after the id
		{"", "parley.conv..in.event", "", false},    // empty id
		{"", "parley.conv.", "", false},             // nothing at all
		{"", "parley.conv", "", false},              // prefix only
		{"", "", "", false},                         // empty
		{"", "parley.agents.a.dispatch", "", false}, // other subject family
		{"", "parley.rooms.conv_1", "", false},      // other subject family
		{"", "other.conv.c.in.event", "", false},    // other prefix
		{"", "parleyx.conv.c.in.event", "", false},  // prefix must be a whole token
		{"acme", "parley.conv.c.in.event", "", false},
		{"", "PARLEY.conv.c.in.event", "", false}, // subjects are case sensitive
	}
	for _, tt := range tests {
		got, ok := agentbridge.NewSubjects(tt.prefix).ConversationFromSubject(tt.subject)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("ConversationFromSubject(%q) under %q = %q, %v; want %q, %v",
				tt.subject, tt.prefix, got, ok, tt.want, tt.ok)
		}
	}
}

func TestConversationFromSubjectRoundTrip(t *testing.T) {
	t.Parallel()
	s := agentbridge.NewSubjects("p-1")
	for _, build := range []func(string) string{s.InEvent, s.OutEvent, s.Events} {
		subj := build("conv_abc-9")
		if got, ok := s.ConversationFromSubject(subj); !ok || got != "conv_abc-9" {
			t.Errorf("ConversationFromSubject(%q) = %q, %v", subj, got, ok)
		}
	}
}

func TestAgentFromSubjectRoundTrip(t *testing.T) {
	t.Parallel()
	s := agentbridge.NewSubjects("p-1")
	for _, subj := range []string{s.Dispatch("sales-2"), s.Heartbeat("sales-2"), s.Append("sales-2"),
		s.AppendTo("sales-2", "brk_1"), s.Read("sales-2"), s.ConvEvent("sales-2", "conv_1"),
		s.InAudio("sales-2", "conv_1"), s.OutAudio("sales-2", "conv_1"), s.Inbox("sales-2") + ".x"} {
		if got, ok := s.AgentFromSubject(subj); !ok || got != "sales-2" {
			t.Errorf("AgentFromSubject(%q) = %q, %v", subj, got, ok)
		}
	}
	for _, subj := range []string{"p-1.agents.*.append", "p-1.agents..append", "parley.agents.a.append", "p-1.conv.c.in.event"} {
		if got, ok := s.AgentFromSubject(subj); ok {
			t.Errorf("AgentFromSubject(%q) = %q, want none", subj, got)
		}
	}
}

func TestValidToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"a", true},
		{"sales", true},
		{"conv_01HXYZ", true},
		{"my-agent_2", true},
		{"ABCxyz019_-", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"a.b", false},
		{".", false},
		{"*", false},
		{">", false},
		{"a*", false},
		{"a b", false},
		{" a", false},
		{"a\t", false},
		{"a\nb", false},
		{"a\x00", false},
		{"agent/1", false},
		{"ü", false},
		{"аgent", false}, // Cyrillic а
		{"a$b", false},
	}
	for _, tt := range tests {
		if got := agentbridge.ValidToken(tt.in); got != tt.want {
			t.Errorf("ValidToken(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// wireFields returns v as JSON and its top-level fields by name.
func wireFields(t *testing.T, v any) ([]byte, map[string]json.RawMessage) {
	t.Helper()
	data := mustJSON(t, v)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return data, m
}

func TestEventEnvelopeAlwaysPresent(t *testing.T) {
	t.Parallel()
	for _, ev := range []agentbridge.Event{
		{},
		{V: agentbridge.Version, Type: agentbridge.EventClearAudio, ConversationID: "c"},
	} {
		data, m := wireFields(t, ev)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		want := []string{"conversation_id", "seq", "ts", "type", "v"}
		if !slices.Equal(keys, want) {
			t.Errorf("%s: keys %q, want exactly the envelope %q", data, keys, want)
		}
	}
}

func TestEventJSONRoundTrip(t *testing.T) {
	t.Parallel()
	ts := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC)
	tests := []struct {
		name string
		ev   agentbridge.Event
	}{
		{"user message", agentbridge.Event{
			V: 1, Type: agentbridge.EventUserMessage, ConversationID: "conv_1", Seq: 42, TS: ts,
			MessageID: "msg_1", SessionID: "ses_1", ClientMessageID: "cm-1", Text: "héllo \"there\"\n",
			Via: agentbridge.ModeChat,
		}},
		{"text delta", agentbridge.Event{
			V: 1, Type: agentbridge.EventTextDelta, ConversationID: "conv_1", Seq: 43, TS: ts,
			MessageID: "msg_2", ReplyTo: "msg_1", Index: 3, Text: "chunk", WorkerID: "wrk_1", Epoch: 7,
		}},
		{"text done interrupted", agentbridge.Event{
			V: 1, Type: agentbridge.EventTextDone, ConversationID: "conv_1", TS: ts,
			MessageID: "msg_2", ReplyTo: "msg_1", Text: "full", Interrupted: true,
			Reason: agentbridge.ReasonWorkerLost, WorkerID: "wrk_1", Epoch: 1,
		}},
		{"session started", agentbridge.Event{
			V: 1, Type: agentbridge.EventSessionStarted, ConversationID: "c", TS: ts, SessionID: "ses_1",
			Mode: agentbridge.ModeVoice, Language: "de", Widget: "pk_1",
			Visitor: map[string]any{"name": "Ada", "plan": "pro"},
		}},
		{"mode changed", agentbridge.Event{
			V: 1, Type: agentbridge.EventModeChanged, ConversationID: "c", TS: ts,
			Mode: agentbridge.ModeVoice, PreviousMode: agentbridge.ModeChat,
		}},
		{"action", agentbridge.Event{
			V: 1, Type: agentbridge.EventAction, ConversationID: "c", TS: ts,
			Action: agentbridge.ActionNavigate, Data: json.RawMessage(`{"url":"/pricing"}`),
		}},
		{"transcript", agentbridge.Event{
			V: 1, Type: agentbridge.EventTranscript, ConversationID: "c", TS: ts, Text: "hi", Final: true,
		}},
		{"agent state", agentbridge.Event{
			V: 1, Type: agentbridge.EventAgentState, ConversationID: "c", TS: ts,
			State: agentbridge.StateThinking, ReplyTo: "msg_1",
		}},
		{"session ended", agentbridge.Event{
			V: 1, Type: agentbridge.EventSessionEnded, ConversationID: "c", TS: ts, Idle: true, Reason: "closed",
		}},
	}
	for _, tt := range tests {
		data, err := json.Marshal(tt.ev)
		if err != nil {
			t.Fatalf("%s: marshal: %v", tt.name, err)
		}
		var got agentbridge.Event
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("%s: unmarshal: %v", tt.name, err)
		}
		if !got.TS.Equal(tt.ev.TS) {
			t.Errorf("%s: ts %v, want %v", tt.name, got.TS, tt.ev.TS)
		}
		got.TS, tt.ev.TS = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, tt.ev) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v\njson %s", tt.name, got, tt.ev, data)
		}
	}
}

func TestEventWireNames(t *testing.T) {
	t.Parallel()
	// The field names are the contract with agents in other languages.
	ev := agentbridge.Event{
		V: 1, Type: "t", ConversationID: "c", Seq: 1, MessageID: "m", ReplyTo: "r", SessionID: "s",
		ClientMessageID: "cm", Text: "x", Index: 1, Mode: "voice", PreviousMode: "chat", Via: "chat",
		State: "idle", Action: "end", Data: json.RawMessage(`1`), Final: true, Interrupted: true,
		Reason: "r", Language: "en", Widget: "w", Visitor: map[string]any{"a": "b"}, Idle: true,
		WorkerID: "w1", Epoch: 2, LegID: "leg_1",
	}
	data, m := wireFields(t, ev)
	for _, k := range []string{"v", "type", "conversation_id", "seq", "ts", "message_id", "reply_to",
		"session_id", "client_message_id", "text", "index", "mode", "previous_mode", "via", "state",
		"action", "data", "final", "interrupted", "reason", "language", "widget", "visitor", "idle",
		"worker_id", "epoch", "leg_id"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing from %s", k, data)
		}
	}
	if len(m) != 27 {
		t.Errorf("%d fields, want 27: %s", len(m), data)
	}
}

func TestIsInbound(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ  string
		want bool
	}{
		{agentbridge.EventUserMessage, true},
		{agentbridge.EventModeChanged, true},
		{agentbridge.EventCapture, true},
		{agentbridge.EventSessionStarted, true},
		{agentbridge.EventSessionEnded, true},
		{agentbridge.EventUserSpeechStarted, true},
		{agentbridge.EventInterrupt, true},
		{agentbridge.EventMediaState, true},
		{agentbridge.EventTextDelta, false},
		{agentbridge.EventTextDone, false},
		{agentbridge.EventTranscript, false},
		{agentbridge.EventAgentState, false},
		{agentbridge.EventAction, false},
		{agentbridge.EventClearAudio, false},
		{"", false},
		{"USER_MESSAGE", false},
		{"something_new", false},
	}
	for _, tt := range tests {
		ev := agentbridge.Event{Type: tt.typ}
		if got := ev.IsInbound(); got != tt.want {
			t.Errorf("IsInbound(%q) = %v, want %v", tt.typ, got, tt.want)
		}
	}
}

func TestDispatchJSONNames(t *testing.T) {
	t.Parallel()
	req := agentbridge.DispatchRequest{V: 1, ConversationID: "c", Agent: "a", Mode: "chat",
		ResumeFromSeq: 3, HeadSeq: 9, Epoch: 2}
	data, m := wireFields(t, req)
	for k, want := range map[string]string{"conversation_id": `"c"`, "agent": `"a"`, "mode": `"chat"`,
		"resume_from_seq": "3", "head_seq": "9", "epoch": "2", "v": "1"} {
		if string(m[k]) != want {
			t.Errorf("%s = %s, want %s (json %s)", k, m[k], want, data)
		}
	}
	var reply agentbridge.DispatchReply
	if err := json.Unmarshal([]byte(`{"accepted":true,"worker_id":"wrk_1"}`), &reply); err != nil {
		t.Fatal(err)
	}
	if !reply.Accepted || reply.WorkerID != "wrk_1" {
		t.Fatalf("reply %+v", reply)
	}
}
