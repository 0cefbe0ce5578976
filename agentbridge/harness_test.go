package agentbridge_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// waitFor bounds every wait of these tests. It is a safety net against a
// hang, not a timing assertion: nothing is expected to take this long.
const waitFor = 15 * time.Second

const testAgent = "support"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// runJetStream starts an in-process JetStream server on an ephemeral port.
func runJetStream(t testing.TB) *server.Server {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	s := natstest.RunServer(&opts)
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// fakeBroker plays the broker's side of the protocol on a real server: it
// owns the conversation log stream and sends dispatches.
type fakeBroker struct {
	t    testing.TB
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	subj agentbridge.Subjects
}

func newFakeBroker(t testing.TB) *fakeBroker {
	t.Helper()
	srv := runJetStream(t)
	return newFakeBrokerOn(t, srv)
}

func newFakeBrokerOn(t testing.TB, srv *server.Server) *fakeBroker {
	t.Helper()
	nc := connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subj := agentbridge.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	// The stream as the broker creates it.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     subj.StreamName(),
		Subjects: subj.LogSubjects(),
		Storage:  jetstream.FileStorage,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return &fakeBroker{t: t, srv: srv, nc: nc, js: js, subj: subj}
}

func (b *fakeBroker) append(subject string, ev agentbridge.Event) uint64 {
	b.t.Helper()
	ev.V = agentbridge.Version
	if ev.TS.IsZero() {
		ev.TS = time.Now().UTC()
	}
	data, err := json.Marshal(ev)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ack, err := b.js.Publish(ctx, subject, data)
	if err != nil {
		b.t.Fatalf("publish %s: %v", ev.Type, err)
	}
	return ack.Sequence
}

// in appends a broker event to the conversation log and returns its seq.
func (b *fakeBroker) in(cid string, ev agentbridge.Event) uint64 {
	ev.ConversationID = cid
	return b.append(b.subj.InEvent(cid), ev)
}

// out appends an agent event (as if written by some worker).
func (b *fakeBroker) out(cid string, ev agentbridge.Event) uint64 {
	ev.ConversationID = cid
	return b.append(b.subj.OutEvent(cid), ev)
}

func (b *fakeBroker) userMessage(cid, id, text string) uint64 {
	return b.in(cid, agentbridge.Event{Type: agentbridge.EventUserMessage, MessageID: id, Text: text, Via: "chat"})
}

func (b *fakeBroker) sessionEnded(cid string, idle bool) uint64 {
	return b.in(cid, agentbridge.Event{Type: agentbridge.EventSessionEnded, Idle: idle, Reason: "closed"})
}

// request sends raw data to the agent's dispatch subject.
func (b *fakeBroker) request(agent string, data []byte) (agentbridge.DispatchReply, error) {
	var reply agentbridge.DispatchReply
	m, err := b.nc.Request(b.subj.Dispatch(agent), data, waitFor)
	if err != nil {
		return reply, err
	}
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		b.t.Fatalf("dispatch reply %q: %v", m.Data, err)
	}
	return reply, nil
}

func (b *fakeBroker) dispatch(req agentbridge.DispatchRequest) agentbridge.DispatchReply {
	b.t.Helper()
	req.V = agentbridge.Version
	if req.Agent == "" {
		req.Agent = testAgent
	}
	if req.Mode == "" {
		req.Mode = agentbridge.ModeChat
	}
	data, err := json.Marshal(req)
	if err != nil {
		b.t.Fatal(err)
	}
	reply, err := b.request(req.Agent, data)
	if err != nil {
		b.t.Fatalf("dispatch %s: %v", req.ConversationID, err)
	}
	return reply
}

// subscribe returns a channel subscription on subject, flushed so that it
// is known to the server.
func (b *fakeBroker) subscribe(subject string) chan *nats.Msg {
	b.t.Helper()
	ch := make(chan *nats.Msg, 1024)
	sub, err := b.nc.ChanSubscribe(subject, ch)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := b.nc.Flush(); err != nil {
		b.t.Fatal(err)
	}
	return ch
}

// startWorker starts a worker on its own connection; it is closed when the
// test ends.
func (b *fakeBroker) startWorker(opts agentbridge.Options, h agentbridge.Handler) *agentbridge.Worker {
	b.t.Helper()
	if opts.Agent == "" {
		opts.Agent = testAgent
	}
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	nc := connect(b.t, b.srv)
	w, err := agentbridge.NewWorker(nc, opts, h)
	if err != nil {
		b.t.Fatalf("NewWorker: %v", err)
	}
	if err := w.Start(); err != nil {
		b.t.Fatalf("Start: %v", err)
	}
	b.t.Cleanup(w.Close) // runs before nc.Close
	return w
}

// recv waits for one value from ch.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// eventually polls cond until it holds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-poll.C:
		}
	}
}

func decodeEvent(t testing.TB, m *nats.Msg) agentbridge.Event {
	t.Helper()
	var ev agentbridge.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatalf("decode %q: %v", m.Data, err)
	}
	return ev
}

// nextWorkerEvent returns the next event on ch written by workerID,
// skipping events other writers put there.
func nextWorkerEvent(t testing.TB, ch <-chan *nats.Msg, workerID string) agentbridge.Event {
	t.Helper()
	for {
		ev := decodeEvent(t, recv(t, ch, "an agent event"))
		if ev.WorkerID == workerID {
			return ev
		}
	}
}

// recorder is a handler that hands its conversations and everything they
// deliver to the test, and can be told what to do on each event.
type recorder struct {
	convs   chan *agentbridge.Conversation
	events  chan agentbridge.Event
	frames  chan agentbridge.AudioFrame
	done    chan error
	onEvent func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error
}

func newRecorder() *recorder {
	return &recorder{
		convs:  make(chan *agentbridge.Conversation, 16),
		events: make(chan agentbridge.Event, 256),
		frames: make(chan agentbridge.AudioFrame, 256),
		done:   make(chan error, 16),
	}
}

func (r *recorder) handle(ctx context.Context, c *agentbridge.Conversation) (err error) {
	r.convs <- c
	defer func() { r.done <- err }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f := <-c.Audio():
			select {
			case r.frames <- f:
			default:
			}
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			select {
			case r.events <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
			if r.onEvent != nil {
				if err := r.onEvent(ctx, c, ev); err != nil {
					return err
				}
			}
		}
	}
}

type evSummary struct {
	Type, MessageID string
	Seq             uint64
}

func summarize(evs []agentbridge.Event) []evSummary {
	out := make([]evSummary, len(evs))
	for i, ev := range evs {
		out[i] = evSummary{ev.Type, ev.MessageID, ev.Seq}
	}
	return out
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
