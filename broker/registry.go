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
//
// Reading it (owner, alive) never changes who holds what. Assignments go
// away only through sweep, takeLost, assign (which reports the dead holder
// it replaces) and release, and every one of those that removes the
// assignment of a dead or draining worker hands it to the caller as a
// lostConversation, so the dispatcher can tell the visitor, close the
// half-streamed replies and dispatch again.
//
// registry.mu is a leaf lock: nothing is called while holding it, and
// onAppear runs after it is released.
type registry struct {
	timeout time.Duration
	now     func() time.Time // time.Now; tests set a clock
	// onAppear is called (outside mu, on the heartbeat delivery goroutine)
	// with the agent of a worker that appeared: a new worker, one that
	// restarted, came back after going silent, or stopped draining.
	onAppear func(agent string)

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
	return &registry{timeout: timeout, now: time.Now, workers: make(map[string]*workerInfo), assigned: make(map[string]assignment)}
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
	if r.applyHeartbeat(&hb) && r.onAppear != nil {
		r.onAppear(hb.Agent)
	}
}

// applyHeartbeat records a heartbeat and reports whether it announces a
// worker that can take conversations and could not a moment ago.
func (r *registry) applyHeartbeat(hb *agentbridge.Heartbeat) (appeared bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[hb.WorkerID]
	if w == nil {
		w = &workerInfo{id: hb.WorkerID}
		r.workers[hb.WorkerID] = w
		appeared = true
	}
	seq := hb.Seq
	switch {
	case seq == 0:
		// A worker that does not number its heartbeats: number them here,
		// in arrival order.
		seq = w.hbSeq + 1
	case seq == 1:
		// A (re)started worker begins again at 1.
		appeared = appeared || w.hbSeq > 1
	case seq <= w.hbSeq:
		return false // an older heartbeat overtaken by a newer one
	}
	appeared = (appeared || w.draining || now.Sub(w.lastSeen) > r.timeout) && !hb.Draining
	w.agent, w.lastSeen, w.draining, w.hbSeq = hb.Agent, now, hb.Draining, seq
	w.convs = make(map[string]struct{}, len(hb.Conversations))
	for _, cid := range hb.Conversations {
		w.convs[cid] = struct{}{}
		if a, ok := r.assigned[cid]; !ok || a.worker != hb.WorkerID {
			// Learn assignments made by other brokers.
			r.assigned[cid] = assignment{worker: hb.WorkerID, hbSeq: seq}
		}
	}
	// Forget workers long gone (sweep reports what they held as lost).
	for id, o := range r.workers {
		if now.Sub(o.lastSeen) > 10*r.timeout {
			delete(r.workers, id)
		}
	}
	return appeared
}

// assign records that worker accepted conversation cid after its heartbeat
// hbSeq.
// A worker that does not number its heartbeats (hbSeq 0) is taken as of its
// last heartbeat received. If the assignment it replaces was held by
// another worker that is gone, that one is returned: the caller must treat
// it as lost.
func (r *registry) assign(cid, worker string, hbSeq, epoch uint64) (lostConversation, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.workers[worker]; hbSeq == 0 && w != nil {
		hbSeq = w.hbSeq
	}
	prev, had := r.assigned[cid]
	r.assigned[cid] = assignment{worker: worker, hbSeq: hbSeq, epoch: epoch}
	if had && prev.worker != worker && r.goneLocked(prev, now) {
		return lostConversation{cid: cid, worker: prev.worker}, true
	}
	return lostConversation{}, false
}

// release forgets who holds cid (the worker releases it on its own).
func (r *registry) release(cid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.assigned, cid)
}

// goneLocked reports whether the worker of a is gone: unknown, draining, or
// silent for longer than the timeout.
func (r *registry) goneLocked(a assignment, now time.Time) bool {
	w := r.workers[a.worker]
	return w == nil || w.draining || now.Sub(w.lastSeen) > r.timeout
}

// releasedLocked reports whether the (live) worker of a has sent a
// heartbeat since it accepted the conversation that leaves it out.
func (r *registry) releasedLocked(cid string, a assignment) bool {
	w := r.workers[a.worker]
	if w == nil || w.hbSeq <= a.hbSeq {
		return false
	}
	_, listed := w.convs[cid]
	return !listed
}

// owner returns the live worker holding cid, if any: one that heartbeats,
// is not draining, and has sent no heartbeat since it accepted cid that
// leaves cid out. It only reads: an assignment whose worker is gone stays
// until sweep or takeLost hands it over as lost.
func (r *registry) owner(cid string) (string, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.assigned[cid]
	if !ok || r.goneLocked(a, now) || r.releasedLocked(cid, a) {
		return "", false
	}
	return a.worker, true
}

// owners returns the live holders of the given conversations (those
// without one are left out), in one pass.
func (r *registry) owners(cids []string) map[string]string {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(cids))
	for _, cid := range cids {
		a, ok := r.assigned[cid]
		if ok && !r.goneLocked(a, now) && !r.releasedLocked(cid, a) {
			out[cid] = a.worker
		}
	}
	return out
}

// lostConversation is a conversation whose worker went away.
type lostConversation struct{ cid, worker string }

// takeLost removes cid's assignment if its worker is gone and returns it;
// the caller handles it as lost. It is how a visitor's action finds a loss
// before the next sweep does; exactly one of them gets it.
func (r *registry) takeLost(cid string) (lostConversation, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.assigned[cid]
	if !ok || !r.goneLocked(a, now) {
		return lostConversation{}, false
	}
	delete(r.assigned, cid)
	return lostConversation{cid: cid, worker: a.worker}, true
}

// sweep forgets the conversations held by workers that went silent or are
// draining, and returns them; conversations their (live) workers released
// are forgotten quietly.
func (r *registry) sweep() []lostConversation {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var lost []lostConversation
	for cid, a := range r.assigned {
		switch {
		case r.goneLocked(a, now):
			delete(r.assigned, cid)
			lost = append(lost, lostConversation{cid: cid, worker: a.worker})
		case r.releasedLocked(cid, a):
			delete(r.assigned, cid)
		}
	}
	return lost
}

// alive counts the live, non-draining workers of agent.
func (r *registry) alive(agent string) int {
	now := r.now()
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
