package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

func noEcho(c *configs.Config) { c.EchoAgent.Enabled = false }

// TestNoAgentThenRecovery: with no worker the visitor is told
// AGENT_UNAVAILABLE, nothing is lost, and when a worker appears the broker's
// retries hand it the conversation and the waiting messages are answered.
func TestNoAgentThenRecovery(t *testing.T) {
	e := startEnv(t, noEcho)
	s := e.NewSession(nil)
	c := e.MustDialWS(s)

	c.Send(map[string]any{"type": "message", "body": "anyone there?", "client_message_id": "n-1"})
	// The visitor hears of it as soon as the dispatch fails, which may be
	// before or after the message is acknowledged; the message is kept.
	ack, before := c.Until("ack")
	if ack.Str("client_message_id") != "n-1" {
		t.Fatalf("ack = %v", ack)
	}
	for _, f := range before {
		if f.Str("type") != "error" || f.Str("code") != "AGENT_UNAVAILABLE" {
			t.Fatalf("unexpected frame before the ack: %v", f)
		}
	}
	f, _ := c.Until("error")
	if f.Str("code") != "AGENT_UNAVAILABLE" {
		t.Fatalf("error frame = %v", f)
	}
	r := e.Post(s, "over http too", "n-2", true)
	if r.Status != 503 || r.ErrCode() != "AGENT_UNAVAILABLE" {
		t.Fatalf("HTTP wait with no agent: %d %s", r.Status, r.Raw)
	}
	details := r.Body["error"].(map[string]any)["details"].(map[string]any)
	if details["stored"] != true || details["user_message_id"] == "" {
		t.Fatalf("503 details = %v", details)
	}

	e.startWorker()
	want := map[string]bool{"echo: anyone there?": true, "echo: over http too": true}
	for len(want) > 0 {
		f, _ := c.Until("done")
		if !want[f.Str("body")] {
			t.Fatalf("unexpected reply %v", f)
		}
		delete(want, f.Str("body"))
	}
	wantHistory := []string{"visitor: anyone there?", "visitor: over http too", "agent: echo: anyone there?", "agent: echo: over http too"}
	if got := signalingtest.Transcript(e.History(s)); !slices.Equal(got, wantHistory) {
		t.Fatalf("history = %q, want %q", got, wantHistory)
	}
	// And the conversation carries on normally.
	if r := e.Post(s, "and now?", "n-3", true); r.Status != 200 {
		t.Fatalf("after recovery: %d %s", r.Status, r.Raw)
	}
}

// TestWorkersShareLoad: conversations spread over the workers of an agent
// (a NATS queue group).
func TestWorkersShareLoad(t *testing.T) {
	e := startEnv(t, noEcho)
	w1, w2 := e.startWorker(), e.startWorker()
	const n = 24
	for i := range n {
		s := e.NewSession(nil)
		if r := e.Post(s, fmt.Sprintf("hi %d", i), "", true); r.Status != 200 {
			t.Fatalf("post %d: %d %s", i, r.Status, r.Raw)
		}
	}
	a, b := len(w1.Conversations()), len(w2.Conversations())
	if a+b != n || a == 0 || b == 0 {
		t.Fatalf("workers hold %d and %d conversations, want %d spread over both", a, b, n)
	}
	t.Logf("worker 1: %d conversations, worker 2: %d", a, b)
}

// TestShutdownLeavesNoGoroutines starts and stops a full Parley with a
// conversation in flight and checks every goroutine is gone.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig(t)
	a := newApp(cfg, discardLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cfg: cfg, app: a, base: "http://" + a.server.Addr(), logs: &syncBuffer{}}
	e.Client = &signalingtest.Client{T: t, Base: e.base}
	s, c := e.chatSession("g-1", "before shutdown")
	if r := e.Post(s, "over http", "", true); r.Status != 200 {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	// Read while the server shuts down, as a browser would, so the close
	// handshake completes.
	type closed struct {
		code   int
		reason string
	}
	got := make(chan closed, 1)
	go func() {
		for {
			_, err := c.Read(30 * time.Second)
			if err != nil {
				got <- closed{int(websocket.CloseStatus(err)), closeReason(err)}
				return
			}
		}
	}()
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if cl := <-got; cl.code != 1001 || cl.reason != "SHUTTING_DOWN" {
		t.Fatalf("socket closed with %d %q, want 1001 SHUTTING_DOWN", cl.code, cl.reason)
	}
	c.Conn.CloseNow()
}

