package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// agentBus serves the agents' requests (protocol v2): appends, which it
// validates and stores through the log writer, and reads of a
// conversation's log. The agent of a request is the one of the subject it
// came on (NATS lets only that agent's credentials publish there), never
// anything in its body.
//
// Appends of one conversation are handled in arrival order, one at a time,
// by a goroutine that runs while the conversation has appends queued;
// different conversations are handled concurrently.
//
// Lock order: agentBus.mu, holderCache.mu and agentBus.logMu are leaves.
type agentBus struct {
	b      *Broker
	limits agentbridge.Limits

	holders holderCache

	mu     sync.Mutex
	queues map[string]*appendQueue
	subs   []*nats.Subscription

	readSem chan struct{}

	logMu  sync.Mutex
	logged map[string]struct{} // agent/worker/code refusals already logged

	// recordWaits counts appends that waited for the conversation record
	// to reach their epoch.
	recordWaits atomic.Uint64
}

// appendQueue holds one conversation's appends waiting to be handled.
type appendQueue struct {
	jobs    []appendJob
	running bool
}

type appendJob struct {
	msg   *nats.Msg
	agent string
	ev    agentbridge.Event
	msgID string
}

// Bounds of the agent bus.
const (
	// maxQueuedAppends bounds one conversation's waiting appends; beyond
	// it appends are refused with STORE_UNAVAILABLE (retryable).
	maxQueuedAppends = 4096
	// appendTimeout bounds the handling of one append.
	appendTimeout = 10 * time.Second
	// holderWait is how long an append whose epoch is above the
	// conversation record's waits for the record to catch up (the new
	// worker may append before its acceptance is stored). It is well within
	// one attempt of the worker's request, so that a refusal reaches the
	// worker while it still waits for it: a refusal sent after the
	// attempt gave up is never read, and every retry would wait again.
	holderWait = agentbridge.AppendAttemptTimeout / 2
	// maxLoggedRefusals bounds the (worker, reason) pairs remembered as
	// logged.
	maxLoggedRefusals = 4096
	// maxConcurrentReads bounds the reads served at once.
	maxConcurrentReads = 16
	// maxHolders bounds the holder cache.
	maxHolders = 16384
	// holderTTL bounds how long a cached holder is trusted without
	// reading the record again (a status notice lost, a conversation
	// deleted by another broker).
	holderTTL = 2 * time.Second
)

func newAgentBus(b *Broker) *agentBus {
	return &agentBus{b: b,
		limits: agentbridge.Limits{MaxDeltaBytes: b.cfg.Agents.MaxDeltaBytes,
			MaxReplyBytes: b.cfg.Agents.MaxReplyBytes, MaxActionBytes: b.cfg.Agents.MaxActionBytes},
		holders: holderCache{m: make(map[string]holder)},
		queues:  make(map[string]*appendQueue),
		readSem: make(chan struct{}, maxConcurrentReads),
		logged:  make(map[string]struct{}),
	}
}

// start subscribes to the agents' append, read and upload subjects (shared by the
// brokers' queue group, and this broker's own append subject) and to the
// brokers' status notices (to keep the holder cache fresh).
func (a *agentBus) start() error {
	b := a.b
	type sub struct {
		subject, queue string
		cb             nats.MsgHandler
	}
	for _, s := range []sub{
		{b.subj.AllAppends(), agentbridge.BrokerQueue, a.onAppend},
		{b.subj.AllAppendsTo(b.id), "", a.onAppend},
		{b.subj.AllReads(), agentbridge.BrokerQueue, a.onRead},
		{b.subj.AllUploads(), agentbridge.BrokerQueue, b.serveUpload},
		{b.subj.Status("*"), "", a.onStatus},
	} {
		ns, err := b.nc.QueueSubscribe(s.subject, s.queue, s.cb)
		if err != nil {
			a.stop()
			return fmt.Errorf("broker: subscribe %s: %w", s.subject, err)
		}
		a.mu.Lock()
		a.subs = append(a.subs, ns)
		a.mu.Unlock()
	}
	return nil
}

