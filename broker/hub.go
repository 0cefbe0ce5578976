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
	// NoticeAgentUnavailable: no worker accepted the conversation in time;
	// the broker keeps trying.
	NoticeAgentUnavailable = "agent_unavailable"
	// NoticeAgentAssigned: a worker accepted the conversation.
	NoticeAgentAssigned = "agent_assigned"
	// NoticeAgentLost: the worker holding the conversation stopped
	// heartbeating; another is being found.
	NoticeAgentLost = "agent_lost"
)

// Notice is a non-durable message about a conversation, shared by brokers
// on the status subject.
type Notice struct {
	Kind           string    `json:"kind"`
	ConversationID string    `json:"conversation_id"`
	Agent          string    `json:"agent"`
	WorkerID       string    `json:"worker_id,omitempty"`
	Epoch          uint64    `json:"epoch,omitempty"`
	Attempt        int       `json:"attempt,omitempty"`
	TS             time.Time `json:"ts"`
}

// subscriptionBuffer is how many updates a subscriber may fall behind
// before it is dropped with ErrSlowSubscriber.
const subscriptionBuffer = 1024

// hubLinger keeps a hub without subscribers alive for a while, so request
// bursts do not create a consumer each.
const hubLinger = 30 * time.Second

// Subscription delivers a conversation's live updates: every event appended
// to its log after Subscribe returned, and notices.
type Subscription struct {
	h    *hub
	c    chan Update
	err  error
	done bool // guarded by h.mu
}

// C delivers the updates; it is closed when the subscription ends.
func (s *Subscription) C() <-chan Update { return s.c }

// Err tells why C was closed: nil after Close, ErrSlowSubscriber, ErrClosed
// or a store error.
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

// hub reads one conversation's log from its end with a live feed (an
// ordered consumer that replaces itself within ~2 idle heartbeats when it
// is lost, for example with the stream leader's node) and fans events out
// to subscribers.
type hub struct {
	set    *hubSet
	cid    string
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{}
	err    error // set before ready is closed

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
	s := &Subscription{h: h, c: make(chan Update, subscriptionBuffer)}
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

func (hs *hubSet) closeAll() {
	hs.mu.Lock()
	hs.closed = true
	hubs := make([]*hub, 0, len(hs.hubs))
	for _, h := range hs.hubs {
		hubs = append(hubs, h)
	}
	hs.mu.Unlock()
	for _, h := range hubs {
		h.cancel()
	}
}

// run owns the hub's consumer and status subscription.
func (h *hub) run() {
	b := h.set.b
	cctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	it, err := agentbridge.OpenFeed(cctx, b.js, b.subj.StreamName(), b.subj.Events(h.cid), agentbridge.FeedOptions{
		DeliverNew:        true,
		Heartbeat:         b.cfg.NATS.ConsumerHeartbeat,
		InactiveThreshold: 30 * time.Second,
		Logger:            b.log.With("conversation_id", h.cid, "feed", "hub"),
		OnStall:           func() { b.obs().FeedStalled() },
		OnResume:          func() { b.obs().FeedResumed() },
	})
	cancel()
	if err != nil {
		h.fail(fmt.Errorf("%w: subscribe %s: %w", ErrStore, h.cid, err))
		return
	}
	defer it.Stop()
	status, err := b.nc.Subscribe(b.subj.Status(h.cid), h.onNotice)
	if err != nil {
		h.fail(fmt.Errorf("%w: subscribe status %s: %w", ErrStore, h.cid, err))
		return
	}
	defer func() { _ = status.Unsubscribe() }()
	close(h.ready)
	for {
		msg, err := it.Next(h.ctx)
		if err != nil {
			if h.ctx.Err() == nil {
				b.log.Warn("live subscription ended", "conversation_id", h.cid, "err", err)
				h.fail(fmt.Errorf("%w: %w", ErrStore, err))
			} else {
				h.fail(ErrClosed)
			}
			return
		}
		ev, _, err := agentbridge.DecodeLogMsg(msg)
		if err != nil {
			b.log.Warn("skipping undecodable log entry", "conversation_id", h.cid, "err", err)
			continue
		}
		b.rooms.observe(h.cid, &ev)
		h.fanout(Update{Event: &ev})
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
		select {
		case s.c <- u:
		default:
			h.endLocked(s, ErrSlowSubscriber)
			h.set.b.obs().SlowSubscriber()
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
	h.cancel()
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
	defer hs.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) > 0 || hs.hubs[h.cid] != h {
		return
	}
	delete(hs.hubs, h.cid)
	h.cancel()
}

func (h *hub) endLocked(s *Subscription, err error) {
	if s.done {
		return
	}
	s.done = true
	s.err = err
	delete(h.subs, s)
	close(s.c)
}
