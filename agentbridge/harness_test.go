package agentbridge_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// waitFor bounds every wait of these tests. It is a safety net against a
// hang, not a timing assertion: nothing is expected to take this long.
const waitFor = 15 * time.Second

const testAgent = "support"

// testAgents have NATS users on the test server, with exactly the
// permissions protocol v2 gives an agent.
var testAgents = []string{testAgent, "sales", "x", "other"}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const brokerUser, brokerPass = "broker", "broker-pw"

func agentPass(agent string) string { return "pw-" + agent }

// agentPermissions are agent's NATS permissions under prefix (V2.md):
// its own namespace only, and answers to dispatch requests.
func agentPermissions(prefix, agent string) *server.Permissions {
	ns := agentbridge.NewSubjects(prefix).Agent(agent)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			ns + ".heartbeat", ns + ".append", ns + ".append.*", ns + ".read", ns + ".conv.*.out.audio"}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			ns + ".dispatch", ns + ".conv.*.event", ns + ".conv.*.in.audio", ns + ".inbox.>"}},
		Response: &server.ResponsePermission{MaxMsgs: 1},
	}
}

// withAuth turns an in-process server's authentication on, JetStream
// off: a broker user allowed everything and one user per test agent.
func withAuth(o *server.Options) {
	o.JetStream = false
	o.Users = []*server.User{{Username: brokerUser, Password: brokerPass}}
	for _, a := range testAgents {
		o.Users = append(o.Users, &server.User{Username: a, Password: agentPass(a),
			Permissions: agentPermissions("", a)})
	}
}

// runServer starts an in-process NATS server (core only, authentication
// on) on an ephemeral port.
func runServer(t testing.TB) *server.Server {
	t.Helper()
	return agenttest.RunNATS(t, withAuth)
}

// connect connects without credentials (servers without authentication).
func connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), append([]nats.Option{nats.MaxReconnects(0)}, opts...)...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// connectAgent connects as agent, with its inbox prefix.
func connectAgent(t testing.TB, s *server.Server, agent string) *nats.Conn {
	t.Helper()
	return connect(t, s, append(agentbridge.ConnectOptions("", agent), nats.UserInfo(agent, agentPass(agent)))...)
}

// brokerEnd is the broker's end of protocol v2, kept as small as the SDK's
// tests need, on a real NATS server: it sends dispatches, answers appends
// (validated with DecodeAgentEvent, then checked against the conversation's
// holder and epoch) and reads from a log it keeps in memory, numbering
// events with one counter for every conversation as the stream does, and
// publishes every stored event with its seq and prev_seq on the
// conversation's ConvEvent subject. Tests can hold back or reorder those
// live deliveries, refuse appends with a code, or leave them unanswered.
type brokerEnd struct {
	t    testing.TB
	srv  *server.Server
	nc   *nats.Conn
	subj agentbridge.Subjects
	id   string

	// appends receives every append request as it arrived.
	appends    chan appendSeen
	reads      atomic.Int64
	appendSubs []*nats.Subscription

	mu    sync.Mutex
	seq   uint64
	convs map[string]*convRecord
	keys  map[string]uint64 // "<cid>/<Nats-Msg-Id>" → seq
	// readLimit caps the events of one read reply (0: MaxReadEvents).
	readLimit int
	// readUpTo, when set, hides later events from reads: a NATS replica
	// a little behind the stream leader.
	readUpTo uint64
	// refuse, when set, may refuse an append with a coded error.
	refuse func(a appendSeen) *agentbridge.ProtocolError
	// mute, when set, stores an append but sends no reply.
	mute func(a appendSeen) bool
	// hold, when set, keeps a stored event off the live subject.
	hold func(ev agentbridge.Event) bool
}

// appendSeen is one append request as the broker received it.
type appendSeen struct {
	Subject string
	MsgID   string
	Raw     []byte
	Sent    agentbridge.Event // the body as the SDK wrote it
}

type convRecord struct {
	agent  string
	worker string // holder, from the last accepted dispatch
	epoch  uint64
	events []agentbridge.Event
}

// noBroker as a DispatchRequest's Broker sends a dispatch naming none.
const noBroker = "-"

func newBrokerEnd(t testing.TB) *brokerEnd {
	t.Helper()
	return newBrokerEndOn(t, runServer(t))
}

