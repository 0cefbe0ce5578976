package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	// released: conversation id → the last release (the log seq of the
	// session_ended that let the worker go). A dispatch that read the log
	// head before that seq was answered by a worker that releases the
	// conversation when it reads that event, so its assignment is stale;
	// heartbeats listing the conversation may predate the release too.
	// Marks are kept for markTTL (longer than any dispatch in flight).
	released map[string]releaseMark
	markTTL  time.Duration
	sub      *nats.Subscription
	subj     agentbridge.Subjects
	// closedConns: NATS connections the server said closed, → when. A
	// heartbeat naming one (sent just before, delivered after) is stale.
	closedConns map[natsConn]time.Time
	// onConnGone is called (outside mu, on the event's delivery goroutine)
	// when a worker's connection closed: the caller sweeps at once.
	onConnGone func()
	connSub    *nats.Subscription
}

// natsConn names a NATS client connection: the server it is on and the
// client id that server gave it.
type natsConn struct {
	server string
	cid    uint64
}

type releaseMark struct {
	seq uint64
	at  time.Time
}

type workerInfo struct {
	id, agent string
	lastSeen  time.Time
	hbSeq     uint64   // Seq of the newest heartbeat applied
	capacity  int      // conversations the worker says it can hold (0: not said)
	conn      natsConn // the connection its heartbeats name (zero: not named)
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
	// trustedAt is when a visitor's action last relied on this holding
	// (holder): if the worker turns out to have released the conversation
	// around then, that action may have gone unseen.
	trustedAt time.Time
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
		assigned: make(map[string]map[string]assignment), released: make(map[string]releaseMark),
		closedConns: make(map[natsConn]time.Time),
		markTTL:     10 * timeout, subj: agentbridge.NewSubjects("")}
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
	subs := []*nats.Subscription{r.sub, r.connSub}
	r.mu.Unlock()
	for _, sub := range subs {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
}

// watchConns subscribes to the server's disconnect events of the account's
// clients (the embedded server exports them to Parley's account).
func (r *registry) watchConns(nc *nats.Conn, subject string) error {
	sub, err := nc.Subscribe(subject, r.onDisconnect)
	if err != nil {
		return fmt.Errorf("broker: subscribe disconnect events: %w", err)
	}
	r.mu.Lock()
	r.connSub = sub
	r.mu.Unlock()
	return nil
}

// onDisconnect applies a server's disconnect event: the workers whose
// heartbeats name that connection are gone now, unless the server itself
// is shutting down (its clients reconnect to another; their next
// heartbeats say so, and missed ones catch those that do not).
func (r *registry) onDisconnect(m *nats.Msg) {
	var ev server.DisconnectEventMsg
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Client.ID == 0 ||
		ev.Reason == server.ServerShutdown.String() {
		return
	}
	if r.connClosed(natsConn{server: ev.Server.ID, cid: ev.Client.ID}) && r.onConnGone != nil {
		r.onConnGone()
	}
}

// connClosed marks the workers on conn gone, and reports whether there
// were any.
func (r *registry) connClosed(conn natsConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closedConns[conn] = r.now()
	gone := false
	for _, w := range r.workers {
		if w.conn == conn {
			w.lastSeen, gone = time.Time{}, true
		}
	}
	if gone {
		r.gen.Add(1)
	}
	return gone
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
	conn := natsConn{server: hb.NATSServerID, cid: hb.NATSClientID}
	if _, closed := r.closedConns[conn]; closed && conn.cid != 0 {
		return false // sent before its connection closed, delivered after
	}
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
	w.lastSeen, w.draining, w.hbSeq, w.capacity = now, hb.Draining, seq, max(hb.Capacity, 0)
	w.conn = conn
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
		if _, fenced := r.released[cid]; fenced {
			// Released lately: this heartbeat may predate the worker's
			// reading of the release. Holdings come from dispatches.
			continue
		}
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
// its heartbeat hbSeq, on a dispatch request that carried the log head
// headSeq. A worker that does not number its heartbeats (hbSeq 0) is taken
// as of its last heartbeat received. If the assignment it replaces was
// held by another worker that is gone, that one is returned: the caller
// must treat it as lost.
//
// A dispatch whose headSeq is before the conversation's last release is
// stale (the worker releases the conversation on reading that event, as
// agentbridge does): nothing is recorded and errStaleDispatch is returned.
func (r *registry) assign(cid, agent, worker string, hbSeq, epoch, headSeq uint64) (lostConversation, bool, error) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.released[cid]; ok {
		if headSeq < m.seq {
			return lostConversation{}, false, errStaleDispatch
		}
		delete(r.released, cid)
	}
	if w := r.workers[workerKey(agent, worker)]; hbSeq == 0 && w != nil {
		hbSeq = w.hbSeq
	}
	prev, had := r.getLocked(cid, agent)
	r.setLocked(cid, assignment{agent: agent, worker: worker, hbSeq: hbSeq, epoch: epoch})
	if had && prev.worker != worker && r.goneLocked(prev, now) {
		return lostConversation{cid: cid, agent: agent, worker: prev.worker}, true, nil
	}
	return lostConversation{}, false, nil
}

