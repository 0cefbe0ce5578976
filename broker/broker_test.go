package broker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// startBroker starts a broker with its embedded NATS on a random port.
func startBroker(t testing.TB) *Broker {
	t.Helper()
	return startBrokerWith(t, nil, fastDispatch)
}

// fastDispatch gives up on a dispatch, and retries it, within 200 ms.
func fastDispatch(cfg *configs.Config) {
	cfg.Agents.DispatchTimeout = 200 * time.Millisecond
	cfg.Agents.DispatchRetryMax = 200 * time.Millisecond
}

// startBrokerWith starts a broker with its embedded NATS on a random port
// and its data in a temporary directory, the rest of its configuration as
// tune sets it; it logs to log, or nowhere when log is nil. It is closed
// when the test ends.
func startBrokerWith(t testing.TB, log *slog.Logger, tune func(cfg *configs.Config)) *Broker {
	t.Helper()
	cfg := configs.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:-1"
	tune(&cfg)
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b := New(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// startEchoWorker starts an SDK worker of agent echo that echoes every
// message, on its own agent connection; both close when the test ends.
func startEchoWorker(t testing.TB, b *Broker, opts agentbridge.Options) (*agentbridge.Worker, *nats.Conn) {
	t.Helper()
	nc := connectAs(t, b, AgentRole("echo"), agentbridge.ConnectOptions(b.subj.Prefix, "echo")...)
	opts.Agent = "echo"
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := agentbridge.NewWorker(nc, opts, agenttest.Echo)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close) // before nc closes
	return w, nc
}

// connectAs connects a client to b's embedded NATS with role's
// credentials; the connection closes with the test.
func connectAs(t testing.TB, b *Broker, role string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts, err := b.ClientOptions(role)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(b.NATSClientURL(), append(opts, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func startSession(t testing.TB, b *Broker) Session {
	t.Helper()
	return startDemoSession(t.Context(), t, b).Session
}

// startDemoSession starts a session on the demo widget for the echo agent
// within ctx, failing t if it cannot.
func startDemoSession(ctx context.Context, t testing.TB, b *Broker) StartResult {
	t.Helper()
	res, err := b.StartSession(ctx, StartRequest{Widget: "pk_demo", Agent: "echo", Origin: "http://localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// startEngagedSession starts a demo session whose visitor has written, so
// its conversation is being dispatched (a session that sends nothing
// holds no worker).
func startEngagedSession(ctx context.Context, t testing.TB, b *Broker) StartResult {
	t.Helper()
	res := startDemoSession(ctx, t, b)
	if _, err := b.PostMessage(ctx, res.Session, "hello", "engage", ""); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestValidateMessage(t *testing.T) {
	b := New(configs.Default(), nil)
	cases := []struct {
		body, cid string
		ok        bool
	}{
		{"hello", "", true},
		{"hello", "c-1_x.Y:z", true},
		{strings.Repeat("é", 4000), "", true},
		{strings.Repeat("é", 4001), "", false},
		{"", "", false},
		{" \n\t", "", false},
		{"bad \xff utf8", "", false},
		{"ok", strings.Repeat("x", MaxClientMessageIDLen+1), false},
		{"ok", "has space", false},
		{"ok", "ünicode", false},
		{"ok", "ctl\x01", false},
	}
	for _, tc := range cases {
		err := b.ValidateMessage(tc.body, tc.cid)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrValidation)) {
			t.Errorf("ValidateMessage(%.20q, %q) = %v, want ok=%v", tc.body, tc.cid, err, tc.ok)
		}
	}
}

func TestTranscript(t *testing.T) {
	events := []agentbridge.Event{
		{Type: agentbridge.EventSessionStarted, Seq: 1},
		{Type: agentbridge.EventUserMessage, MessageID: "msg_u1", Text: "hi", Seq: 2},
		{Type: agentbridge.EventAgentState, State: "thinking", Seq: 3},
		{Type: agentbridge.EventTextDelta, MessageID: "msg_a1", Text: "ec", Seq: 4},
		{Type: agentbridge.EventTextDone, MessageID: "msg_a1", ReplyTo: "msg_u1", Text: "echo: hi", Seq: 5},
		{Type: agentbridge.EventTextDone, MessageID: "msg_a2", ReplyTo: "msg_u2", Text: "cut", Interrupted: true, Seq: 7},
	}
	got := Transcript(events)
	if len(got) != 3 || got[0].Role != RoleVisitor || got[1].Body != "echo: hi" || got[1].ReplyTo != "msg_u1" || !got[2].Interrupted {
		t.Fatalf("Transcript = %+v", got)
	}
}

func TestRegistryOwner(t *testing.T) {
	r := newRegistry(time.Second)
	hb := func(seq uint64, draining bool, convs ...string) {
		data, _ := json.Marshal(agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: "w1", Agent: "echo", Seq: seq, Draining: draining, Conversations: convs})
		r.onHeartbeat(&nats.Msg{Subject: "parley.agents.echo.heartbeat", Data: data})
	}
	if _, ok := r.owner("c1", "echo"); ok {
		t.Fatal("unknown conversation has an owner")
	}
	hb(1, false)
	r.assign("c1", "echo", "w1", 1, 1, 0)
	if w, ok := r.owner("c1", "echo"); !ok || w != "w1" {
		t.Fatal("just assigned conversation has no owner")
	}
	hb(2, false, "c1")
	if _, ok := r.owner("c1", "echo"); !ok {
		t.Fatal("listed conversation has no owner")
	}
	hb(1, false) // stale heartbeat overtaken by seq 2: ignored
	if _, ok := r.owner("c1", "echo"); !ok {
		t.Fatal("a stale heartbeat released the conversation")
	}
	hb(3, false) // newer heartbeat without c1: released
	if _, ok := r.owner("c1", "echo"); ok {
		t.Fatal("released conversation still has an owner")
	}
	r.assign("c2", "echo", "w1", 3, 1, 0)
	hb(4, true, "c2")
	if _, ok := r.owner("c2", "echo"); ok {
		t.Fatal("a draining worker owns a conversation")
	}
	if n := r.alive("echo"); n != 0 {
		t.Fatalf("alive = %d with the only worker draining", n)
	}
	hb(5, false, "c3") // learned from a heartbeat (another broker dispatched it)
	if w, ok := r.owner("c3", "echo"); !ok || w != "w1" {
		t.Fatal("assignment not learned from heartbeat")
	}
	if n := r.alive("echo"); n != 1 {
		t.Fatalf("alive = %d, want 1", n)
	}
	hb(1, false, "c3") // the worker restarted with the same id
	if _, ok := r.owner("c3", "echo"); !ok {
		t.Fatal("heartbeats of a restarted worker are ignored")
	}
	r.release("c3", 1)
	if _, ok := r.owner("c3", "echo"); ok {
		t.Fatal("released conversation still has an owner")
	}

	// A worker that does not number its heartbeats.
	plain := func(convs ...string) {
		data, _ := json.Marshal(agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: "w2", Agent: "echo", Conversations: convs})
		r.onHeartbeat(&nats.Msg{Subject: "parley.agents.echo.heartbeat", Data: data})
	}
	plain()
	r.assign("c4", "echo", "w2", 0, 1, 0)
	if _, ok := r.owner("c4", "echo"); !ok {
		t.Fatal("no owner right after assignment")
	}
	plain("c4")
	if _, ok := r.owner("c4", "echo"); !ok {
		t.Fatal("listed conversation has no owner")
	}
	plain()
	if _, ok := r.owner("c4", "echo"); ok {
		t.Fatal("a heartbeat without the conversation did not release it")
	}
}

func TestSessionLifecycle(t *testing.T) {
	b := startBroker(t)
	res := startDemoSession(t.Context(), t, b)
	s := res.Session
	if !strings.HasPrefix(s.ID, "ses_") || !strings.HasPrefix(s.ConversationID, "conv_") || s.TokenHash == res.SessionToken {
		t.Fatalf("session = %+v", s)
	}
	if _, err := b.Authenticate(t.Context(), s.ID, res.SessionToken); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, token string
		want      error
	}{
		{s.ID, "wrong", ErrBadToken},
		{s.ID, "", ErrBadToken},
		{"ses_unknown", res.SessionToken, ErrUnknownSession},
		{"not-a-session", res.SessionToken, ErrUnknownSession},
		{"ses_a.b", res.SessionToken, ErrUnknownSession},
	} {
		if _, err := b.Authenticate(t.Context(), tc.id, tc.token); !errors.Is(err, tc.want) {
			t.Errorf("Authenticate(%q, %q) = %v, want %v", tc.id, tc.token, err, tc.want)
		}
	}
	// Secrets are stored hashed only.
	e, err := b.sessions.Get(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Value()), res.SessionToken) {
		t.Fatal("session token stored in clear")
	}
	if _, err := b.resume.Get(t.Context(), res.ResumeToken); err == nil {
		t.Fatal("resume token stored in clear")
	}

	if err := b.EndSession(t.Context(), s.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authenticate(t.Context(), s.ID, res.SessionToken); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("after end: %v", err)
	}
	events, err := b.ReadLog(t.Context(), s.ConversationID, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := events[len(events)-1]
	if last.Type != agentbridge.EventSessionEnded || !last.Idle || last.Reason != "test" {
		t.Fatalf("last event = %+v", last)
	}

	// Resume: same conversation, single use, widget-bound.
	if _, err := b.StartSession(t.Context(), StartRequest{Widget: "pk_other", Agent: "echo", ResumeToken: res.ResumeToken}); !errors.Is(err, ErrResumeInvalid) {
		t.Fatalf("resume with another widget: %v", err)
	}
	res2, err := b.StartSession(t.Context(), StartRequest{Widget: "pk_demo", Agent: "echo", ResumeToken: res.ResumeToken})
	if err != nil || res2.Session.ConversationID != s.ConversationID || !res2.Resumed {
		t.Fatalf("resume: %+v, %v", res2, err)
	}
	if _, err := b.StartSession(t.Context(), StartRequest{Widget: "pk_demo", Agent: "echo", ResumeToken: res.ResumeToken}); !errors.Is(err, ErrResumeInvalid) {
		t.Fatalf("second resume: %v", err)
	}
}

func TestNonceSingleUse(t *testing.T) {
	b := startBroker(t)
	if err := b.UseNonce(t.Context(), "n1"); err != nil {
		t.Fatal(err)
	}
	if err := b.UseNonce(t.Context(), "n1"); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("second use: %v", err)
	}
	if err := b.UseNonce(t.Context(), ""); !errors.Is(err, ErrValidation) {
		t.Fatalf("empty nonce: %v", err)
	}
}

// TestSubscriptionFanOut: every subscriber of a conversation gets its
// events in log order; a subscriber that stops reading is cut off with
// ErrSlowSubscriber without holding up the others.
func TestSubscriptionFanOut(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	fast, err := b.Subscribe(t.Context(), s.ConversationID)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	slow, err := b.Subscribe(t.Context(), s.ConversationID)
	if err != nil {
		t.Fatal(err)
	}
	const n = subscriptionBuffer + 10
	done := make(chan []uint64)
	go func() {
		var seqs []uint64
		for open := true; open && len(seqs) < n; {
			<-fast.Ready()
			var updates []Update
			updates, open = fast.Take(nil)
			for _, u := range updates {
				if u.Event != nil && u.Event.Type == agentbridge.EventUserMessage && len(seqs) < n {
					seqs = append(seqs, u.Event.Seq)
				}
			}
		}
		done <- seqs
	}()
	for i := range n {
		if _, err := b.PostMessage(t.Context(), s, "m", "", ""); err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
	}
	seqs := <-done
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("out of order: %v", seqs[i-1:i+1])
		}
	}
	for open := true; open; {
		<-slow.Ready()
		_, open = slow.Take(nil)
	}
	if !errors.Is(slow.Err(), ErrSlowSubscriber) {
		t.Fatalf("slow subscriber ended with %v", slow.Err())
	}
	slow.Close() // idempotent after being cut off
}

