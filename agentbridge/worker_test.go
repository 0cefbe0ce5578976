package agentbridge_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

func TestNewWorkerOptions(t *testing.T) {
	t.Parallel()
	srv := runServer(t)
	nc := connectAgent(t, srv, "sales")
	acme := connect(t, srv, append(agentbridge.ConnectOptions("acme", "sales"), nats.UserInfo(brokerUser, brokerPass))...)
	plain := connect(t, srv, nats.UserInfo(brokerUser, brokerPass))
	other := connectAgent(t, srv, testAgent)
	h := func(context.Context, *agentbridge.Conversation) error { return nil }
	tests := []struct {
		name string
		nc   *nats.Conn
		opts agentbridge.Options
		h    agentbridge.Handler
		ok   bool
	}{
		{"minimal", nc, agentbridge.Options{Agent: "sales", Logger: quiet}, h, true},
		{"all set", acme, agentbridge.Options{Agent: "sales", Prefix: "acme", WorkerID: "wrk_1",
			MaxConversations: 3, HeartbeatInterval: time.Minute, IdleTimeout: -1, ReplayTimeout: time.Second,
			Logger: quiet}, h, true},
		{"nil conn", nil, agentbridge.Options{Agent: "sales"}, h, false},
		{"nil handler", nc, agentbridge.Options{Agent: "sales"}, nil, false},
		{"empty agent", nc, agentbridge.Options{}, h, false},
		{"agent with dot", nc, agentbridge.Options{Agent: "sales.eu"}, h, false},
		{"agent wildcard", nc, agentbridge.Options{Agent: "*"}, h, false},
		{"agent full wildcard", nc, agentbridge.Options{Agent: ">"}, h, false},
		{"agent with space", nc, agentbridge.Options{Agent: "sales eu"}, h, false},
		{"agent too long", nc, agentbridge.Options{Agent: strings.Repeat("a", 129)}, h, false},
		{"bad worker id", nc, agentbridge.Options{Agent: "sales", WorkerID: "w.1"}, h, false},
		// Replies must come back inside the agent's namespace.
		{"default inbox prefix", plain, agentbridge.Options{Agent: "sales"}, h, false},
		{"another agent's inbox", other, agentbridge.Options{Agent: "sales"}, h, false},
		{"another prefix's inbox", acme, agentbridge.Options{Agent: "sales"}, h, false},
	}
	for _, tt := range tests {
		w, err := agentbridge.NewWorker(tt.nc, tt.opts, tt.h)
		if tt.ok {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
				continue
			}
			if tt.opts.WorkerID != "" && w.ID() != tt.opts.WorkerID {
				t.Errorf("%s: ID %q", tt.name, w.ID())
			}
			if tt.opts.WorkerID == "" && (!strings.HasPrefix(w.ID(), "wrk_") || !agentbridge.ValidToken(w.ID())) {
				t.Errorf("%s: default ID %q", tt.name, w.ID())
			}
			w.Close()
			continue
		}
		if !errors.Is(err, agentbridge.ErrInvalidOptions) {
			t.Errorf("%s: error %v, want ErrInvalidOptions", tt.name, err)
		}
		if w != nil {
			t.Errorf("%s: got a worker with an error", tt.name)
		}
	}
}

// TestNewWorkerInboxPrefix: a connection without the agent's inbox prefix
// is refused with a message that says how to connect.
func TestNewWorkerInboxPrefix(t *testing.T) {
	t.Parallel()
	srv := runServer(t)
	h := func(context.Context, *agentbridge.Conversation) error { return nil }
	nc := connect(t, srv, nats.UserInfo(brokerUser, brokerPass))
	_, err := agentbridge.NewWorker(nc, agentbridge.Options{Agent: testAgent, Logger: quiet}, h)
	if !errors.Is(err, agentbridge.ErrInvalidOptions) || !strings.Contains(err.Error(), `"parley.agents.support.inbox"`) ||
		!strings.Contains(err.Error(), "ConnectOptions") {
		t.Fatalf("NewWorker on a default connection: %v", err)
	}
	ok := connect(t, srv, append(agentbridge.ConnectOptions("", testAgent), nats.UserInfo(brokerUser, brokerPass))...)
	if !strings.HasPrefix(ok.NewInbox(), "parley.agents.support.inbox.") {
		t.Fatalf("ConnectOptions gives inboxes like %q", ok.NewInbox())
	}
	w, err := agentbridge.NewWorker(ok, agentbridge.Options{Agent: testAgent, Logger: quiet}, h)
	if err != nil {
		t.Fatalf("NewWorker with ConnectOptions: %v", err)
	}
	w.Close()
}

