package agentbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Handler runs one conversation. It should read c.Events() until the channel
// is closed or ctx is done, answering as it goes, and then return. The
// worker releases the conversation when Handler returns.
type Handler func(ctx context.Context, c *Conversation) error

// Options configure a Worker.
type Options struct {
	// Agent is the agent name the worker serves (required).
	Agent string
	// Prefix is the subject prefix (default DefaultPrefix).
	Prefix string
	// WorkerID identifies the worker (default "wrk_" + a random id).
	WorkerID string
	// MaxConversations caps concurrent conversations (default 1000).
	MaxConversations int
	// HeartbeatInterval is how often the worker heartbeats (default 500 ms;
	// brokers declare a worker dead after agents.heartbeat_timeout, 1.5 s).
	HeartbeatInterval time.Duration
	// IdleTimeout releases a conversation without events for this long
	// (default 10 min; negative disables).
	IdleTimeout time.Duration
	// ReplayTimeout bounds the replay of a conversation's log (default 10 s).
	ReplayTimeout time.Duration
	// GapGrace is how long a live event that arrived ahead of a missing
	// one waits for it (events relayed by several brokers may arrive out
	// of order) before the worker reads the gap from the log (default
	// 20 ms).
	GapGrace time.Duration
	// EventBuffer bounds the bytes of a conversation's live events waiting
	// for its handler (default 64 MiB). Beyond it NATS drops them and the
	// worker reads them back from the log, in order, once the handler
	// catches up: a slow handler costs reads, never events.
	EventBuffer int
	// Logger receives the worker's logs (default slog.Default()).
	Logger *slog.Logger
}

// ConnectOptions returns the options a worker's NATS connection needs for
// agent under prefix: replies to its requests must arrive in the agent's
// namespace (Subjects.Inbox), the only inbox its credentials may
// subscribe to. Pass them to nats.Connect with the agent's credentials.
func ConnectOptions(prefix, agent string) []nats.Option {
	return []nats.Option{nats.CustomInboxPrefix(NewSubjects(prefix).Inbox(agent))}
}

// Worker registers for an agent name on NATS, accepts dispatches and runs a
// Handler per conversation. Workers of one agent share load through a queue
// group. It needs core NATS only: everything durable goes through the
// broker by request/reply.
type Worker struct {
	nc      *nats.Conn
	opts    Options
	subj    Subjects
	id      string
	handler Handler
	log     *slog.Logger

	ctx    context.Context // parent of every handler's context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	quit   chan struct{}
	// released gets a token whenever a conversation is released.
	released chan struct{}

	replies replyMux

	mu       sync.Mutex
	sub      *nats.Subscription
	convs    map[string]*Conversation
	hbSeq    uint64 // Seq of the last heartbeat composed
	draining bool
	closed   bool

	started atomic.Bool
	stopped atomic.Bool

	audioDropped, audioInvalid   atomic.Uint64 // over every conversation
	refills, skipped, duplicates atomic.Uint64
}

// WorkerStats are a worker's counters, summed over every conversation it
// has held. The broker cannot see them (they happen in the agent's
// process): export them to the agent's own metrics.
type WorkerStats struct {
	// AudioDropped: visitor audio frames dropped because a handler did
	// not read Conversation.Audio fast enough.
	AudioDropped uint64
	// AudioInvalid: visitor audio messages dropped because they did not
	// decode as audio frames.
	AudioInvalid uint64
	// Refills: reads of the log that filled a gap in a conversation's
	// live events (an event lost or overtaken on its way).
	Refills uint64
	// EventsSkipped: live events ignored because they did not decode or
	// carry another protocol version.
	EventsSkipped uint64
	// Duplicates: live events dropped because they had been delivered
	// already (by the replay, a refill or a second delivery).
	Duplicates uint64
}

