package broker

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
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

	// gen changes whenever who holds what may have changed (an applied
	// heartbeat, an assignment set or removed), so hot paths (agent audio
	// frames) can cache an owner check until it does.
	gen atomic.Uint64

	mu      sync.Mutex
	workers map[string]*workerInfo
	// assigned: conversation id → agent → last known holder. Holdings are
	// kept per agent: a heartbeat of agent B listing a conversation of
	// agent A records a claim under B, which never makes a B worker the
	// holder of A's conversation (owner asks for the conversation's agent).
	assigned map[string]map[string]assignment
	sub      *nats.Subscription
	subj     agentbridge.Subjects
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
	agent  string
	worker string
	hbSeq  uint64
	epoch  uint64
}

// maxHeartbeatConvs bounds the conversations one heartbeat may claim (a
// worker holds far fewer; the bound keeps a misbehaving agent from growing
// the registry without limit).
const maxHeartbeatConvs = 10000

func newRegistry(timeout time.Duration) *registry {
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	return &registry{timeout: timeout, now: time.Now, workers: make(map[string]*workerInfo),
		assigned: make(map[string]map[string]assignment), subj: agentbridge.NewSubjects("")}
}

func (r *registry) start(b *Broker) error {
	r.mu.Lock()
	r.subj = b.subj
	r.mu.Unlock()
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

// onHeartbeat applies one heartbeat. The worker's agent is the one of the
// subject it came on (which NATS lets only that agent's credentials
// publish), never the body's; a worker id that is not one subject token
// is ignored.
func (r *registry) onHeartbeat(m *nats.Msg) {
	r.mu.Lock()
	subj := r.subj
	r.mu.Unlock()
	agent, ok := subj.AgentFromSubject(m.Subject)
	if !ok {
		return
	}
	var hb agentbridge.Heartbeat
	if err := json.Unmarshal(m.Data, &hb); err != nil || hb.V != agentbridge.Version || !agentbridge.ValidToken(hb.WorkerID) {
		return
	}
	hb.Agent = agent
	if r.applyHeartbeat(&hb) && r.onAppear != nil {
		r.onAppear(agent)
	}
}

// applyHeartbeat records a heartbeat and reports whether it announces a
// worker that can take conversations and could not a moment ago.
func (r *registry) applyHeartbeat(hb *agentbridge.Heartbeat) (appeared bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[workerKey(hb.Agent, hb.WorkerID)]
	if w == nil {
		w = &workerInfo{id: hb.WorkerID, agent: hb.Agent}
		r.workers[workerKey(hb.Agent, hb.WorkerID)] = w
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
	w.lastSeen, w.draining, w.hbSeq = now, hb.Draining, seq
	r.gen.Add(1)
	w.convs = make(map[string]struct{}, len(hb.Conversations))
	convs := hb.Conversations
	if len(convs) > maxHeartbeatConvs {
		convs = convs[:maxHeartbeatConvs]
	}
	for _, cid := range convs {
		if !agentbridge.ValidToken(cid) {
			continue
		}
		w.convs[cid] = struct{}{}
		if a, ok := r.assigned[cid][w.agent]; !ok || a.worker != hb.WorkerID {
			// Learn assignments made by other brokers, under the
			// worker's own agent.
			r.setLocked(cid, assignment{agent: w.agent, worker: hb.WorkerID, hbSeq: seq})
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

// workerKey names a worker in the registry: workers are told apart by
// agent too, so a worker of another agent using the same id is another
// worker (it cannot make this one look gone).
func workerKey(agent, id string) string { return agent + "/" + id }

func (r *registry) setLocked(cid string, a assignment) {
	r.gen.Add(1)
	m := r.assigned[cid]
	if m == nil {
		m = make(map[string]assignment, 1)
		r.assigned[cid] = m
	}
	m[a.agent] = a
}

func (r *registry) getLocked(cid, agent string) (assignment, bool) {
	a, ok := r.assigned[cid][agent]
	return a, ok
}

func (r *registry) deleteLocked(cid, agent string) {
	r.gen.Add(1)
	if m := r.assigned[cid]; m != nil {
		delete(m, agent)
		if len(m) == 0 {
			delete(r.assigned, cid)
		}
	}
}

// assign records that worker accepted conversation cid (of agent) after
// its heartbeat hbSeq.
// A worker that does not number its heartbeats (hbSeq 0) is taken as of its
// last heartbeat received. If the assignment it replaces was held by
// another worker that is gone, that one is returned: the caller must treat
// it as lost.
func (r *registry) assign(cid, agent, worker string, hbSeq, epoch uint64) (lostConversation, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.workers[workerKey(agent, worker)]; hbSeq == 0 && w != nil {
		hbSeq = w.hbSeq
	}
	prev, had := r.getLocked(cid, agent)
	r.setLocked(cid, assignment{agent: agent, worker: worker, hbSeq: hbSeq, epoch: epoch})
	if had && prev.worker != worker && r.goneLocked(prev, now) {
		return lostConversation{cid: cid, agent: agent, worker: prev.worker}, true
	}
	return lostConversation{}, false
}

// learn records an assignment another broker made (its status notice),
// when worker is a live worker of agent: it holds cid from now on, as of
// its latest heartbeat. A worker not (yet) known here is left to its
// heartbeats.
func (r *registry) learn(cid, agent, worker string, epoch uint64) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[workerKey(agent, worker)]
	if w == nil || w.agent != agent || w.draining || now.Sub(w.lastSeen) > r.timeout {
		return
	}
	if a, ok := r.getLocked(cid, agent); ok && a.worker == worker && a.epoch >= epoch {
		return
	}
	r.setLocked(cid, assignment{agent: agent, worker: worker, hbSeq: w.hbSeq, epoch: epoch})
}

// release forgets who holds cid (the worker releases it on its own).
func (r *registry) release(cid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for agent := range r.assigned[cid] {
		r.deleteLocked(cid, agent)
	}
}

// goneLocked reports whether the worker of a is gone: unknown, draining,
// or silent for longer than the timeout.
func (r *registry) goneLocked(a assignment, now time.Time) bool {
	w := r.workers[workerKey(a.agent, a.worker)]
	return w == nil || w.draining || now.Sub(w.lastSeen) > r.timeout
}

// releasedLocked reports whether the (live) worker of a has sent a
// heartbeat since it accepted the conversation that leaves it out.
func (r *registry) releasedLocked(cid string, a assignment) bool {
	w := r.workers[workerKey(a.agent, a.worker)]
	if w == nil || w.hbSeq <= a.hbSeq {
		return false
	}
	_, listed := w.convs[cid]
	return !listed
}

// owner returns the live worker of agent holding cid, if any: one that heartbeats,
// is not draining, and has sent no heartbeat since it accepted cid that
// leaves cid out. It only reads: an assignment whose worker is gone stays
// until sweep or takeLost hands it over as lost.
func (r *registry) owner(cid, agent string) (string, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.getLocked(cid, agent)
	if !ok || r.goneLocked(a, now) || r.releasedLocked(cid, a) {
		return "", false
	}
	return a.worker, true
}

// owners returns the live holders of the given conversations (conversation
// id → its agent; those without a holder are left out), in one pass.
func (r *registry) owners(convs map[string]string) map[string]string {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(convs))
	for cid, agent := range convs {
		a, ok := r.getLocked(cid, agent)
		if ok && !r.goneLocked(a, now) && !r.releasedLocked(cid, a) {
			out[cid] = a.worker
		}
	}
	return out
}

// lostConversation is a conversation whose worker (of agent) went away.
// The agent is the worker's: a claim from a worker of another agent than
// the conversation's is not a loss (dispatcher.lost checks).
type lostConversation struct{ cid, agent, worker string }

// takeLost removes cid's assignment if its worker is gone and returns it;
// the caller handles it as lost. It is how a visitor's action finds a loss
// before the next sweep does; exactly one of them gets it.
func (r *registry) takeLost(cid, agent string) (lostConversation, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.getLocked(cid, agent)
	if !ok || !r.goneLocked(a, now) {
		return lostConversation{}, false
	}
	r.deleteLocked(cid, agent)
	return lostConversation{cid: cid, agent: agent, worker: a.worker}, true
}

// sweep forgets the conversations held by workers that went silent or are
// draining, and returns them; conversations their (live) workers released
// are forgotten quietly.
func (r *registry) sweep() []lostConversation {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var lost []lostConversation
	for cid, m := range r.assigned {
		for agent, a := range m {
			switch {
			case r.goneLocked(a, now):
				r.deleteLocked(cid, agent)
				lost = append(lost, lostConversation{cid: cid, agent: agent, worker: a.worker})
			case r.releasedLocked(cid, a):
				r.deleteLocked(cid, agent)
			}
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