func TestWorkerDefaultIDsDiffer(t *testing.T) {
	t.Parallel()
	nc := connectAgent(t, runServer(t), "x")
	h := func(context.Context, *agentbridge.Conversation) error { return nil }
	a, err := agentbridge.NewWorker(nc, agentbridge.Options{Agent: "x", Logger: quiet}, h)
	if err != nil {
		t.Fatal(err)
	}
	b, err := agentbridge.NewWorker(nc, agentbridge.Options{Agent: "x", Logger: quiet}, h)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if a.ID() == b.ID() {
		t.Fatalf("two workers share the id %q", a.ID())
	}
}

func TestDispatchAcceptedWithWorkerID(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	rec := newRecorder()
	w := b.startWorker(agentbridge.Options{WorkerID: "wrk_a"}, rec.handle)
	if err := w.Start(); err != nil { // idempotent
		t.Fatalf("second Start: %v", err)
	}
	req := agentbridge.DispatchRequest{ConversationID: "conv_1", SessionID: "ses_1", Mode: agentbridge.ModeVoice,
		Language: "fr", Widget: "pk_1", Visitor: map[string]any{"email": "a@b.c"}, Epoch: 4}
	reply := b.dispatch(req)
	if !reply.Accepted || reply.WorkerID != "wrk_a" || reply.Reason != "" {
		t.Fatalf("reply %+v, want accepted by wrk_a", reply)
	}
	c := recv(t, rec.convs, "the handler")
	if c.ID() != "conv_1" || c.Epoch() != 4 {
		t.Errorf("conversation %q epoch %d", c.ID(), c.Epoch())
	}
	got := c.Dispatch()
	if got.SessionID != "ses_1" || got.Mode != agentbridge.ModeVoice || got.Language != "fr" ||
		got.Widget != "pk_1" || got.Visitor["email"] != "a@b.c" || got.Agent != testAgent {
		t.Errorf("Dispatch() = %+v", got)
	}
	if len(c.History()) != 0 {
		t.Errorf("history of an empty log: %+v", c.History())
	}
	if c.Logger() == nil {
		t.Error("nil logger")
	}
	holds(t, w, "conv_1")
}

func TestDispatchBadRequests(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	rec := newRecorder()
	w := b.startWorker(agentbridge.Options{}, rec.handle)
	for _, data := range []string{
		``,
		`not json`,
		`{"conversation_id": 5}`,
		`{"v":1,"agent":"support"}`,
		`{"v":1,"conversation_id":"conv.1","agent":"support"}`,
		`{"v":1,"conversation_id":"*","agent":"support"}`,
	} {
		reply, err := b.request(testAgent, []byte(data))
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if reply.Accepted || reply.WorkerID != w.ID() || reply.Reason == "" {
			t.Errorf("%q: reply %+v, want refused with a reason", data, reply)
		}
	}
	holds(t, w) // after bad requests
}