// TestLostWorkerIsReplaced: when the worker holding a conversation stops
// heartbeating (its connection dies), the broker hands the conversation to
// another worker, which answers what was left unanswered.
func TestLostWorkerIsReplaced(t *testing.T) {
	e := startEnv(t, noEcho, func(c *configs.Config) { c.Agents.HeartbeatTimeout = time.Second })
	nc := e.agentConn(configs.DefaultAgent)
	w1 := signalingtest.StartWorker(t, nc, configs.DefaultAgent, echoAgent)
	s, c := e.chatSession("l-1", "first")

	e.startWorker()
	nc.Close() // the first worker's process dies: no drain, no more heartbeats
	c.Send(map[string]any{"type": "message", "body": "second", "client_message_id": "l-2"})
	done, _ := c.Until("done")
	if done.Str("body") != "echo: second" {
		t.Fatalf("reply = %v", done)
	}
	w1.Close()
	want := []string{"visitor: first", "agent: echo: first", "visitor: second", "agent: echo: second"}
	if got := signalingtest.Transcript(e.History(s)); !slices.Equal(got, want) {
		t.Fatalf("history = %q, want %q", got, want)
	}
}

// TestFailoverMidReply: the worker answering dies half way through a reply.
// Within the heartbeat timeout the broker marks that reply interrupted,
// tells the visitor, and another worker answers the same message with the
// full context; a late write from the dead worker is fenced off.
func TestFailoverMidReply(t *testing.T) {
	e := startEnv(t, noEcho, func(c *configs.Config) { c.Agents.HeartbeatTimeout = time.Second })
	nc1 := e.agentConn(configs.DefaultAgent)
	halfway := make(chan *agentbridge.Conversation, 1)
	w1 := signalingtest.StartWorker(t, nc1, configs.DefaultAgent, signalingtest.OnMessages(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		if err := c.NewReply(ev.MessageID).Write(ctx, "I was saying"); err != nil {
			return err
		}
		halfway <- c
		<-ctx.Done() // never finishes: the process "dies" now
		return nil
	}))

	s := e.NewSession(nil)
	c := e.MustDialWS(s)
	c.Send(map[string]any{"type": "message", "body": "tell me", "client_message_id": "f-1"})
	if f, _ := c.Until("chunk"); f.Str("chunk") != "I was saying" {
		t.Fatalf("first chunk = %v", f)
	}
	conv := <-halfway
	e.startWorker() // the echo takes over
	killed := time.Now()
	nc1.Close() // no drain, no more heartbeats

	var states []string
	var interrupted, full frame
	for full == nil {
		f := c.Next()
		switch f.Str("type") {
		case "agent_state":
			states = append(states, f.Str("state"))
		case "done":
			if f["interrupted"] == true {
				interrupted = f
			} else {
				full = f
			}
		}
	}
	took := time.Since(killed)
	if interrupted == nil || interrupted.Str("body") != "I was saying" || full.Str("body") != "echo: tell me" ||
		!slices.Contains(states, "reconnecting") {
		t.Fatalf("after the kill: interrupted %v, full %v, states %v", interrupted, full, states)
	}
	t.Logf("worker killed → new worker's reply on the socket: %v", took.Round(time.Millisecond))

	// The dead worker comes back late and appends: the broker refuses it
	// (another worker holds the conversation) and nobody sees it.
	late, _ := json.Marshal(agentbridge.Event{V: agentbridge.Version, Type: agentbridge.EventTextDone, ConversationID: s.ConversationID,
		MessageID: "msg_zombie", ReplyTo: full.Str("reply_to"), Text: "zombie", WorkerID: w1.ID(), Epoch: conv.Epoch(), TS: time.Now()})
	resp, err := e.agentConn(configs.DefaultAgent).Request(e.app.broker.Subjects().Append(configs.DefaultAgent), late, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var refused agentbridge.AppendReply
	if err := json.Unmarshal(resp.Data, &refused); err != nil || refused.Error == nil || refused.Error.Code != agentbridge.CodeNotHolder {
		t.Fatalf("late append of the dead worker = %s (%v), want NOT_HOLDER", resp.Data, err)
	}
	c.Send(map[string]any{"type": "message", "body": "still there?", "client_message_id": "f-2"})
	for {
		f := c.Next()
		if f.Str("body") == "zombie" {
			t.Fatal("a fenced-off write reached the visitor")
		}
		if f.Str("type") == "done" && f.Str("body") == "echo: still there?" {
			break
		}
	}
	var got []string
	for _, m := range e.History(s) {
		line := m["role"].(string) + ": " + m["body"].(string)
		if m["interrupted"] == true {
			line += " [interrupted]"
		}
		got = append(got, line)
	}
	want := []string{"visitor: tell me", "agent: I was saying [interrupted]", "agent: echo: tell me",
		"visitor: still there?", "agent: echo: still there?"}
	if !slices.Equal(got, want) {
		t.Fatalf("history = %q, want %q", got, want)
	}
}