// stop unsubscribes; the goroutines handling queued appends end with the
// broker's context (Close waits for them).
func (a *agentBus) stop() {
	a.mu.Lock()
	subs := a.subs
	a.subs = nil
	a.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

// onAppend checks what can be checked without state on the delivery
// goroutine, then queues the append behind its conversation's others.
func (a *agentBus) onAppend(m *nats.Msg) {
	b := a.b
	agent, ok := b.subj.AgentFromSubject(m.Subject)
	if !ok || m.Reply == "" {
		return
	}
	ev, perr := agentbridge.DecodeAgentEvent(m.Data, a.limits)
	if perr != nil {
		a.refuse(m, agent, rawWorkerID(m.Data), "", perr)
		return
	}
	msgID := newID("app_")
	if key := m.Header.Get(agentbridge.HeaderMsgID); key != "" {
		if !agentbridge.ValidMsgID(key) {
			a.refuse(m, agent, ev.WorkerID, ev.ConversationID, &agentbridge.ProtocolError{Code: agentbridge.CodeBadEvent,
				Message: fmt.Sprintf("%s must be 1-%d printable ASCII characters", agentbridge.HeaderMsgID, agentbridge.MaxMsgIDLen)})
			return
		}
		msgID = ev.ConversationID + "/" + key
	}
	if !b.ready.Load() {
		a.refuse(m, agent, ev.WorkerID, ev.ConversationID, &agentbridge.ProtocolError{Code: agentbridge.CodeNotReady, Message: "the broker is not ready"})
		return
	}
	a.enqueue(appendJob{msg: m, agent: agent, ev: ev, msgID: msgID})
}

func (a *agentBus) enqueue(job appendJob) {
	cid := job.ev.ConversationID
	a.mu.Lock()
	q := a.queues[cid]
	if q == nil {
		q = &appendQueue{}
		a.queues[cid] = q
	}
	if len(q.jobs) >= maxQueuedAppends {
		a.mu.Unlock()
		a.refuse(job.msg, job.agent, job.ev.WorkerID, cid, &agentbridge.ProtocolError{Code: agentbridge.CodeStoreUnavailable,
			Message: "too many appends waiting for this conversation; retry"})
		return
	}
	q.jobs = append(q.jobs, job)
	start := !q.running
	q.running = true
	a.mu.Unlock()
	if start && !a.b.goroutine(func() { a.drain(cid, q) }) {
		a.mu.Lock()
		jobs := q.jobs
		q.jobs, q.running = nil, false
		delete(a.queues, cid)
		a.mu.Unlock()
		for _, j := range jobs {
			a.refuse(j.msg, j.agent, j.ev.WorkerID, cid, &agentbridge.ProtocolError{Code: agentbridge.CodeNotReady, Message: "the broker is shutting down"})
		}
	}
}

// drain handles cid's queued appends in order and returns when none is
// left.
func (a *agentBus) drain(cid string, q *appendQueue) {
	for {
		a.mu.Lock()
		if len(q.jobs) == 0 {
			q.running = false
			if a.queues[cid] == q {
				delete(a.queues, cid)
			}
			a.mu.Unlock()
			return
		}
		job := q.jobs[0]
		q.jobs[0] = appendJob{}
		q.jobs = q.jobs[1:]
		a.mu.Unlock()
		a.handle(job)
	}
}

// handle checks that the worker holds the conversation, stores the event
// and answers.
func (a *agentBus) handle(job appendJob) {
	b := a.b
	ev := &job.ev
	if b.ctx.Err() != nil {
		a.refuse(job.msg, job.agent, ev.WorkerID, ev.ConversationID, &agentbridge.ProtocolError{Code: agentbridge.CodeNotReady, Message: "the broker is shutting down"})
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, appendTimeout)
	defer cancel()
	if perr := a.checkHolder(ctx, job.agent, ev); perr != nil {
		a.refuse(job.msg, job.agent, ev.WorkerID, ev.ConversationID, perr)
		return
	}
	st, err := b.lw.append(ctx, b.subj.OutEvent(ev.ConversationID), ev, job.msgID, job.agent)
	if err != nil {
		a.refuse(job.msg, job.agent, ev.WorkerID, ev.ConversationID, storeRefusal(err))
		return
	}
	respond(job.msg, agentbridge.AppendReply{Seq: st.Event.Seq, Duplicate: st.Duplicate})
}

// storeRefusal is the coded refusal of a failed store.
func storeRefusal(err error) *agentbridge.ProtocolError {
	switch {
	case errors.Is(err, ErrNotReady), errors.Is(err, ErrClosed):
		return &agentbridge.ProtocolError{Code: agentbridge.CodeNotReady, Message: "the broker is not ready"}
	case errors.Is(err, ErrStoreFull):
		return &agentbridge.ProtocolError{Code: agentbridge.CodeStoreFull, Message: "the store is full; the event was not stored"}
	}
	return &agentbridge.ProtocolError{Code: agentbridge.CodeStoreUnavailable, Message: "the store is unavailable; retry"}
}

// checkHolder checks that ev's worker holds its conversation, of agent, at
// ev's epoch: the conversation record's worker, with
// owner_epoch <= epoch <= the record's epoch. The holder is cached; a
// mismatch reads the record again before refusing, and an epoch above the
// record's waits up to holderWait for it.
func (a *agentBus) checkHolder(ctx context.Context, agent string, ev *agentbridge.Event) *agentbridge.ProtocolError {
	cid := ev.ConversationID
	if h, ok := a.holders.get(cid); ok && h.admits(agent, ev) {
		return nil
	}
	deadline := time.Now().Add(holderWait)
	changed := a.holders.changed()
	for waited := false; ; {
		conv, err := a.b.Conversation(ctx, cid)
		switch {
		case errors.Is(err, ErrUnknownConversation):
			a.holders.drop(cid)
			return &agentbridge.ProtocolError{Code: agentbridge.CodeUnknownConversation,
				Message: fmt.Sprintf("no conversation %s of agent %s", cid, agent)}
		case err != nil:
			return &agentbridge.ProtocolError{Code: agentbridge.CodeStoreUnavailable, Message: "cannot read the conversation; retry"}
		}
		h := a.holders.store(conv, false)
		if conv.Agent != agent {
			return &agentbridge.ProtocolError{Code: agentbridge.CodeUnknownConversation,
				Message: fmt.Sprintf("no conversation %s of agent %s", cid, agent)}
		}
		if ev.Epoch > conv.Epoch && time.Now().Before(deadline) {
			if !waited {
				waited = true
				a.recordWaits.Add(1)
			}
			// Read again when this broker stores a dispatch or another
			// broker's notice arrives, or after a while at the latest.
			t := time.NewTimer(min(50*time.Millisecond, time.Until(deadline)))
			select {
			case <-changed:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			changed = a.holders.changed()
			if ctx.Err() == nil {
				continue
			}
		}
		switch {
		case h.admits(agent, ev):
			return nil
		case ev.Epoch > conv.Epoch && a.b.dispatcher.busy(cid):
			// This broker's dispatch of the conversation is still being
			// recorded (a busy store can take longer than holderWait): the
			// worker may be the one it went to. Refusing it as not the
			// holder would make it let go of a conversation nobody else
			// holds, and the visitor's message would go unanswered (parley
			// bench chat, 10,000 conversations: 6 lost). It retries the
			// same append; once the loop is over the record decides.
			return &agentbridge.ProtocolError{Code: agentbridge.CodeStoreUnavailable,
				Message: fmt.Sprintf("the dispatch of conversation %s at epoch %d is still being recorded; retry", cid, ev.Epoch)}
		case conv.WorkerID != ev.WorkerID:
			return &agentbridge.ProtocolError{Code: agentbridge.CodeNotHolder,
				Message: fmt.Sprintf("worker %s does not hold conversation %s", ev.WorkerID, cid)}
		}
		return &agentbridge.ProtocolError{Code: agentbridge.CodeStaleEpoch,
			Message: fmt.Sprintf("epoch %d is not the holder's (%d to %d)", ev.Epoch, conv.OwnerEpoch, conv.Epoch)}
	}
}

// refuse answers a refused request, counts it and logs it once per agent,
// worker and reason.
func (a *agentBus) refuse(m *nats.Msg, agent, worker, cid string, perr *agentbridge.ProtocolError) {
	respond(m, agentbridge.AppendReply{Error: perr})
	a.refused(agent, worker, cid, perr)
}

func (a *agentBus) refused(agent, worker, cid string, perr *agentbridge.ProtocolError) {
	a.b.obs().AgentEventRefused(strings.ToLower(perr.Code))
	logWorker := worker
	if !agentbridge.ValidToken(worker) {
		logWorker = "(invalid)"
	}
	key := agent + "/" + logWorker + "/" + perr.Code
	a.logMu.Lock()
	_, seen := a.logged[key]
	if !seen {
		if len(a.logged) >= maxLoggedRefusals {
			clear(a.logged)
		}
		a.logged[key] = struct{}{}
	}
	a.logMu.Unlock()
	if seen {
		return
	}
	a.b.log.Warn("agent event refused (logged once per worker and reason)", "agent", agent,
		"worker_id", fmt.Sprintf("%.64q", worker), "reason", perr.Code, "conversation_id", cid, "message", perr.Message)
}

// rawWorkerID is the worker_id of an append that did not decode, for logs.
func rawWorkerID(data []byte) string {
	var v struct {
		WorkerID string `json:"worker_id"`
	}
	_ = json.Unmarshal(data, &v)
	return v.WorkerID
}

func respond(m *nats.Msg, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	_ = m.Respond(data)
}

// onStatus keeps the holder cache and the registry in step with the
// dispatches of other brokers.
func (a *agentBus) onStatus(m *nats.Msg) {
	var n Notice
	if err := json.Unmarshal(m.Data, &n); err != nil || n.Kind != NoticeAgentAssigned {
		return
	}
	if h, ok := a.holders.get(n.ConversationID); !ok || h.worker != n.WorkerID || h.epoch < n.Epoch {
		a.holders.drop(n.ConversationID)
	}
	if n.Agent != "" && n.WorkerID != "" {
		a.b.registry.learn(n.ConversationID, n.Agent, n.WorkerID, n.Epoch, n.HeadSeq)
	}
}

// holder is the cached holder of a conversation (from its record).
type holder struct {
	agent, worker     string
	ownerEpoch, epoch uint64
	read              time.Time
}

func (h holder) admits(agent string, ev *agentbridge.Event) bool {
	return h.agent == agent && h.worker != "" && h.worker == ev.WorkerID &&
		h.ownerEpoch <= ev.Epoch && ev.Epoch <= h.epoch
}

// holderCache caches conversation holders, so an append does not read the
// conversation record each time. Bounded: when full it starts over.
type holderCache struct {
	mu   sync.Mutex
	m    map[string]holder
	wake chan struct{} // closed (and replaced) when a holder is set or dropped
}

// changed returns a channel closed at the next set or drop.
func (c *holderCache) changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wake == nil {
		c.wake = make(chan struct{})
	}
	return c.wake
}

// wakeLocked wakes the appends waiting for a record to change.
func (c *holderCache) wakeLocked() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}