func TestHeartbeatsAndRelease(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_hb"
	hbs := b.subscribe(b.subj.Heartbeat(testAgent))
	rec := newRecorder()
	w := b.startWorker(agentbridge.Options{WorkerID: "wrk_hb", HeartbeatInterval: 20 * time.Millisecond, MaxConversations: 7}, rec.handle)

	hb := nextHeartbeat(t, hbs, "the first heartbeat", func(agentbridge.Heartbeat) bool { return true })
	if hb.V != agentbridge.Version || hb.WorkerID != "wrk_hb" || hb.Agent != testAgent || hb.Capacity != 7 ||
		hb.IntervalMS != 20 || hb.Load != 0 || hb.Conversations == nil || hb.Draining || hb.TS.IsZero() || hb.Seq != 1 {
		t.Fatalf("first heartbeat %+v", hb)
	}

	reply := b.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
	if !reply.Accepted || reply.HeartbeatSeq == 0 {
		t.Fatalf("reply %+v", reply)
	}
	recv(t, rec.convs, "the handler")
	// Every heartbeat composed after the acceptance lists the conversation.
	hb = nextHeartbeat(t, hbs, "a heartbeat after the dispatch", func(hb agentbridge.Heartbeat) bool { return hb.Seq > reply.HeartbeatSeq })
	if hb.Load != 1 || !slices.Equal(hb.Conversations, []string{cid}) {
		t.Fatalf("heartbeat %d after accepting at %d lists %q (load %d)", hb.Seq, reply.HeartbeatSeq, hb.Conversations, hb.Load)
	}
	holds(t, w, cid)

	b.sessionEnded(cid, true)
	if ev := recv(t, rec.events, "session_ended"); ev.Type != agentbridge.EventSessionEnded || !ev.Idle {
		t.Fatalf("event %+v", ev)
	}
	if err := recv(t, rec.done, "the handler to return"); err != nil {
		t.Fatalf("handler returned %v", err)
	}
	hb = nextHeartbeat(t, hbs, "a heartbeat without the conversation", func(hb agentbridge.Heartbeat) bool { return hb.Load == 0 })
	if len(hb.Conversations) != 0 {
		t.Fatalf("heartbeat still lists %q", hb.Conversations)
	}
	agenttest.Poll(t, waitFor, "Conversations() to be empty", func() bool { return len(w.Conversations()) == 0 })

	// Released, the conversation can be dispatched again, with a new handler.
	if reply := b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 2}); !reply.Accepted {
		t.Fatalf("re-dispatch refused: %+v", reply)
	}
	if c := recv(t, rec.convs, "a second handler"); c.Epoch() != 2 {
		t.Fatalf("epoch %d", c.Epoch())
	}
}

func TestIdleTimeoutReleases(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	rec := newRecorder()
	w, _ := b.run(agentbridge.Options{IdleTimeout: 50 * time.Millisecond}, rec, agentbridge.DispatchRequest{ConversationID: "conv_idle"})
	if err := recv(t, rec.done, "the idle conversation to end"); err != nil {
		t.Fatalf("handler returned %v", err)
	}
	agenttest.Poll(t, waitFor, "the release", func() bool { return len(w.Conversations()) == 0 })
}

// TestMaxConversations: a worker holding MaxConversations leaves its
// agent's dispatch queue group, so a dispatch finds no responder at once
// (with another worker, NATS gives it that one), and joins it again when a
// conversation is released.
func TestMaxConversations(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	rec := newRecorder()
	w := b.startWorker(agentbridge.Options{MaxConversations: 2}, rec.handle)
	for _, cid := range []string{"conv_1", "conv_2"} {
		if reply := b.dispatch(agentbridge.DispatchRequest{ConversationID: cid}); !reply.Accepted {
			t.Fatalf("%s refused: %+v", cid, reply)
		}
	}
	holds(t, w, "conv_1", "conv_2")
	recv(t, rec.convs, "the first handler")
	recv(t, rec.convs, "the second handler")
	if reply, err := b.tryDispatch(agentbridge.DispatchRequest{ConversationID: "conv_3"}); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("third dispatch to a full worker: %+v, %v; want no responders", reply, err)
	}
	b.sessionEnded("conv_1", true) // the worker lets conv_1 go
	agenttest.Poll(t, waitFor, "the worker back in the queue after a release", func() bool {
		reply, err := b.tryDispatch(agentbridge.DispatchRequest{ConversationID: "conv_3"})
		return err == nil && reply.Accepted && reply.WorkerID == w.ID()
	})
	holds(t, w, "conv_2", "conv_3")
}