// Stats returns the worker's counters (cheap: atomic loads).
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{AudioDropped: w.audioDropped.Load(), AudioInvalid: w.audioInvalid.Load(),
		Refills: w.refills.Load(), EventsSkipped: w.skipped.Load(), Duplicates: w.duplicates.Load()}
}

// NewWorker builds a worker on an established NATS connection, which must
// use the agent's inbox prefix (ConnectOptions).
func NewWorker(nc *nats.Conn, opts Options, h Handler) (*Worker, error) {
	if nc == nil || h == nil {
		return nil, fmt.Errorf("%w: connection and handler are required", ErrInvalidOptions)
	}
	if !ValidToken(opts.Agent) {
		return nil, fmt.Errorf("%w: agent name %q must be one NATS token", ErrInvalidOptions, opts.Agent)
	}
	if opts.WorkerID == "" {
		opts.WorkerID = "wrk_" + nuid.Next()
	}
	if !ValidToken(opts.WorkerID) {
		return nil, fmt.Errorf("%w: worker id %q must be one NATS token", ErrInvalidOptions, opts.WorkerID)
	}
	if opts.MaxConversations <= 0 {
		opts.MaxConversations = 1000
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 500 * time.Millisecond
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.ReplayTimeout <= 0 {
		opts.ReplayTimeout = 10 * time.Second
	}
	if opts.GapGrace <= 0 {
		opts.GapGrace = DefaultGapGrace
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 64 << 20
	}
	subj := NewSubjects(opts.Prefix)
	if want := subj.Inbox(opts.Agent) + "."; !strings.HasPrefix(nc.NewInbox(), want) {
		return nil, fmt.Errorf("%w: the NATS connection's inbox prefix must be %q, the only inbox agent %q may use: "+
			"connect with agentbridge.ConnectOptions(%q, %q) (nats.CustomInboxPrefix)",
			ErrInvalidOptions, subj.Inbox(opts.Agent), opts.Agent, subj.Prefix, opts.Agent)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Worker{
		nc:       nc,
		opts:     opts,
		subj:     subj,
		id:       opts.WorkerID,
		handler:  h,
		log:      opts.Logger.With("agent", opts.Agent, "worker_id", opts.WorkerID),
		quit:     make(chan struct{}),
		released: make(chan struct{}, 1),
		convs:    make(map[string]*Conversation),
	}
	w.replies.init(nc)
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w, nil
}

// ID returns the worker id.
func (w *Worker) ID() string { return w.id }

// Start subscribes to dispatches and starts heartbeating.
func (w *Worker) Start() error {
	if !w.started.CompareAndSwap(false, true) {
		return nil
	}
	if err := w.replies.start(); err != nil {
		return fmt.Errorf("agentbridge: subscribe replies: %w", err)
	}
	// Under w.mu, so that a dispatch taken at once cannot see the worker
	// out of its queue group (fitQueueLocked) before w.sub is set.
	w.mu.Lock()
	sub, err := w.nc.QueueSubscribe(w.subj.Dispatch(w.opts.Agent), w.opts.Agent, w.onDispatch)
	if err == nil {
		w.sub = sub
	}
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("agentbridge: subscribe dispatch: %w", err)
	}
	// Make the subscription known to the server before announcing ourselves.
	if err := w.nc.Flush(); err != nil {
		return fmt.Errorf("agentbridge: flush: %w", err)
	}
	w.heartbeat()
	w.wg.Add(1)
	go w.heartbeatLoop()
	w.log.Info("agent worker started")
	return nil
}

// Conversations returns the ids of the conversations the worker owns.
func (w *Worker) Conversations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.convs))
	for id, c := range w.convs {
		if !c.released.Load() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func (w *Worker) onDispatch(m *nats.Msg) {
	var req DispatchRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || !ValidToken(req.ConversationID) {
		w.respond(m, DispatchReply{Accepted: false, WorkerID: w.id, Reason: "bad dispatch request"})
		return
	}
	reply, start := w.admit(req)
	w.respond(m, reply)
	if start != nil {
		go w.runConversation(start)
	}
}

// admit decides on a dispatch; a non-nil conversation must be run.
func (w *Worker) admit(req DispatchRequest) (DispatchReply, *Conversation) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed || w.draining:
		return DispatchReply{WorkerID: w.id, Reason: "draining"}, nil
	case w.convs[req.ConversationID] != nil && !w.convs[req.ConversationID].released.Load():
		// Already ours and live: take the newer epoch and carry on.
		c := w.convs[req.ConversationID]
		if req.Epoch > c.Epoch() {
			c.epoch.Store(req.Epoch)
		}
		if req.HeadSeq > c.headSeq.Load() {
			c.headSeq.Store(req.HeadSeq)
		}
		c.dispatchedAt.Store(time.Now().UnixNano())
		return DispatchReply{Accepted: true, WorkerID: w.id, HeartbeatSeq: w.hbSeq}, nil
	case len(w.convs) >= w.opts.MaxConversations:
		return DispatchReply{WorkerID: w.id, Reason: "at capacity"}, nil
	}
	c := newConversation(w.ctx, w, req)
	w.convs[req.ConversationID] = c
	w.wg.Add(1)
	w.fitQueueLocked()
	return DispatchReply{Accepted: true, WorkerID: w.id, HeartbeatSeq: w.hbSeq}, c
}

