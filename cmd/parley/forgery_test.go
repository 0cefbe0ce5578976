package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// agentConnFromCreds connects to the env's NATS as an outside agent
// process would: the agent's credentials file from the data directory
// (broker.EnsureAgentCreds) and the agent's inbox prefix, with a plain
// nats.Conn (no SDK).
func (e *env) agentConnFromCreds(agent string) *nats.Conn {
	e.t.Helper()
	creds, err := broker.EnsureAgentCreds(e.cfg.DataDir, e.app.broker.Subjects().Prefix, agent)
	if err != nil {
		e.t.Fatal(err)
	}
	nc, err := nats.Connect(e.app.broker.NATSClientURL(), nats.UserCredentials(creds),
		nats.CustomInboxPrefix(e.app.broker.Subjects().Inbox(agent)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// TestAgentForgeriesRefused: every forgery found in issue 12, sent as an
// agent with its own credentials over plain NATS, is refused by the broker
// with its code; nothing is stored, the visitor's WebSocket and history
// are unaffected, each refusal is counted by reason, and logged once per
// worker and reason however often it is repeated.
func TestAgentForgeriesRefused(t *testing.T) {
	e := startEnv(t)
	s, ws := e.chatSession("f-1", "hi")
	b := e.app.broker
	subj := b.Subjects()
	conv, err := b.Conversation(t.Context(), s.ConversationID)
	if err != nil || conv.WorkerID == "" || conv.Epoch == 0 {
		t.Fatalf("conversation = %+v, %v; want one held by the echo worker", conv, err)
	}
	before, err := b.ReadLog(t.Context(), s.ConversationID, 0)
	if err != nil {
		t.Fatal(err)
	}

	echo := e.agentConnFromCreds(configs.DefaultAgent)
	evil := e.agentConnFromCreds("evil")
	const forged = "FORGED"
	event := func(typ string, edit func(map[string]any)) map[string]any {
		ev := map[string]any{"v": 2, "type": typ, "conversation_id": s.ConversationID,
			"worker_id": conv.WorkerID, "epoch": conv.Epoch, "message_id": "msg_forged", "text": forged}
		if edit != nil {
			edit(ev)
		}
		return ev
	}
	cases := []struct {
		name  string
		nc    *nats.Conn
		agent string
		ev    map[string]any
		code  string
	}{
		{"agent_assigned with epoch 1,000,000", echo, configs.DefaultAgent, event(agentbridge.EventAgentAssigned,
			func(ev map[string]any) { ev["epoch"] = 1_000_000 }), agentbridge.CodeTypeNotAllowed},
		{"user_message", echo, configs.DefaultAgent, event(agentbridge.EventUserMessage, nil), agentbridge.CodeTypeNotAllowed},
		{"session_started", echo, configs.DefaultAgent, event(agentbridge.EventSessionStarted, nil), agentbridge.CodeTypeNotAllowed},
		{"mode_changed", echo, configs.DefaultAgent, event(agentbridge.EventModeChanged,
			func(ev map[string]any) { ev["mode"] = "voice" }), agentbridge.CodeTypeNotAllowed},
		{"capture", echo, configs.DefaultAgent, event(agentbridge.EventCapture, nil), agentbridge.CodeTypeNotAllowed},
		{"text_done by another worker", echo, configs.DefaultAgent, event(agentbridge.EventTextDone,
			func(ev map[string]any) { ev["worker_id"] = "w_intruder" }), agentbridge.CodeNotHolder},
		{"text_done by another agent", evil, "evil", event(agentbridge.EventTextDone, nil), agentbridge.CodeUnknownConversation},
		{"text_done without epoch", echo, configs.DefaultAgent, event(agentbridge.EventTextDone,
			func(ev map[string]any) { delete(ev, "epoch") }), agentbridge.CodeEpochRequired},
		{"text_done without v", echo, configs.DefaultAgent, event(agentbridge.EventTextDone,
			func(ev map[string]any) { delete(ev, "v") }), agentbridge.CodeUnsupportedVersion},
		{"text_done v 1", echo, configs.DefaultAgent, event(agentbridge.EventTextDone,
			func(ev map[string]any) { ev["v"] = 1 }), agentbridge.CodeUnsupportedVersion},
		{"text_done v 3", echo, configs.DefaultAgent, event(agentbridge.EventTextDone,
			func(ev map[string]any) { ev["v"] = 3 }), agentbridge.CodeUnsupportedVersion},
		{"1 MB text_delta", echo, configs.DefaultAgent, event(agentbridge.EventTextDelta,
			func(ev map[string]any) { ev["text"] = strings.Repeat("x", 1_000_000) }), agentbridge.CodeTooLarge},
		{"worker id ../../x y", echo, configs.DefaultAgent, event(agentbridge.EventTextDone,
			func(ev map[string]any) { ev["worker_id"] = "../../x y" }), agentbridge.CodeBadEvent},
	}
	const repeats = 3
	for _, c := range cases {
		data, err := json.Marshal(c.ev)
		if err != nil {
			t.Fatal(err)
		}
		for i := range repeats {
			m := nats.NewMsg(subj.Append(c.agent))
			m.Data = data
			m.Header.Set(agentbridge.HeaderMsgID, "forged/"+strings.ReplaceAll(c.name, " ", "_")+"/"+string(rune('0'+i)))
			resp, err := c.nc.RequestMsg(m, 10*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			var r agentbridge.AppendReply
			if err := json.Unmarshal(resp.Data, &r); err != nil || r.Error == nil || r.Error.Code != c.code || r.Seq != 0 {
				t.Fatalf("%s: reply %s, want %s", c.name, resp.Data, c.code)
			}
		}
	}

	// Nothing stored.
	after, err := b.ReadLog(t.Context(), s.ConversationID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("the log grew from %d to %d events", len(before), len(after))
	}
	// The visitor is unaffected: the next turn's frames are its own (no
	// forged frame arrived before them), and history shows the two turns.
	ws.Send(map[string]any{"type": "message", "body": "again", "client_message_id": "f-2"})
	signalingtest.ExpectReply(t, ws, "f-2", "echo: again")
	got := strings.Join(signalingtest.Transcript(e.History(s)), " | ")
	if want := "visitor: hi | agent: echo: hi | visitor: again | agent: echo: again"; got != want {
		t.Fatalf("history = %q, want %q", got, want)
	}

	// Counted by reason.
	mfs := e.Scrape()
	for reason, n := range map[string]int{"type_not_allowed": 5, "not_holder": 1, "unknown_conversation": 1,
		"epoch_required": 1, "unsupported_version": 3, "too_large": 1, "bad_event": 1} {
		v, _ := signalingtest.MetricValue(mfs, "parley_agent_events_refused_total", "reason", reason)
		if int(v) != n*repeats {
			t.Errorf("parley_agent_events_refused_total{reason=%q} = %v, want %d", reason, v, n*repeats)
		}
	}
	// Logged once per (worker, reason).
	logs := e.logs.String()
	count := func(worker, reason string) int {
		n := 0
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, "agent event refused") && strings.Contains(line, `"reason":"`+reason+`"`) &&
				strings.Contains(line, worker) {
				n++
			}
		}
		return n
	}
	if n := count(conv.WorkerID, agentbridge.CodeTypeNotAllowed); n != 1 {
		t.Errorf("TYPE_NOT_ALLOWED of %s logged %d times, want once", conv.WorkerID, n)
	}
	if n := count("w_intruder", agentbridge.CodeNotHolder); n != 1 {
		t.Errorf("NOT_HOLDER of w_intruder logged %d times, want once", n)
	}
	if n := count(conv.WorkerID, agentbridge.CodeUnsupportedVersion); n != 1 {
		t.Errorf("UNSUPPORTED_VERSION logged %d times, want once", n)
	}
	if strings.Contains(logs, forged) {
		t.Error("a forged event's text reached the logs")
	}
}