func TestRedispatchRaisesEpoch(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_epoch"
	rec := newRecorder()
	w, c := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1})
	for _, tt := range []struct{ epoch, want uint64 }{{5, 5}, {3, 5}, {5, 5}, {6, 6}} {
		reply := b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: tt.epoch})
		if !reply.Accepted || reply.WorkerID != w.ID() {
			t.Fatalf("re-dispatch at epoch %d: %+v", tt.epoch, reply)
		}
		if got := c.Epoch(); got != tt.want {
			t.Fatalf("after a dispatch at epoch %d the epoch is %d, want %d", tt.epoch, got, tt.want)
		}
	}
	// What the worker writes now carries the new epoch.
	b.userMessage(cid, "msg_1", "hi")
	if ev := b.nextWorkerEvent(w.ID()); ev.Epoch != 6 {
		t.Fatalf("agent event at epoch %d, want 6: %+v", ev.Epoch, ev)
	}
	w.Close()
	if n := len(rec.convs); n != 0 {
		t.Fatalf("%d more handlers started for a held conversation", n)
	}
}

func TestDrainLetsHandlersFinish(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_drain"
	hbs := b.subscribe(b.subj.Heartbeat(testAgent))
	entered := make(chan struct{})
	gate := make(chan struct{})
	replied := make(chan error, 1)
	rec := newRecorder()
	rec.onMessage = func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		close(entered)
		<-gate
		err := c.SendText(ctx, ev.MessageID, "finished while draining")
		replied <- err
		return err
	}
	w := b.startWorker(agentbridge.Options{HeartbeatInterval: time.Hour}, rec.handle)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
	b.userMessage(cid, "msg_1", "slow question")
	recv(t, entered, "the handler to take the message")

	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		drained <- w.Drain(ctx)
	}()
	// The draining heartbeat is sent after the dispatch subscription is gone.
	nextHeartbeat(t, hbs, "a draining heartbeat", func(hb agentbridge.Heartbeat) bool { return hb.Draining })
	reply, err := b.request(testAgent, mustJSON(t, agentbridge.DispatchRequest{V: agentbridge.Version, ConversationID: "conv_new", Agent: testAgent, Epoch: 1}))
	if err == nil && reply.Accepted {
		t.Fatalf("a draining worker accepted a dispatch: %+v", reply)
	}
	if err != nil && !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("dispatch while draining: %v", err)
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while a handler was busy", err)
	default:
	}

	close(gate)
	if err := recv(t, replied, "the reply"); err != nil {
		t.Fatalf("a draining worker's handler could not finish its reply: %v", err)
	}
	if err := recv(t, drained, "Drain"); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if err := recv(t, rec.done, "the handler"); err != nil {
		t.Fatalf("handler: %v", err)
	}
	holds(t, w) // after Drain
	var done agentbridge.Event
	for done.Type != agentbridge.EventTextDone {
		done = b.nextWorkerEvent(w.ID())
	}
	if done.Text != "finished while draining" || done.ReplyTo != "msg_1" {
		t.Fatalf("text_done %+v", done)
	}
	w.Close() // after Drain: a no-op
	if err := w.Drain(context.Background()); err != nil {
		t.Fatalf("Drain of a closed worker: %v", err)
	}
}

func TestDrainWithDoneContextClosesWorker(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	started := make(chan struct{}, 1)
	// This handler ignores Events and only stops when its context ends.
	h := func(ctx context.Context, c *agentbridge.Conversation) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}
	hbs := b.subscribe(b.subj.Heartbeat(testAgent))
	w := b.startWorker(agentbridge.Options{HeartbeatInterval: time.Hour}, h)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: "conv_stuck"})
	recv(t, started, "the handler")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain = %v, want context.Canceled", err)
	}
	// Drain closed the worker: the handler was cancelled and waited for.
	holds(t, w)
	// Its last heartbeat says so, and follows the end of its subscription.
	nextHeartbeat(t, hbs, "the last heartbeat", func(hb agentbridge.Heartbeat) bool { return hb.Draining })
	if _, err := b.request(testAgent, mustJSON(t, agentbridge.DispatchRequest{ConversationID: "conv_2"})); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("dispatch after Drain: %v, want no responders", err)
	}
}