func newBrokerEndOn(t testing.TB, srv *server.Server) *brokerEnd {
	t.Helper()
	b := &brokerEnd{t: t, srv: srv, subj: agentbridge.NewSubjects(""), id: "brk_test",
		appends: make(chan appendSeen, 4096),
		convs:   make(map[string]*convRecord), keys: make(map[string]uint64)}
	b.nc = connect(t, srv, nats.UserInfo(brokerUser, brokerPass))
	if _, err := b.nc.QueueSubscribe(b.subj.AllReads(), agentbridge.BrokerQueue, b.onRead); err != nil {
		t.Fatal(err)
	}
	b.resumeAppends()
	return b
}

// resumeAppends (re)subscribes to the append subjects.
func (b *brokerEnd) resumeAppends() {
	b.t.Helper()
	for _, s := range []struct{ subject, queue string }{
		{b.subj.AllAppends(), agentbridge.BrokerQueue},
		{b.subj.AllAppendsTo(b.id), ""},
	} {
		sub, err := b.nc.QueueSubscribe(s.subject, s.queue, b.onAppend)
		if err != nil {
			b.t.Fatal(err)
		}
		b.appendSubs = append(b.appendSubs, sub)
	}
	if err := b.nc.Flush(); err != nil {
		b.t.Fatal(err)
	}
}

// pauseAppends unsubscribes from the append subjects: appends find no
// responders, as when every broker is gone.
func (b *brokerEnd) pauseAppends() {
	b.t.Helper()
	for _, sub := range b.appendSubs {
		if err := sub.Unsubscribe(); err != nil {
			b.t.Fatal(err)
		}
	}
	b.appendSubs = nil
	if err := b.nc.Flush(); err != nil {
		b.t.Fatal(err)
	}
}

// reply answers a request. Errors are dropped: they come from a connection
// closed at the end of a test, and a lost reply is what the SDK must
// survive anyway.
func (b *brokerEnd) reply(m *nats.Msg, v any) {
	_ = m.Respond(mustJSON(b.t, v))
}

func (b *brokerEnd) onAppend(m *nats.Msg) {
	a := appendSeen{Subject: m.Subject, MsgID: m.Header.Get(agentbridge.HeaderMsgID), Raw: m.Data}
	_ = json.Unmarshal(m.Data, &a.Sent)
	b.appends <- a
	b.mu.Lock()
	refuse, mute := b.refuse, b.mute
	b.mu.Unlock()
	ev, perr := agentbridge.DecodeAgentEvent(m.Data, agentbridge.Limits{})
	if perr == nil && refuse != nil {
		perr = refuse(a)
	}
	if perr != nil {
		b.reply(m, agentbridge.AppendReply{Error: perr})
		return
	}
	agent, _ := b.subj.AgentFromSubject(m.Subject)
	b.mu.Lock()
	rec := b.convs[ev.ConversationID]
	switch {
	case rec == nil || rec.agent != agent:
		perr = &agentbridge.ProtocolError{Code: agentbridge.CodeUnknownConversation, Message: "no such conversation"}
	case ev.WorkerID != rec.worker:
		perr = &agentbridge.ProtocolError{Code: agentbridge.CodeNotHolder, Message: "held by " + rec.worker}
	case ev.Epoch < rec.epoch:
		perr = &agentbridge.ProtocolError{Code: agentbridge.CodeStaleEpoch, Message: "stale epoch"}
	}
	key := ev.ConversationID + "/" + a.MsgID
	if seq, ok := b.keys[key]; perr == nil && ok && a.MsgID != "" {
		b.mu.Unlock()
		b.reply(m, agentbridge.AppendReply{Seq: seq, Duplicate: true})
		return
	}
	b.mu.Unlock()
	if perr != nil {
		b.reply(m, agentbridge.AppendReply{Error: perr})
		return
	}
	stored := b.commit(ev, key)
	if mute != nil && mute(a) {
		return
	}
	b.reply(m, agentbridge.AppendReply{Seq: stored.Seq})
}