// fitQueueLocked keeps the worker in its agent's dispatch queue group
// only while it has room: a full worker leaves it, so NATS hands the
// dispatches to workers that can take them (the broker would otherwise
// meet "at capacity" and back off, though another worker had room), and
// joins again when a conversation is released. Called with w.mu held;
// nats.go calls nothing of ours while subscribing or unsubscribing.
func (w *Worker) fitQueueLocked() {
	full := len(w.convs) >= w.opts.MaxConversations
	switch {
	case w.closed || w.draining || !w.started.Load():
	case full && w.sub != nil:
		if err := w.sub.Unsubscribe(); err != nil {
			w.log.Warn("leaving the dispatch queue when full failed", "err", err)
			return
		}
		w.sub = nil
		w.log.Debug("at capacity: out of the dispatch queue", "conversations", len(w.convs))
	case !full && w.sub == nil:
		sub, err := w.nc.QueueSubscribe(w.subj.Dispatch(w.opts.Agent), w.opts.Agent, w.onDispatch)
		if err != nil {
			w.log.Warn("joining the dispatch queue again failed", "err", err)
			return
		}
		w.sub = sub
		w.log.Debug("room again: back in the dispatch queue", "conversations", len(w.convs))
	}
}

func (w *Worker) respond(m *nats.Msg, r DispatchReply) {
	data, _ := json.Marshal(r)
	if err := m.Respond(data); err != nil {
		w.log.Warn("dispatch reply failed", "err", err)
	}
}