func TestCloseIsIdempotentAndCancelsHandlers(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	rec := newRecorder()
	w := b.startWorker(agentbridge.Options{}, rec.handle)
	for _, cid := range []string{"conv_a", "conv_b"} {
		b.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
		recv(t, rec.convs, "handler "+cid)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(w.Close)
	}
	wg.Wait()
	w.Close()
	// Close returns only once every handler has returned.
	if n := len(rec.done); n != 2 {
		t.Fatalf("%d handlers returned by the time Close did, want 2", n)
	}
	for range 2 {
		// The handler sees its context end or its Events close, whichever first.
		if err := <-rec.done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("handler returned %v, want nil or context.Canceled", err)
		}
	}
	holds(t, w) // after Close
	if err := w.Drain(context.Background()); err != nil {
		t.Fatalf("Drain after Close: %v", err)
	}
}

func TestWorkersShareAgentQueue(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	rec := newRecorder()
	w1 := b.startWorker(agentbridge.Options{WorkerID: "wrk_1", MaxConversations: 1}, rec.handle)
	w2 := b.startWorker(agentbridge.Options{WorkerID: "wrk_2", MaxConversations: 1}, rec.handle)
	// Each dispatch goes to exactly one worker of the queue group.
	accepted := map[string]int{}
	for i := range 6 {
		reply, err := b.tryDispatch(agentbridge.DispatchRequest{ConversationID: "conv_" + string(rune('a'+i))})
		switch {
		case errors.Is(err, nats.ErrNoResponders):
		case err != nil:
			t.Fatal(err)
		case reply.Accepted:
			accepted[reply.WorkerID]++
		default:
			t.Fatalf("dispatch %d declined: %+v", i, reply)
		}
	}
	// A full worker leaves the queue group: the two dispatches that can be
	// taken go one to each worker, never "at capacity" to a full one while
	// the other had room.
	total := len(w1.Conversations()) + len(w2.Conversations())
	if total != 2 || accepted["wrk_1"] != 1 || accepted["wrk_2"] != 1 {
		t.Fatalf("accepted %v, held %d; want one each", accepted, total)
	}
}

// TestWorkerLifecycleLeavesNoGoroutines runs a worker through dispatch,
// replay, a reply, audio, release and Drain on its own server, and checks
// that nothing it started is left running.
func TestWorkerLifecycleLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	srv := agenttest.RunNATS(t, withAuth)
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	b := newBrokerEndOn(t, srv)
	defer b.nc.Close()

	const cid = "conv_leak"
	b.userMessage(cid, "msg_0", "before the dispatch")
	outAudio := b.subscribe(b.subj.OutAudio(testAgent, cid))
	rec := newRecorder()
	rec.onMessage = func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		if err := c.SendAudio(agentbridge.AudioFrame{Seq: 1, Payload: []byte{1}}); err != nil {
			return err
		}
		return c.SendText(ctx, ev.MessageID, "echo: "+ev.Text)
	}
	wnc, err := nats.Connect(srv.ClientURL(), append(agentbridge.ConnectOptions("", testAgent),
		nats.UserInfo(testAgent, agentPass(testAgent)), nats.MaxReconnects(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer wnc.Close()
	w, err := agentbridge.NewWorker(wnc, agentbridge.Options{Agent: testAgent, Logger: quiet,
		HeartbeatInterval: 10 * time.Millisecond}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, ResumeFromSeq: 1, HeadSeq: 1})
	recv(t, rec.convs, "the handler")
	recv(t, outAudio, "agent audio")
	b.userMessage(cid, "msg_1", "live")
	for _, want := range []string{"msg_0", "msg_1"} {
		if ev := recv(t, rec.events, want); ev.MessageID != want {
			t.Fatalf("got %+v, want %s", ev, want)
		}
	}
	b.sessionEnded(cid, true)
	recv(t, rec.done, "the handler to return")

	b.dispatch(agentbridge.DispatchRequest{ConversationID: "conv_leak2"})
	recv(t, rec.convs, "the second handler")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := w.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	w.Close()
}

func TestDispatchAfterReleaseStartsFreshConversation(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_again"
	gate := make(chan struct{})
	closed := make(chan struct{}, 1)
	handlers := make(chan *agentbridge.Conversation, 4)
	events := make(chan agentbridge.Event, 16)
	var n atomic.Int32
	h := func(ctx context.Context, c *agentbridge.Conversation) error {
		handlers <- c
		if n.Add(1) == 1 {
			for range c.Events() {
			}
			// Events are closed but the handler has not returned yet.
			closed <- struct{}{}
			<-gate
			return nil
		}
		for ev := range c.Events() {
			events <- ev
		}
		return nil
	}
	w := b.startWorker(agentbridge.Options{}, h)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1})
	c1 := recv(t, handlers, "the first handler")
	ended := b.sessionEnded(cid, true)
	recv(t, closed, "Events to close")

	// A new session: the broker dispatches the conversation again. The
	// released conversation must not swallow the dispatch.
	reply := b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 2, ResumeFromSeq: 1, HeadSeq: ended})
	if !reply.Accepted {
		t.Fatalf("re-dispatch refused: %+v", reply)
	}
	c2 := recv(t, handlers, "a fresh handler")
	if c2 == c1 || c2.Epoch() != 2 {
		t.Fatalf("re-dispatch reused the released conversation (epoch %d)", c2.Epoch())
	}
	close(gate) // the old handler returns; the new conversation stays
	b.userMessage(cid, "msg_1", "still there?")
	if ev := recv(t, events, "the message"); ev.MessageID != "msg_1" {
		t.Fatalf("event %+v, want msg_1", ev)
	}
	agenttest.Poll(t, waitFor, "the old conversation's release", func() bool {
		return slices.Equal(w.Conversations(), []string{cid})
	})
}