// TestDispatchUnavailableThenAccepted: with no worker, dispatch reports the
// conversation unavailable and keeps trying; a worker that appears gets it.
func TestDispatchUnavailableThenAccepted(t *testing.T) {
	b := startBroker(t)
	nc := connectAs(t, b, RoleOperator)
	notices := make(chan Notice, 16)
	sub, err := nc.Subscribe(b.Subjects().Status("*"), func(m *nats.Msg) {
		var n Notice
		if json.Unmarshal(m.Data, &n) == nil {
			notices <- n
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s := startSession(t, b)
	// The first message dispatches the conversation (a session that sends
	// nothing holds no worker).
	p, err := b.PostMessage(t.Context(), s, "anyone?", "x1", "")
	if err != nil {
		t.Fatalf("post = %+v, %v", p, err)
	}
	if n := <-notices; n.Kind != NoticeAgentUnavailable || n.ConversationID != s.ConversationID || n.Code != "" {
		t.Fatalf("first notice = %+v", n)
	}
	if p2, err := b.PostMessage(t.Context(), s, "still there?", "x2", ""); err != nil || !errors.Is(p2.Unavailable, ErrAgentUnavailable) {
		t.Fatalf("second post = %+v, %v", p2, err)
	}
	w, _ := startEchoWorker(t, b, agentbridge.Options{})
	for n := range notices {
		if n.Kind == NoticeAgentAssigned {
			if n.WorkerID != w.ID() || n.Epoch != 1 {
				t.Fatalf("assigned notice = %+v", n)
			}
			break
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	sub2, err := b.Subscribe(ctx, s.ConversationID)
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	p.Unavailable, p.Duplicate = nil, true // look in the log first
	m, err := b.AwaitReply(ctx, sub2, p)
	if err != nil || m.Body != "echo: anyone?" {
		t.Fatalf("reply = %+v, %v", m, err)
	}
	conv, err := b.Conversation(t.Context(), s.ConversationID)
	if err != nil || conv.WorkerID != w.ID() || conv.Epoch != 1 || conv.FirstSeq == 0 {
		t.Fatalf("conversation = %+v, %v", conv, err)
	}
}

// FuzzTranscript feeds arbitrary log entries (agents write them) to the
// decoder and the transcript builder.
func FuzzTranscript(f *testing.F) {
	f.Add([]byte(`{"v":1,"type":"text_done","conversation_id":"conv_x","seq":3,"ts":"2026-01-01T00:00:00Z","message_id":"m","reply_to":"u","text":"hi"}`))
	f.Add([]byte(`{"type":"user_message","text":"\u0000","index":-1,"data":[1,2]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev agentbridge.Event
		if json.Unmarshal(data, &ev) != nil {
			return
		}
		msgs := Transcript([]agentbridge.Event{ev})
		if len(msgs) > 1 {
			t.Fatalf("one event gave %d messages", len(msgs))
		}
	})
}

// TestExpiredResume: past the resume window a resume token gets
// ErrSessionExpired (not "invalid"), identified visitor or not: a resume
// token means that token. Only an explicit ResumeIdentity carries a
// verified visitor on in their latest conversation.
func TestExpiredResume(t *testing.T) {
	b := startBrokerWith(t, nil, func(cfg *configs.Config) { cfg.Sessions.ResumeWindow = 300 * time.Millisecond })
	visitor := map[string]any{"sub": "user-7", "method": "jwt"}
	start := func(req StartRequest) (StartResult, error) {
		req.Widget, req.Agent = "wdg_demo", "echo"
		return b.StartSession(t.Context(), req)
	}
	guest, err := start(StartRequest{})
	if err != nil {
		t.Fatal(err)
	}
	known, err := start(StartRequest{Visitor: visitor})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		<-time.After(20 * time.Millisecond) // the resume window passing is the behaviour under test
	}
	if _, err := start(StartRequest{ResumeToken: guest.ResumeToken}); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("guest past the window: %v, want ErrSessionExpired", err)
	}
	if res, err := start(StartRequest{ResumeToken: known.ResumeToken, Visitor: visitor}); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("identified visitor, expired token: %+v, %v, want ErrSessionExpired", res, err)
	}
	for _, v := range []map[string]any{visitor, {"sub": "someone-else"}} {
		if res, err := start(StartRequest{ResumeToken: "not-a-token", Visitor: v, ResumeIdentity: true}); !errors.Is(err, ErrResumeInvalid) {
			t.Fatalf("bad token with identity %v: %+v, %v, want ErrResumeInvalid", v, res, err)
		}
	}
	res, err := start(StartRequest{Visitor: visitor, ResumeIdentity: true})
	if err != nil || !res.Resumed || res.Session.ConversationID != known.Session.ConversationID {
		t.Fatalf("identified visitor resuming by identity: %+v, %v", res, err)
	}
	res, err = start(StartRequest{Visitor: map[string]any{"sub": "new-user", "method": "jwt"}, ResumeIdentity: true})
	if err != nil || res.Resumed || res.Session.ConversationID == known.Session.ConversationID {
		t.Fatalf("unknown visitor resuming by identity starts afresh: %+v, %v", res, err)
	}
}

// TestManyConsumers: every live conversation holds consumers on the
// conversation stream (the hub of each broker watching it, each agent
// worker); nats-server's default of 1 000 per stream must not cap a
// deployment at ~500 conversations.
func TestManyConsumers(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 1 100 JetStream consumers (~17 s)")
	}
	b := startBroker(t)
	ctx := t.Context()
	info, err := b.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Config.MaxConsumers, configs.Default().NATS.MaxConsumers; got != want {
		t.Fatalf("stream max_consumers %d, want %d", got, want)
	}
	const n = 1100 // over nats-server's default per-stream limit
	for i := range n {
		_, err := b.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
			AckPolicy:         jetstream.AckNonePolicy,
			InactiveThreshold: time.Minute,
		})
		if err != nil {
			t.Fatalf("consumer %d: %v", i+1, err)
		}
	}
	info, err = b.stream.Info(ctx)
	if err != nil || info.State.Consumers < n {
		t.Fatalf("%d consumers on the stream (%v), want ≥ %d", info.State.Consumers, err, n)
	}
}