func (c *holderCache) get(cid string) (holder, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[cid]
	if ok && time.Since(h.read) > holderTTL {
		delete(c.m, cid)
		return holder{}, false
	}
	return h, ok
}

// set caches conv's holder (a dispatch stored it) and wakes the appends
// waiting for a record to catch up.
func (c *holderCache) set(conv Conversation) holder { return c.store(conv, true) }

func (c *holderCache) store(conv Conversation, wake bool) holder {
	h := holder{agent: conv.Agent, worker: conv.WorkerID, ownerEpoch: conv.OwnerEpoch, epoch: conv.Epoch, read: time.Now()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxHolders {
		clear(c.m)
	}
	c.m[conv.ID] = h
	if wake {
		c.wakeLocked()
	}
	return h
}

func (c *holderCache) drop(cid string) {
	c.mu.Lock()
	delete(c.m, cid)
	c.wakeLocked()
	c.mu.Unlock()
}

// onRead answers a ReadRequest: the conversation's events from from_seq in
// log order, read with direct gets (no consumer).
func (a *agentBus) onRead(m *nats.Msg) {
	b := a.b
	agent, ok := b.subj.AgentFromSubject(m.Subject)
	if !ok || m.Reply == "" {
		return
	}
	var req agentbridge.ReadRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		a.refuseRead(m, agent, "", &agentbridge.ProtocolError{Code: agentbridge.CodeBadEvent, Message: "not a JSON read request"})
		return
	}
	switch {
	case req.V != agentbridge.Version:
		a.refuseRead(m, agent, req.ConversationID, &agentbridge.ProtocolError{Code: agentbridge.CodeUnsupportedVersion,
			Message: fmt.Sprintf("v is %d; this broker speaks v%d", req.V, agentbridge.Version)})
		return
	case !validID(req.ConversationID, "conv_"):
		a.refuseRead(m, agent, "", &agentbridge.ProtocolError{Code: agentbridge.CodeBadEvent, Message: "conversation_id is not a conversation id"})
		return
	case !b.ready.Load():
		a.refuseRead(m, agent, req.ConversationID, &agentbridge.ProtocolError{Code: agentbridge.CodeNotReady, Message: "the broker is not ready"})
		return
	}
	select {
	case a.readSem <- struct{}{}:
	case <-b.ctx.Done():
		return
	}
	if !b.goroutine(func() {
		defer func() { <-a.readSem }()
		a.read(m, agent, req)
	}) {
		<-a.readSem
	}
}