func TestIdleEndBeforeRedispatchDoesNotRelease(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_race"
	gate := make(chan struct{})
	got := make(chan agentbridge.Event, 256)
	h := func(ctx context.Context, c *agentbridge.Conversation) error {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		for ev := range c.Events() {
			got <- ev
		}
		return nil
	}
	w := b.startWorker(agentbridge.Options{}, h)
	head := b.in(cid, agentbridge.Event{Type: agentbridge.EventSessionStarted, Mode: agentbridge.ModeChat})
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1, HeadSeq: head})
	// Fill the handler's Events buffer so that the feed stops before the
	// session_ended below.
	const fill = 80
	for i := range fill {
		b.in(cid, agentbridge.Event{Type: agentbridge.EventModeChanged, Mode: []string{"chat", "voice"}[i%2]})
	}
	ended := b.sessionEnded(cid, true)
	// A new session starts and the conversation is dispatched to us again
	// with a head past that session_ended: it is out of date.
	if reply := b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 2, HeadSeq: ended}); !reply.Accepted {
		t.Fatalf("re-dispatch refused: %+v", reply)
	}
	close(gate)
	for range fill {
		recv(t, got, "a mode change")
	}
	if ev := recv(t, got, "session_ended"); ev.Type != agentbridge.EventSessionEnded || ev.Seq != ended {
		t.Fatalf("event %+v", ev)
	}
	b.userMessage(cid, "msg_new", "new session's message")
	if ev := recv(t, got, "the new session's message"); ev.MessageID != "msg_new" {
		t.Fatalf("event %+v, want msg_new", ev)
	}
	holds(t, w, cid)
}

// TestTakenOverConversationStops: a worker that sees the conversation
// assigned to another worker under a newer epoch (it was thought dead)
// stops: its Events close and it is released. Its own re-assignment does
// not stop it.
func TestTakenOverConversationStops(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_fenced"
	events := make(chan agentbridge.Event, 16)
	done := make(chan struct{})
	w := b.startWorker(agentbridge.Options{}, func(ctx context.Context, c *agentbridge.Conversation) error {
		defer close(done)
		for ev := range c.Events() {
			events <- ev
		}
		return nil
	})
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1})
	agenttest.Poll(t, waitFor, "the conversation held", func() bool { return len(w.Conversations()) == 1 })
	b.in(cid, agentbridge.Event{Type: agentbridge.EventAgentAssigned, WorkerID: w.ID(), Epoch: 1})
	b.userMessage(cid, "msg_1", "hi")
	if ev := recv(t, events, "the message"); ev.Type != agentbridge.EventUserMessage {
		t.Fatalf("got %+v; agent_assigned must not reach handlers", ev)
	}
	b.in(cid, agentbridge.Event{Type: agentbridge.EventAgentAssigned, WorkerID: "wrk_other", Epoch: 2})
	recv(t, done, "the handler to end")
	agenttest.Poll(t, waitFor, "the conversation released", func() bool { return len(w.Conversations()) == 0 })
}