// runConversation subscribes to the conversation's events and audio,
// replays its log, feeds events and runs the handler.
func (w *Worker) runConversation(c *Conversation) {
	defer w.wg.Done()
	defer func() {
		c.stop()
		w.mu.Lock()
		if w.convs[c.ID()] == c {
			delete(w.convs, c.ID())
		}
		w.fitQueueLocked()
		w.mu.Unlock()
		select {
		case w.released <- struct{}{}:
		default:
		}
		w.heartbeat()
	}()
	defer c.appends.Wait() // pipelined appends still waiting for their reply
	log := c.log
	audioSub, err := w.nc.Subscribe(w.subj.InAudio(w.opts.Agent, c.ID()), c.onAudio)
	if err != nil {
		log.Error("audio subscribe failed", "err", err)
		return
	}
	defer func() { _ = audioSub.Unsubscribe() }()
	// Live events first, then the replay: whatever is stored after the
	// replay's read arrives on the subscription, and what both deliver is
	// dropped by seq.
	evSub, err := w.nc.SubscribeSync(w.subj.ConvEvent(w.opts.Agent, c.ID()))
	if err != nil {
		log.Error("event subscribe failed", "err", err)
		return
	}
	defer func() { _ = evSub.Unsubscribe() }()
	_ = evSub.SetPendingLimits(-1, w.opts.EventBuffer) // a lost event is a gap, refilled from the log
	if err := w.nc.Flush(); err != nil {
		log.Error("event subscribe failed", "err", err)
		return
	}

	rctx, cancel := context.WithTimeout(c.feedCtx, w.opts.ReplayTimeout)
	live, last, err := c.replay(rctx)
	cancel()
	if err != nil {
		log.Error("replay failed", "err", err)
		return
	}
	log.Debug("conversation replayed", "history", len(c.history), "pending", len(c.pending), "last_seq", last)

	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		c.feed(evSub, live, last)
	}()
	// The handler's context is the worker's, not the feed's: Drain stops the
	// feed (closing Events) but lets the handler finish the event it is on;
	// only Close cancels it.
	if err := w.handler(w.ctx, c); err != nil {
		log.Warn("handler returned an error", "err", err)
	}
	c.stop()
	// Unblock a feeder waiting on a full channel, then wait for it.
	for range c.events {
	}
	<-feedDone
}

func (w *Worker) heartbeatLoop() {
	defer w.wg.Done()
	t := time.NewTicker(w.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-t.C:
			w.heartbeat()
		}
	}
}

func (w *Worker) heartbeat() {
	w.mu.Lock()
	w.hbSeq++
	hb := Heartbeat{
		V: Version, WorkerID: w.id, Seq: w.hbSeq, Agent: w.opts.Agent,
		Load: len(w.convs), Capacity: w.opts.MaxConversations,
		Draining: w.draining || w.closed, IntervalMS: w.opts.HeartbeatInterval.Milliseconds(),
		TS: time.Now().UTC(), Conversations: make([]string, 0, len(w.convs)),
	}
	for id, c := range w.convs {
		if !c.released.Load() { // a released one ends its handler; a dispatch starts afresh
			hb.Conversations = append(hb.Conversations, id)
		}
	}
	w.mu.Unlock()
	sort.Strings(hb.Conversations)
	// Read at every beat: a reconnect gives the connection a new identity.
	hb.NATSServerID = w.nc.ConnectedServerId()
	if cid, err := w.nc.GetClientID(); err == nil {
		hb.NATSClientID = cid
	}
	data, _ := json.Marshal(hb)
	if err := w.nc.Publish(w.subj.Heartbeat(w.opts.Agent), data); err != nil && !w.nc.IsClosed() {
		w.log.Debug("heartbeat failed", "err", err)
	}
}

// Drain stops accepting conversations, lets every handler finish the event
// it is on (its Events channel is closed) and waits for them until ctx is
// done; then it closes the worker.
func (w *Worker) Drain(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.draining = true
	sub := w.sub
	convs := make([]*Conversation, 0, len(w.convs))
	for _, c := range w.convs {
		convs = append(convs, c)
	}
	w.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
		_ = w.nc.FlushTimeout(time.Second) // so dispatches find no responder at once
	}
	for _, c := range convs {
		c.stop()
	}
	w.heartbeat()
	var err error
	for err == nil {
		w.mu.Lock()
		n := len(w.convs)
		w.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-w.released:
		}
	}
	w.Close()
	return err
}

// Close stops the worker at once: handlers' contexts are cancelled and
// waited for. It is idempotent.
func (w *Worker) Close() {
	if !w.stopped.CompareAndSwap(false, true) {
		return
	}
	w.mu.Lock()
	w.closed = true
	sub := w.sub
	w.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
		_ = w.nc.FlushTimeout(time.Second)
	}
	close(w.quit)
	w.cancel()
	w.wg.Wait() // handlers and their appends are done
	w.replies.stop()
	w.heartbeat()
	w.log.Info("agent worker stopped")
}