func (b *brokerEnd) onRead(m *nats.Msg) {
	b.reads.Add(1)
	var req agentbridge.ReadRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.V != agentbridge.Version {
		b.reply(m, agentbridge.ReadReply{Error: &agentbridge.ProtocolError{Code: agentbridge.CodeBadEvent, Message: "bad read"}})
		return
	}
	agent, _ := b.subj.AgentFromSubject(m.Subject)
	b.mu.Lock()
	rec := b.convs[req.ConversationID]
	if rec == nil || rec.agent != agent {
		b.mu.Unlock()
		b.reply(m, agentbridge.ReadReply{Error: &agentbridge.ProtocolError{Code: agentbridge.CodeUnknownConversation, Message: "no such conversation"}})
		return
	}
	limit := agentbridge.MaxReadEvents
	if req.Limit > 0 && req.Limit < limit {
		limit = req.Limit
	}
	if b.readLimit > 0 {
		limit = min(limit, b.readLimit)
	}
	rep := agentbridge.ReadReply{Events: []agentbridge.Event{}}
	for _, ev := range rec.events {
		if ev.Seq < req.FromSeq {
			continue
		}
		if b.readUpTo > 0 && ev.Seq > b.readUpTo {
			break
		}
		if len(rep.Events) == limit {
			rep.More = true
			break
		}
		rep.Events = append(rep.Events, ev)
	}
	b.mu.Unlock()
	b.reply(m, rep)
}

// conv returns cid's record, made for agent when new. Call with b.mu held.
func (b *brokerEnd) conv(cid, agent string) *convRecord {
	rec := b.convs[cid]
	if rec == nil {
		rec = &convRecord{agent: agent}
		b.convs[cid] = rec
	}
	return rec
}

// commit stores ev in its conversation's log (key: its idempotency key,
// or "") and publishes it live unless held.
func (b *brokerEnd) commit(ev agentbridge.Event, key string) agentbridge.Event {
	b.mu.Lock()
	rec := b.conv(ev.ConversationID, testAgent)
	b.seq++
	ev.Seq = b.seq
	ev.PrevSeq = 0
	if n := len(rec.events); n > 0 {
		ev.PrevSeq = rec.events[n-1].Seq
	}
	if ev.TS.IsZero() {
		ev.TS = time.Now().UTC()
	}
	rec.events = append(rec.events, ev)
	if key != "" {
		b.keys[key] = ev.Seq
	}
	hold := b.hold
	agent := rec.agent
	b.mu.Unlock()
	if hold == nil || !hold(ev) {
		b.publish(agent, ev)
	}
	return ev
}

// publish sends ev live on its conversation's event subject.
func (b *brokerEnd) publish(agent string, ev agentbridge.Event) {
	_ = b.nc.Publish(b.subj.ConvEvent(agent, ev.ConversationID), mustJSON(b.t, ev)) // as reply
}

// events returns a copy of cid's log.
func (b *brokerEnd) events(cid string) []agentbridge.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	if rec := b.convs[cid]; rec != nil {
		return append([]agentbridge.Event(nil), rec.events...)
	}
	return nil
}

// in stores a broker event in the conversation log and returns its seq.
func (b *brokerEnd) in(cid string, ev agentbridge.Event) uint64 {
	ev.V = agentbridge.Version
	ev.ConversationID = cid
	return b.commit(ev, "").Seq
}

// out stores an agent event as if written by some worker, unchecked.
func (b *brokerEnd) out(cid string, ev agentbridge.Event) uint64 {
	return b.in(cid, ev)
}

func (b *brokerEnd) userMessage(cid, id, text string) uint64 {
	return b.in(cid, agentbridge.Event{Type: agentbridge.EventUserMessage, MessageID: id, Text: text, Via: "chat"})
}

func (b *brokerEnd) sessionEnded(cid string, idle bool) uint64 {
	return b.in(cid, agentbridge.Event{Type: agentbridge.EventSessionEnded, Idle: idle, Reason: "closed"})
}