// TestFence: agent events of an epoch older than the latest assignment are
// not admitted.
func TestFence(t *testing.T) {
	t.Parallel()
	var f agentbridge.Fence
	out := func(epoch uint64) *agentbridge.Event {
		return &agentbridge.Event{Type: agentbridge.EventTextDone, Epoch: epoch}
	}
	if !f.Admit(out(1)) || !f.Admit(out(0)) {
		t.Fatal("events before any assignment refused")
	}
	f.Admit(&agentbridge.Event{Type: agentbridge.EventAgentAssigned, Epoch: 3})
	if f.Admit(out(2)) || !f.Admit(out(3)) || !f.Admit(out(4)) || !f.Admit(out(0)) ||
		!f.Admit(&agentbridge.Event{Type: agentbridge.EventUserMessage, Epoch: 1}) || f.Epoch() != 3 {
		t.Fatal("fence admits the wrong events")
	}
}

// TestRedispatchRacingRelease: the last session ends and a new one is
// dispatched at once, so the worker reads session_ended while the new
// dispatch arrives. Whichever comes first, the accepted dispatch must
// leave a live conversation that answers the new session's message.
// Before, the feed decided to release (the old head) while admit, seeing
// the conversation not yet released, answered "already ours": the
// conversation then went away and the message was never answered.
func TestRedispatchRacingRelease(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	got := make(chan agentbridge.Event, 16)
	b.startWorker(agentbridge.Options{}, func(ctx context.Context, c *agentbridge.Conversation) error {
		for ev := range c.Events() {
			if ev.Type == agentbridge.EventUserMessage {
				got <- ev
			}
		}
		return nil
	})
	for i := range 150 {
		cid := fmt.Sprintf("conv_race%d", i)
		b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1})
		ended := b.sessionEnded(cid, true)
		if reply := b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 2, ResumeFromSeq: 1, HeadSeq: ended}); !reply.Accepted {
			t.Fatalf("round %d: re-dispatch refused: %+v", i, reply)
		}
		b.userMessage(cid, "msg_"+cid, "there?")
		if ev := recv(t, got, "round "+cid+"'s message"); ev.MessageID != "msg_"+cid {
			t.Fatalf("round %d: event %+v", i, ev)
		}
	}
}

// TestFeedSurvivesSlowConsumer: a handler busy long enough for NATS to drop
// the conversation's live events (beyond Options.EventBuffer) gets every
// event afterwards, in order, read back from the log; the conversation is
// not let go. Before, the feed took NATS's one-time "slow consumer" error
// for the end of the subscription, released the conversation and closed
// Events: under load the demo agent stopped answering.
func TestFeedSurvivesSlowConsumer(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	b.readLimit = 8 // pages well under NATS's max payload
	const cid, n = "conv_slow", 120
	gate := make(chan struct{})
	got := make(chan agentbridge.Event, n+1)
	b.startWorker(agentbridge.Options{EventBuffer: 256 << 10}, func(ctx context.Context, c *agentbridge.Conversation) error {
		for ev := range c.Events() {
			if ev.Type != agentbridge.EventUserMessage {
				continue
			}
			got <- ev
			if ev.MessageID == "msg_0" {
				<-gate // busy while the others arrive
			}
		}
		return nil
	})
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
	b.userMessage(cid, "msg_0", "first")
	recv(t, got, "the first message")
	replayed := b.reads.Load() // the replay's reads
	text := strings.Repeat("x", 30<<10)
	for i := 1; i <= n; i++ {
		b.userMessage(cid, fmt.Sprintf("msg_%d", i), text)
	}
	close(gate)
	for i := 1; i <= n; i++ {
		if ev := recv(t, got, fmt.Sprintf("message %d", i)); ev.MessageID != fmt.Sprintf("msg_%d", i) {
			t.Fatalf("event %d is %s: out of order or lost", i, ev.MessageID)
		}
	}
	if b.reads.Load() == replayed {
		t.Fatal("nothing was read back from the log: NATS dropped nothing, the test did not test")
	}
}