// errStaleDispatch: a dispatch was accepted on a view of the log from
// before the conversation's release; the worker lets it go.
var errStaleDispatch = errors.New("broker: the dispatch predates the conversation's release")

// learn records an assignment a broker made (its status notice, this
// broker's own included), when worker is a live worker of agent: it holds
// cid from now on, as of its latest heartbeat. A worker not (yet) known
// here is left to its heartbeats. A notice of a dispatch made on a log head
// before cid's last release is stale (the worker lets cid go) and ignored.
func (r *registry) learn(cid, agent, worker string, epoch, headSeq uint64) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.released[cid]; ok && headSeq < m.seq {
		return
	}
	w := r.workers[workerKey(agent, worker)]
	if w == nil || w.agent != agent || w.draining || now.Sub(w.lastSeen) > r.timeout {
		return
	}
	if a, ok := r.getLocked(cid, agent); ok && a.worker == worker && a.epoch >= epoch {
		return
	}
	r.setLocked(cid, assignment{agent: agent, worker: worker, hbSeq: w.hbSeq, epoch: epoch})
}

// release forgets who holds cid: the worker releases it on its own when it
// reads the log event at seq. Until a dispatch made on a view of the log
// that includes seq, assignments are not taken from dispatches that did
// not, nor from heartbeats.
func (r *registry) release(cid string, seq uint64) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for agent := range r.assigned[cid] {
		r.deleteLocked(cid, agent)
	}
	if m, ok := r.released[cid]; !ok || seq > m.seq {
		r.released[cid] = releaseMark{seq: seq, at: now}
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
func (r *registry) owner(cid, agent string) (string, bool) { return r.live(cid, agent, false) }

// holder is owner for a visitor's action that relies on the answer: the
// holding is stamped, so that a release the worker's next heartbeat
// reveals soon after is reported by sweep for a new dispatch.
func (r *registry) holder(cid, agent string) (string, bool) { return r.live(cid, agent, true) }

func (r *registry) live(cid, agent string, trust bool) (string, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.getLocked(cid, agent)
	if !ok || r.goneLocked(a, now) || r.releasedLocked(cid, a) {
		return "", false
	}
	if trust {
		a.trustedAt = now
		r.assigned[cid][agent] = a
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
// draining, and returns them as lost. Conversations their (live) workers
// released are forgotten; those a visitor's action relied on within the
// heartbeat timeout are returned as recheck: the action may have reached
// the worker after it let go, so the caller dispatches them again if a
// visitor is still there.
func (r *registry) sweep() (lost, recheck []lostConversation) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for cid, m := range r.assigned {
		for agent, a := range m {
			switch {
			case r.goneLocked(a, now):
				r.deleteLocked(cid, agent)
				lost = append(lost, lostConversation{cid: cid, agent: agent, worker: a.worker})
			case r.releasedLocked(cid, a):
				r.deleteLocked(cid, agent)
				if !a.trustedAt.IsZero() && now.Sub(a.trustedAt) <= r.timeout {
					recheck = append(recheck, lostConversation{cid: cid, agent: agent, worker: a.worker})
				}
			}
		}
	}
	for cid, m := range r.released {
		if now.Sub(m.at) > r.markTTL {
			delete(r.released, cid)
		}
	}
	for c, at := range r.closedConns {
		if now.Sub(at) > r.markTTL {
			delete(r.closedConns, c)
		}
	}
	return lost, recheck
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

// holdings returns, in one pass, the conversations live workers hold
// (conversation id → the agent holding it) and the capacity of each
// agent: the sum its live, non-draining workers declare. An agent one of
// whose workers declares no capacity is left out of capacity (unknown).
func (r *registry) holdings() (held map[string]string, capacity map[string]int) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	held = make(map[string]string, len(r.assigned))
	for cid, m := range r.assigned {
		for agent, a := range m {
			if !r.goneLocked(a, now) && !r.releasedLocked(cid, a) {
				held[cid] = agent
			}
		}
	}
	capacity = make(map[string]int)
	unknown := make(map[string]bool)
	for _, w := range r.workers {
		switch {
		case w.draining || now.Sub(w.lastSeen) > r.timeout:
		case w.capacity == 0:
			unknown[w.agent] = true
		default:
			capacity[w.agent] += w.capacity
		}
	}
	for agent := range unknown {
		delete(capacity, agent)
	}
	return held, capacity
}
