package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// Update is one item of a live subscription: a log event or a notice.
type Update struct {
	Event  *agentbridge.Event
	Notice *Notice
}

// Notice kinds.
const (
	// NoticeAgentUnavailable: no worker accepted the conversation in time,
	// or (Code conversation_limit) its widget or tenant is at its
	// conversation limit; the broker keeps trying.
	NoticeAgentUnavailable = "agent_unavailable"
	// NoticeAgentAssigned: a worker accepted the conversation.
	NoticeAgentAssigned = "agent_assigned"
	// NoticeAgentLost: the worker holding the conversation stopped
	// heartbeating; another is being found.
	NoticeAgentLost = "agent_lost"
)

// NoticeCodeConversationLimit: the conversation waits for its widget's or
// tenant's conversation limit (ErrConversationLimit).
const NoticeCodeConversationLimit = "conversation_limit"

// Err returns the error an agent_unavailable notice stands for.
func (n *Notice) Err() error {
	if n.Code == NoticeCodeConversationLimit {
		return ErrConversationLimit
	}
	return ErrAgentUnavailable
}

// Notice is a non-durable message about a conversation, shared by brokers
// on the status subject.
type Notice struct {
	Kind string `json:"kind"`
	// Code says why, for an agent_unavailable notice: "" (no worker took
	// it) or NoticeCodeConversationLimit.
	Code           string `json:"code,omitempty"`
	ConversationID string `json:"conversation_id"`
	Agent          string `json:"agent"`
	WorkerID       string `json:"worker_id,omitempty"`
	Epoch          uint64 `json:"epoch,omitempty"`
	// HeadSeq is the log head the dispatch request carried (agent
	// assigned): a release stored after it makes the assignment stale.
	HeadSeq uint64    `json:"head_seq,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	TS      time.Time `json:"ts"`
}

// subscriptionBuffer is how many updates a subscriber may fall behind
// before it is dropped with ErrSlowSubscriber. The queue grows to it on
// demand: an idle subscriber holds none.
const subscriptionBuffer = 1024

// subscriptionKeep is the queue capacity a subscriber keeps after taking
// its updates; a larger one, grown by a burst, is let go.
const subscriptionKeep = 16

// hubLinger keeps a hub without subscribers alive for a while, so request
// bursts do not subscribe and read the log's end each time.
const hubLinger = 30 * time.Second

// hubGapGrace is how long a hub waits for a missing event before it reads
// it from the log: events of one conversation stored by different brokers
// may arrive out of order by a fraction of a millisecond.
const hubGapGrace = 20 * time.Millisecond

// Subscription delivers a conversation's live updates: every event appended
// to its log after Subscribe returned, and notices. Its owner waits on
// Ready and takes what has come with Take:
//
//	for {
//		select {
//		case <-sub.Ready():
//			updates, open := sub.Take(updates[:0])
//			// handle updates, in order; then, if !open, sub.Err() says why
//		}
//	}
type Subscription struct {
	h     *hub
	ready chan struct{} // one slot: updates wait, or the subscription ended

	// Guarded by h.mu.
	queue []Update
	err   error
	done  bool
}

// Ready is signalled when updates wait to be taken, and stays ready once
// the subscription has ended.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take appends the waiting updates to buf, in order, and returns it. open
// is false once the subscription has ended: the updates returned with it
// are the last.
func (s *Subscription) Take(buf []Update) (updates []Update, open bool) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	buf = append(buf, s.queue...)
	if cap(s.queue) > subscriptionKeep {
		s.queue = nil
	} else {
		clear(s.queue)
		s.queue = s.queue[:0]
	}
	return buf, !s.done
}

// Err tells why the subscription ended: nil after Close, ErrSlowSubscriber,
// ErrClosed or a store error.
func (s *Subscription) Err() error {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.err
}

// Close ends the subscription. It is idempotent.
func (s *Subscription) Close() { s.h.remove(s, nil) }

// Subscribe starts receiving a conversation's live updates. Events appended
// after it returns are delivered in log order.
func (b *Broker) Subscribe(ctx context.Context, cid string) (*Subscription, error) {
	if !b.ready.Load() {
		return nil, ErrNotReady
	}
	return b.hubs.subscribe(ctx, cid)
}

// hubSet holds one hub per conversation with live subscribers on this broker.
// Lock order: hubSet.mu, then hub.mu.
type hubSet struct {
	b      *Broker
	mu     sync.Mutex
	hubs   map[string]*hub
	closed bool
}

func newHubSet(b *Broker) *hubSet { return &hubSet{b: b, hubs: make(map[string]*hub)} }

// hub follows one conversation's stored events and fans them out to
// subscribers. It needs no JetStream consumer: the broker that stores an
// event publishes it with its seq and prev_seq on core NATS
// (Subjects.ConvEvent), every hub subscribes to those of its conversation,
// and a Sequencer puts them in log order. A gap (an event whose prev_seq is
// not the last one delivered: lost on a reconnect, or still in flight from
// another broker) is filled from the log after hubGapGrace.
type hub struct {
	set    *hubSet
	cid    string
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{}
	err    error // set before ready is closed

	// seqMu guards the order of events (seq, early and refill) and the
	// hub's NATS subscriptions. It is taken before mu.
	seqMu   sync.Mutex
	seq     *agentbridge.Sequencer // nil until the log's end is known
	early   []agentbridge.Event    // events received before that
	refill  *time.Timer            // a pending gap refill
	filling bool                   // a refill is reading the log
	natsSub []*nats.Subscription   // the events' and the notices'
	stopped bool                   // stop was called: natsSub is let go

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	linger *time.Timer
}

func (hs *hubSet) subscribe(ctx context.Context, cid string) (*Subscription, error) {
	hs.mu.Lock()
	if hs.closed {
		hs.mu.Unlock()
		return nil, ErrClosed
	}
	h := hs.hubs[cid]
	start := h == nil
	if start {
		h = &hub{set: hs, cid: cid, ready: make(chan struct{}), subs: make(map[*Subscription]struct{})}
		h.ctx, h.cancel = context.WithCancel(hs.b.ctx)
		hs.hubs[cid] = h
	}
	s := &Subscription{h: h, ready: make(chan struct{}, 1)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	if h.linger != nil {
		h.linger.Stop()
		h.linger = nil
	}
	h.mu.Unlock()
	hs.mu.Unlock()
	if start && !hs.b.goroutine(h.run) {
		h.fail(ErrClosed)
	}
	select {
	case <-h.ready:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	if h.err != nil {
		return nil, h.err
	}
	return s, nil
}

// active reports whether cid has live subscribers on this broker.
func (hs *hubSet) active(cid string) bool {
	hs.mu.Lock()
	h := hs.hubs[cid]
	hs.mu.Unlock()
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

// resync makes every hub read what it may have missed while the broker's
// NATS connection was down.
func (hs *hubSet) resync() {
	for _, h := range hs.snapshot(false) {
		h.resync()
	}
}

func (hs *hubSet) closeAll() {
	for _, h := range hs.snapshot(true) {
		h.stop()
	}
}

// snapshot returns the hubs, to call them outside hs.mu; close marks the
// set closed first.
func (hs *hubSet) snapshot(close bool) []*hub {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.closed = hs.closed || close
	hubs := make([]*hub, 0, len(hs.hubs))
	for _, h := range hs.hubs {
		hubs = append(hubs, h)
	}
	return hubs
}

// run starts the hub: it subscribes, learns where the log ends, and
// returns when the hub is ready or has failed. The subscriptions are the
// hub's until stop.
func (h *hub) run() {
	b := h.set.b
	for _, sub := range []struct {
		subject string
		handler nats.MsgHandler
	}{{b.subj.AnyConvEvent(h.cid), h.onEvent}, {b.subj.Status(h.cid), h.onNotice}} {
		ns, err := b.subs.subscribe(sub.subject, h.cid, sub.handler)
		if err != nil {
			h.fail(fmt.Errorf("%w: subscribe %s: %w", ErrStore, h.cid, err))
			return
		}
		h.seqMu.Lock()
		h.natsSub = append(h.natsSub, ns)
		stopped := h.stopped
		h.seqMu.Unlock()
		if stopped { // closed meanwhile
			h.fail(ErrClosed) // lets ns go
			return
		}
	}
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	// The subscriptions must be in place on the server before the log's
	// end is read, or an event stored in between would be missed.
	if err := b.nc.FlushWithContext(ctx); err != nil {
		h.fail(fmt.Errorf("%w: subscribe %s: %w", ErrStore, h.cid, err))
		return
	}
	last, _, err := b.lastStored(ctx, h.cid)
	if err != nil {
		h.fail(fmt.Errorf("%w: subscribe %s: %w", ErrStore, h.cid, err))
		return
	}
	h.seqMu.Lock()
	h.seq = agentbridge.NewSequencer(last)
	early := h.early
	h.early = nil
	for _, ev := range early {
		h.pushLocked(ev)
	}
	h.seqMu.Unlock()
	close(h.ready)
}

// stop ends the hub: its context, its pending refill and its NATS
// subscriptions. It may be called more than once, and before run has
// subscribed.
func (h *hub) stop() {
	h.cancel()
	h.seqMu.Lock()
	h.stopped = true
	subs := h.natsSub
	h.natsSub = nil
	if h.refill != nil {
		h.refill.Stop()
		h.refill = nil
	}
	h.seqMu.Unlock()
	for _, ns := range subs {
		_ = h.set.b.subs.unsubscribe(ns)
	}
}

// onEvent receives one stored event from the broker that stored it.
func (h *hub) onEvent(m *nats.Msg) {
	var ev agentbridge.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Seq == 0 || ev.ConversationID != h.cid {
		h.set.b.log.Warn("skipping undecodable live event", "conversation_id", h.cid, "subject", m.Subject)
		return
	}
	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	if h.seq == nil {
		h.early = append(h.early, ev)
		return
	}
	h.pushLocked(ev)
}

// pushLocked delivers what ev makes deliverable, and schedules a refill
// when it waits behind a gap.
func (h *hub) pushLocked(ev agentbridge.Event) {
	h.deliverLocked(h.seq.Push(ev))
	h.scheduleLocked()
}

func (h *hub) scheduleLocked() {
	if _, gap := h.seq.Gap(); !gap || h.refill != nil || h.filling {
		return
	}
	h.set.b.obs().LiveGap()
	h.refill = time.AfterFunc(hubGapGrace, h.fill)
}

// resync reads the log after a reconnect, when events may have been lost
// without a later one showing the gap.
func (h *hub) resync() {
	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	if h.seq == nil || h.refill != nil || h.filling {
		return
	}
	h.refill = time.AfterFunc(0, h.fill)
}

// fill reads the log from the first missing event and delivers it.
func (h *hub) fill() {
	b := h.set.b
	h.seqMu.Lock()
	h.refill = nil
	if h.ctx.Err() != nil {
		h.seqMu.Unlock()
		return
	}
	h.filling = true
	from := h.seq.Last() + 1
	h.seqMu.Unlock()

	events, err := b.ReadLog(h.ctx, h.cid, from)
	if err != nil {
		h.seqMu.Lock()
		h.filling = false
		h.seqMu.Unlock()
		if h.ctx.Err() == nil {
			b.log.Warn("live subscription ended: reading a gap from the log failed", "conversation_id", h.cid, "from_seq", from, "err", err)
			h.fail(fmt.Errorf("%w: %w", ErrStore, err))
		}
		return
	}

	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	h.filling = false
	b.obs().LiveRefill()
	h.deliverLocked(h.seq.Fill(events))
	h.scheduleLocked()
}

func (h *hub) deliverLocked(events []agentbridge.Event) {
	for i := range events {
		ev := &events[i]
		h.set.b.rooms.observe(h.cid, ev)
		h.fanout(Update{Event: ev})
	}
}

func (h *hub) onNotice(m *nats.Msg) {
	var n Notice
	if err := json.Unmarshal(m.Data, &n); err != nil {
		return
	}
	h.fanout(Update{Notice: &n})
}

func (h *hub) fanout(u Update) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if len(s.queue) >= subscriptionBuffer {
			h.endLocked(s, ErrSlowSubscriber)
			h.set.b.obs().SlowSubscriber()
			continue
		}
		s.queue = append(s.queue, u)
		select {
		case s.ready <- struct{}{}:
		default: // already signalled
		}
	}
}

// fail ends the hub and all its subscriptions with err.
func (h *hub) fail(err error) {
	hs := h.set
	hs.mu.Lock()
	if hs.hubs[h.cid] == h {
		delete(hs.hubs, h.cid)
	}
	h.mu.Lock()
	select {
	case <-h.ready:
	default:
		h.err = err
		close(h.ready)
	}
	for s := range h.subs {
		h.endLocked(s, err)
	}
	h.mu.Unlock()
	hs.mu.Unlock()
	h.stop()
}

// remove ends one subscription; the hub lingers, then stops, when it was
// the last.
func (h *hub) remove(s *Subscription, err error) {
	hs := h.set
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endLocked(s, err)
	if len(h.subs) == 0 && h.linger == nil && hs.hubs[h.cid] == h {
		h.linger = time.AfterFunc(hubLinger, h.expire)
	}
}

func (h *hub) expire() {
	hs := h.set
	hs.mu.Lock()
	h.mu.Lock()
	idle := len(h.subs) == 0 && hs.hubs[h.cid] == h
	if idle {
		delete(hs.hubs, h.cid)
	}
	h.mu.Unlock()
	hs.mu.Unlock()
	if idle {
		h.stop()
	}
}

func (h *hub) endLocked(s *Subscription, err error) {
	if s.done {
		return
	}
	s.done = true
	s.err = err
	delete(h.subs, s)
	close(s.ready)
}