func (a *agentBus) refuseRead(m *nats.Msg, agent, cid string, perr *agentbridge.ProtocolError) {
	respond(m, agentbridge.ReadReply{Events: []agentbridge.Event{}, Error: perr})
}

func (a *agentBus) read(m *nats.Msg, agent string, req agentbridge.ReadRequest) {
	b := a.b
	ctx, cancel := context.WithTimeout(b.ctx, appendTimeout)
	defer cancel()
	cid := req.ConversationID
	conv, err := b.Conversation(ctx, cid)
	switch {
	case err == nil && conv.Agent == agent:
	case err == nil, errors.Is(err, ErrUnknownConversation):
		a.refuseRead(m, agent, cid, &agentbridge.ProtocolError{Code: agentbridge.CodeUnknownConversation,
			Message: fmt.Sprintf("no conversation %s of agent %s", cid, agent)})
		return
	default:
		a.refuseRead(m, agent, cid, &agentbridge.ProtocolError{Code: agentbridge.CodeStoreUnavailable, Message: "cannot read the conversation; retry"})
		return
	}
	limit := req.Limit
	if limit <= 0 || limit > agentbridge.MaxReadEvents {
		limit = agentbridge.MaxReadEvents
	}
	events, more, err := b.readEvents(ctx, cid, max(req.FromSeq, 1), limit, agentbridge.MaxReadBytes)
	if err != nil {
		a.refuseRead(m, agent, cid, storeRefusal(err))
		return
	}
	respond(m, agentbridge.ReadReply{Events: events, More: more})
}

