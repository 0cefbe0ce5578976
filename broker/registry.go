package broker

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// registry tracks agent workers from their heartbeats and which worker
// holds which conversation.
type registry struct {
	timeout time.Duration

	mu       sync.Mutex
	workers  map[string]*workerInfo
	assigned map[string]assignment // conversation id → last known holder
	sub      *nats.Subscription
}

type workerInfo struct {
	id, agent string
	lastSeen  time.Time
	hbSeq     uint64 // Seq of the newest heartbeat applied
	draining  bool
	convs     map[string]struct{}
}

// assignment is a worker's hold on a conversation, as of the worker's
// heartbeat hbSeq: heartbeats newer than that list the conversation for as
// long as the worker holds it.
type assignment struct {
	worker string
	hbSeq  uint64
	epoch  uint64
}

func newRegistry(timeout time.Duration) *registry {
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	return &registry{timeout: timeout, workers: make(map[string]*workerInfo), assigned: make(map[string]assignment)}
}

func (r *registry) start(b *Broker) error {
	sub, err := b.nc.Subscribe(b.subj.AllHeartbeats(), r.onHeartbeat)
	if err != nil {
		return fmt.Errorf("broker: subscribe heartbeats: %w", err)
	}
	r.mu.Lock()
	r.sub = sub
	r.mu.Unlock()
	return nil
}

func (r *registry) stop() {
	r.mu.Lock()
	sub := r.sub
	r.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

func (r *registry) onHeartbeat(m *nats.Msg) {
	var hb agentbridge.Heartbeat
	if err := json.Unmarshal(m.Data, &hb); err != nil || hb.WorkerID == "" {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[hb.WorkerID]
	if w == nil {
		w = &workerInfo{id: hb.WorkerID}
		r.workers[hb.WorkerID] = w
	}
	seq := hb.Seq
	switch {
	case seq == 0:
		// A worker that does not number its heartbeats: number them here,
		// in arrival order.
		seq = w.hbSeq + 1
	case seq == 1:
		// A (re)started worker begins again at 1.
	case seq <= w.hbSeq:
		return // an older heartbeat overtaken by a newer one
	}
	w.agent, w.lastSeen, w.draining, w.hbSeq = hb.Agent, now, hb.Draining, seq
	w.convs = make(map[string]struct{}, len(hb.Conversations))
	for _, cid := range hb.Conversations {
		w.convs[cid] = struct{}{}
		if a, ok := r.assigned[cid]; !ok || a.worker != hb.WorkerID {
			// Learn assignments made by other brokers.
			r.assigned[cid] = assignment{worker: hb.WorkerID, hbSeq: seq}
		}
	}
	// Forget workers long gone.
	for id, o := range r.workers {
		if now.Sub(o.lastSeen) > 10*r.timeout {
			delete(r.workers, id)
		}
	}
}

// assign records that worker accepted conversation cid after its heartbeat
// hbSeq.
// A worker that does not number its heartbeats (hbSeq 0) is taken as of its
// last heartbeat received.
func (r *registry) assign(cid, worker string, hbSeq, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.workers[worker]; hbSeq == 0 && w != nil {
		hbSeq = w.hbSeq
	}
	r.assigned[cid] = assignment{worker: worker, hbSeq: hbSeq, epoch: epoch}
}

// release forgets who holds cid.
func (r *registry) release(cid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.assigned, cid)
}

// owner returns the live worker holding cid, if any: one that heartbeats,
// is not draining, and has sent no heartbeat since it accepted cid that
// leaves cid out.
func (r *registry) owner(cid string) (string, bool) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.assigned[cid]
	if !ok {
		return "", false
	}
	w := r.workers[a.worker]
	switch {
	case w == nil || w.draining || now.Sub(w.lastSeen) > r.timeout:
		// Gone, leaving, or silent too long.
	case w.hbSeq <= a.hbSeq:
		return a.worker, true // no heartbeat since it accepted
	default:
		if _, listed := w.convs[cid]; listed {
			return a.worker, true
		}
		// A newer heartbeat leaves it out: the worker released it.
	}
	delete(r.assigned, cid)
	return "", false
}

// lostConversation is a conversation whose worker went away.
type lostConversation struct{ cid, worker string }

// sweep forgets the conversations held by workers that went silent or are
// draining, and returns them.
func (r *registry) sweep() []lostConversation {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var lost []lostConversation
	for cid, a := range r.assigned {
		w := r.workers[a.worker]
		if w == nil || w.draining || now.Sub(w.lastSeen) > r.timeout {
			delete(r.assigned, cid)
			lost = append(lost, lostConversation{cid: cid, worker: a.worker})
		}
	}
	return lost
}

// alive counts the live, non-draining workers of agent.
func (r *registry) alive(agent string) int {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.workers {
		if w.agent == agent && !w.draining && now.Sub(w.lastSeen) <= r.timeout {
			n++
		}
	}
	return n
}