// request sends raw data to the agent's dispatch subject.
func (b *brokerEnd) request(agent string, data []byte) (agentbridge.DispatchReply, error) {
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

// dispatch sends req (epoch 1 and this broker by default) and, when it is
// accepted, records the worker as the conversation's holder.
func (b *brokerEnd) dispatch(req agentbridge.DispatchRequest) agentbridge.DispatchReply {
	b.t.Helper()
	reply, err := b.tryDispatch(req)
	if err != nil {
		b.t.Fatalf("dispatch %s: %v", req.ConversationID, err)
	}
	return reply
}

// tryDispatch is dispatch that returns the request's error (no
// responders: no worker of the agent is in its dispatch queue).
func (b *brokerEnd) tryDispatch(req agentbridge.DispatchRequest) (agentbridge.DispatchReply, error) {
	b.t.Helper()
	req.V = agentbridge.Version
	if req.Agent == "" {
		req.Agent = testAgent
	}
	if req.Mode == "" {
		req.Mode = agentbridge.ModeChat
	}
	if req.Epoch == 0 {
		req.Epoch = 1
	}
	switch req.Broker {
	case "":
		req.Broker = b.id
	case noBroker:
		req.Broker = ""
	}
	b.mu.Lock()
	rec := b.conv(req.ConversationID, req.Agent)
	b.mu.Unlock()
	reply, err := b.request(req.Agent, mustJSON(b.t, req))
	if err != nil {
		return reply, err
	}
	if reply.Accepted {
		b.mu.Lock()
		rec.worker, rec.epoch = reply.WorkerID, max(rec.epoch, req.Epoch)
		b.mu.Unlock()
	}
	return reply, nil
}

// subscribe returns a channel subscription on subject, flushed so that it
// is known to the server.
func (b *brokerEnd) subscribe(subject string) chan *nats.Msg {
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

// startWorker starts a worker on its own agent connection; it is closed
// when the test ends.
func (b *brokerEnd) startWorker(opts agentbridge.Options, h agentbridge.Handler) *agentbridge.Worker {
	b.t.Helper()
	if opts.Agent == "" {
		opts.Agent = testAgent
	}
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	nc := connectAgent(b.t, b.srv, opts.Agent)
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

// run starts a worker that hands its conversations to rec, dispatches req
// to it and waits for the handler; it returns the worker and the
// handler's conversation.
func (b *brokerEnd) run(opts agentbridge.Options, rec *recorder, req agentbridge.DispatchRequest) (*agentbridge.Worker, *agentbridge.Conversation) {
	b.t.Helper()
	w := b.startWorker(opts, rec.handle)
	if reply := b.dispatch(req); !reply.Accepted {
		b.t.Fatalf("dispatch %s refused: %+v", req.ConversationID, reply)
	}
	return w, recv(b.t, rec.convs, "the handler")
}

// holds fails t unless w holds exactly the conversations want, in order.
func holds(t testing.TB, w *agentbridge.Worker, want ...string) {
	t.Helper()
	if ids := w.Conversations(); !slices.Equal(ids, want) {
		t.Fatalf("Conversations() = %q, want %q", ids, want)
	}
}

// nextHeartbeat returns the first heartbeat from hbs for which cond holds,
// skipping earlier ones.
func nextHeartbeat(t testing.TB, hbs <-chan *nats.Msg, what string, cond func(agentbridge.Heartbeat) bool) agentbridge.Heartbeat {
	t.Helper()
	for {
		var hb agentbridge.Heartbeat
		m := recv(t, hbs, what)
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			t.Fatalf("heartbeat %q: %v", m.Data, err)
		}
		if cond(hb) {
			return hb
		}
	}
}

// nextAppend returns the next append request sent by workerID, skipping
// other workers'.
func (b *brokerEnd) nextAppend(workerID string) appendSeen {
	b.t.Helper()
	for {
		a := recv(b.t, b.appends, "an append")
		if a.Sent.WorkerID == workerID {
			return a
		}
	}
}

// nextWorkerEvent returns the next event workerID sent, as sent.
func (b *brokerEnd) nextWorkerEvent(workerID string) agentbridge.Event {
	b.t.Helper()
	return b.nextAppend(workerID).Sent
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

// recorder is a handler that hands its conversations and everything they
// deliver to the test, and can be told what to do on each visitor
// message (onMessage runs after the message is recorded; an error from it
// ends the handler).
type recorder struct {
	convs     chan *agentbridge.Conversation
	events    chan agentbridge.Event
	frames    chan agentbridge.AudioFrame
	done      chan error
	onMessage func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error
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
			if r.onMessage != nil && ev.Type == agentbridge.EventUserMessage {
				if err := r.onMessage(ctx, c, ev); err != nil {
					return err
				}
			}
		}
	}
}

// next waits for the next event the handler got and fails t unless it is
// the visitor message id.
func (r *recorder) next(t testing.TB, id string) agentbridge.Event {
	t.Helper()
	ev := recv(t, r.events, id)
	if ev.MessageID != id {
		t.Fatalf("got %+v, want %s", ev, id)
	}
	return ev
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