// readEvents reads cid's events from log position from on, in log order,
// with one batched direct get (no consumer): at most limit events and
// about maxBytes (the event that crosses it is the last). more reports that
// the log goes on.
func (b *Broker) readEvents(ctx context.Context, cid string, from uint64, limit, maxBytes int) ([]agentbridge.Event, bool, error) {
	req, _ := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes"`
	}{from, b.subj.Events(cid), limit, maxBytes})
	inbox := b.nc.NewInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false, fmt.Errorf("%w: read %s: %w", ErrStore, cid, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := b.nc.PublishRequest("$JS.API.DIRECT.GET."+b.subj.StreamName(), inbox, req); err != nil {
		return nil, false, fmt.Errorf("%w: read %s: %w", ErrStore, cid, err)
	}
	events := []agentbridge.Event{}
	for {
		mctx, cancel := context.WithTimeout(ctx, logReadIdle)
		msg, err := sub.NextMsgWithContext(mctx)
		cancel()
		if err != nil {
			return nil, false, fmt.Errorf("%w: read %s: %d events read: %w", ErrStore, cid, len(events), err)
		}
		if len(msg.Data) == 0 && msg.Header.Get("Status") != "" {
			switch msg.Header.Get("Status") {
			case "204": // end of the batch
				pending, _ := strconv.ParseUint(msg.Header.Get("Nats-Num-Pending"), 10, 64)
				return events, pending > 0, nil
			case "404": // nothing from there on
				return events, false, nil
			}
			return nil, false, fmt.Errorf("%w: read %s: direct get: %s %s", ErrStore, cid,
				msg.Header.Get("Status"), msg.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("%w: read %s: direct get without a sequence", ErrStore, cid)
		}
		var ev agentbridge.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			b.log.Warn("skipping undecodable log entry", "conversation_id", cid, "seq", seq, "err", err)
			continue
		}
		ev.Seq = seq
		events = append(events, ev)
	}
}

func jetstreamNextFor(subject string) jetstream.GetMsgOpt {
	return jetstream.WithGetMsgSubject(subject)
}

func isMsgNotFound(err error) bool { return errors.Is(err, jetstream.ErrMsgNotFound) }
