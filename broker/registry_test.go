package broker

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// heartbeat feeds r one heartbeat of worker id (agent "echo") the way its
// NATS subscription does.
func heartbeat(r *registry, id string, seq uint64, draining bool, convs ...string) {
	data, _ := json.Marshal(agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: id, Agent: "echo", Seq: seq, Draining: draining, Conversations: convs})
	r.onHeartbeat(&nats.Msg{Subject: "parley.agents.echo.heartbeat", Data: data})
}

// newClockedRegistry returns a registry that counts a worker gone after a
// second without a heartbeat, by a clock that reads *now.
func newClockedRegistry(now *time.Time) *registry {
	r := newRegistry(time.Second)
	r.now = func() time.Time { return *now }
	return r
}

// TestRegistryReadsKeepLostConversations: asking who holds a conversation
// whose worker went silent (as the rooms flush does every 250 ms for busy
// rooms) must not forget the assignment; the sweep then reports the
// conversation lost, once. Before, owner() deleted it and the sweep never
// saw the loss: no agent_lost, no re-dispatch.
func TestRegistryReadsKeepLostConversations(t *testing.T) {
	r := newRegistry(50 * time.Millisecond)
	heartbeat(r, "w1", 1, false)
	r.assign("c1", "echo", "w1", 1, 1, 0)
	if w, ok := r.owner("c1", "echo"); !ok || w != "w1" {
		t.Fatalf("owner = %q, %v right after assignment", w, ok)
	}
	// The worker dies: no more heartbeats. Read until it counts as gone.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, ok := r.owner("c1", "echo"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a silent worker still owns the conversation")
		}
		<-tick.C
	}
	for range 10 {
		if _, ok := r.owner("c1", "echo"); ok {
			t.Fatal("a silent worker owns the conversation again")
		}
		if len(r.owners(map[string]string{"c1": "echo"})) != 0 {
			t.Fatal("owners lists a silent worker")
		}
	}
	lost, _ := r.sweep()
	if !slices.Equal(lost, []lostConversation{{cid: "c1", agent: "echo", worker: "w1"}}) {
		t.Fatalf("sweep after reads = %+v, want c1 lost by w1", lost)
	}
	if lost, _ := r.sweep(); len(lost) != 0 {
		t.Fatalf("second sweep = %+v, want nothing", lost)
	}
}

// TestRegistryLossHandedOnce: a loss is handed to exactly one of sweep,
// takeLost (a visitor's action) and assign (a dispatch replacing the dead
// worker's assignment); a conversation a live worker released is forgotten
// without being reported lost.
func TestRegistryLossHandedOnce(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newClockedRegistry(&now)

	heartbeat(r, "w1", 1, false)
	heartbeat(r, "w2", 1, false)
	r.assign("c1", "echo", "w1", 1, 1, 0)
	r.assign("c2", "echo", "w1", 1, 1, 0)
	r.assign("c3", "echo", "w1", 1, 1, 0)
	r.assign("c4", "echo", "w2", 1, 1, 0)
	if _, ok := r.takeLost("c1", "echo"); ok {
		t.Fatal("takeLost took a live worker's conversation")
	}
	if _, ok, _ := r.assign("c4", "echo", "w2", 1, 2, 0); ok {
		t.Fatal("re-assigning to the same live worker reported a loss")
	}

	now = now.Add(2 * time.Second) // w1 and w2 go silent
	heartbeat(r, "w2", 2, false)   // w2 comes back; it no longer lists c4
	if l, ok := r.takeLost("c1", "echo"); !ok || l != (lostConversation{cid: "c1", agent: "echo", worker: "w1"}) {
		t.Fatalf("takeLost(c1) = %+v, %v", l, ok)
	}
	if _, ok := r.takeLost("c1", "echo"); ok {
		t.Fatal("a loss was handed out twice")
	}
	if l, ok, _ := r.assign("c2", "echo", "w2", 2, 2, 0); !ok || l != (lostConversation{cid: "c2", agent: "echo", worker: "w1"}) {
		t.Fatalf("assign over a dead worker's conversation = %+v, %v", l, ok)
	}
	lost, _ := r.sweep()
	if !slices.Equal(lost, []lostConversation{{cid: "c3", agent: "echo", worker: "w1"}}) {
		t.Fatalf("sweep = %+v, want only c3 lost (c1 taken, c2 reassigned, c4 released)", lost)
	}
	if _, ok := r.assigned["c4"]; ok {
		t.Fatal("the sweep kept a released conversation")
	}
	if w, ok := r.owner("c2", "echo"); !ok || w != "w2" {
		t.Fatalf("owner(c2) = %q, %v", w, ok)
	}
}

// TestRegistryWorkerAppeared: the registry announces a worker that can take
// conversations when it first heartbeats, restarts, comes back after going
// silent or stops draining, and only then.
func TestRegistryWorkerAppeared(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newClockedRegistry(&now)
	var appeared []string
	r.onAppear = func(agent string) { appeared = append(appeared, agent) }
	step := func(what string, want bool, hb func()) {
		t.Helper()
		appeared = nil
		hb()
		if got := len(appeared) == 1 && appeared[0] == "echo"; got != want || len(appeared) > 1 {
			t.Fatalf("%s: appeared %q, want announced=%v", what, appeared, want)
		}
	}
	step("first heartbeat", true, func() { heartbeat(r, "w1", 1, false) })
	step("next heartbeat", false, func() { heartbeat(r, "w1", 2, false) })
	step("stale heartbeat", false, func() { heartbeat(r, "w1", 2, false) })
	step("draining", false, func() { heartbeat(r, "w1", 3, true) })
	step("drained no more", true, func() { heartbeat(r, "w1", 4, false) })
	now = now.Add(2 * time.Second)
	step("back after silence", true, func() { heartbeat(r, "w1", 5, false) })
	step("restarted", true, func() { heartbeat(r, "w1", 1, false) })
	step("new worker draining at once", false, func() { heartbeat(r, "w2", 1, true) })
}

// TestRegistryAgentFromSubject: a heartbeat's agent is its subject's, never
// its body's; a worker of agent B listing a conversation of agent A never
// becomes A's holder there, nor replaces A's worker; a worker id that is not
// one subject token, or a heartbeat of another protocol version, is ignored.
func TestRegistryAgentFromSubject(t *testing.T) {
	r := newRegistry(time.Second)
	send := func(subject string, hb agentbridge.Heartbeat) {
		data, _ := json.Marshal(hb)
		r.onHeartbeat(&nats.Msg{Subject: subject, Data: data})
	}
	send("parley.agents.echo.heartbeat", agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: "wa", Seq: 1})
	r.assign("c1", "echo", "wa", 1, 1, 0)
	// Worker wb of agent "evil" claims c1 and c2, saying it is "echo".
	send("parley.agents.evil.heartbeat", agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: "wb", Agent: "echo", Seq: 1,
		Conversations: []string{"c1", "c2"}})
	if w, ok := r.owner("c1", "echo"); !ok || w != "wa" {
		t.Fatalf("owner(c1, echo) = %q, %v after another agent's claim; want wa", w, ok)
	}
	if w, ok := r.owner("c2", "echo"); ok {
		t.Fatalf("owner(c2, echo) = %q: another agent's worker holds it", w)
	}
	if n := r.alive("echo"); n != 1 {
		t.Fatalf("alive(echo) = %d, want 1 (the body's agent is not believed)", n)
	}
	if n := r.alive("evil"); n != 1 {
		t.Fatalf("alive(evil) = %d, want 1", n)
	}
	send("parley.agents.echo.heartbeat", agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: "../../x y", Seq: 1})
	send("parley.agents.echo.heartbeat", agentbridge.Heartbeat{V: 1, WorkerID: "w1", Seq: 1})
	send("parley.agents.echo.heartbeat", agentbridge.Heartbeat{V: 3, WorkerID: "w3", Seq: 1})
	if n := r.alive("echo"); n != 1 {
		t.Fatalf("alive(echo) = %d after invalid heartbeats, want 1", n)
	}
	// A loss names the agent of the worker that held it: the claim of
	// the other agent's worker is reported under that agent (which the
	// dispatcher checks against the conversation's), never as echo's.
	r.now = func() time.Time { return time.Now().Add(time.Hour) }
	lost, _ := r.sweep()
	for _, l := range lost {
		if l.cid == "c1" && (l.agent == "echo") != (l.worker == "wa") {
			t.Fatalf("sweep reports %+v", l)
		}
	}
}

// TestRegistryWorkerIDOfAnotherAgent: a worker of another agent heartbeating
// under the same worker id is another worker: the real one keeps its
// conversations, is not reported lost, and stays counted for its agent.
func TestRegistryWorkerIDOfAnotherAgent(t *testing.T) {
	r := newRegistry(time.Second)
	send := func(agent string, seq uint64, draining bool, convs ...string) {
		data, _ := json.Marshal(agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: "w1", Seq: seq, Draining: draining, Conversations: convs})
		r.onHeartbeat(&nats.Msg{Subject: "parley.agents." + agent + ".heartbeat", Data: data})
	}
	send("echo", 1, false)
	r.assign("c1", "echo", "w1", 1, 1, 0)
	send("evil", 5, true) // draining, higher seq, nothing listed
	if w, ok := r.owner("c1", "echo"); !ok || w != "w1" {
		t.Fatalf("owner(c1, echo) = %q, %v after another agent's w1 drained", w, ok)
	}
	if lost, _ := r.sweep(); len(lost) != 0 {
		t.Fatalf("sweep = %+v, want nothing lost", lost)
	}
	if n := r.alive("echo"); n != 1 {
		t.Fatalf("alive(echo) = %d, want 1", n)
	}
}

// TestRegistryReleaseFencesStaleDispatch: the last session ends while a
// dispatch is out. The worker that accepts it releases the conversation
// when it reads session_ended (its dispatch's head is before it), so the
// registry must not record it as the holder, nor learn the holding back
// from a heartbeat sent before the worker read the release. Before, the
// late reply made the conversation look held and the next session's
// message went unanswered.
func TestRegistryReleaseFencesStaleDispatch(t *testing.T) {
	r := newRegistry(time.Second)
	heartbeat(r, "w1", 1, false)
	r.release("c1", 10) // session_ended(idle) stored at seq 10
	if _, _, err := r.assign("c1", "echo", "w1", 1, 1, 9); err != errStaleDispatch {
		t.Fatalf("assign on a head before the release: err = %v, want errStaleDispatch", err)
	}
	if _, ok := r.owner("c1", "echo"); ok {
		t.Fatal("a stale dispatch made the conversation look held")
	}
	heartbeat(r, "w1", 2, false, "c1") // sent before w1 read session_ended
	if _, ok := r.owner("c1", "echo"); ok {
		t.Fatal("a heartbeat from before the release made the conversation look held")
	}
	// The status notice of a dispatch made before the release (this
	// broker's own, delivered late) is as stale as its reply.
	r.learn("c1", "echo", "w1", 1, 9)
	if _, ok := r.owner("c1", "echo"); ok {
		t.Fatal("a late notice of a dispatch from before the release made the conversation look held")
	}
	// A dispatch that saw the release holds it.
	if _, _, err := r.assign("c1", "echo", "w1", 2, 2, 10); err != nil {
		t.Fatal(err)
	}
	if w, ok := r.owner("c1", "echo"); !ok || w != "w1" {
		t.Fatalf("owner after a fresh dispatch = %q %v", w, ok)
	}
	// Marks do not outlive their use: a release long ago fences nothing.
	clock := time.Now()
	r.now = func() time.Time { return clock }
	r.release("c2", 5)
	clock = clock.Add(r.markTTL + time.Second)
	_, _ = r.sweep()
	if _, _, err := r.assign("c2", "echo", "w1", 2, 1, 1); err != nil {
		t.Fatalf("a release older than markTTL still fences: %v", err)
	}
}

// TestRegistryRecheckReleaseAVisitorReliedOn: a visitor's action relied on
// a holding (holder) and the worker's next heartbeat shows it had let the
// conversation go: the sweep reports it for a new dispatch. A release
// nobody relied on lately (an idle conversation) is forgotten quietly.
func TestRegistryRecheckReleaseAVisitorReliedOn(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newClockedRegistry(&now)
	heartbeat(r, "w1", 1, false)
	r.assign("c1", "echo", "w1", 1, 1, 0)
	r.assign("c2", "echo", "w1", 1, 1, 0)
	heartbeat(r, "w1", 2, false, "c1", "c2")
	now = now.Add(10 * time.Minute)
	heartbeat(r, "w1", 3, false, "c1", "c2")
	if w, ok := r.holder("c1", "echo"); !ok || w != "w1" {
		t.Fatalf("holder(c1) = %q %v", w, ok)
	}
	now = now.Add(100 * time.Millisecond)
	heartbeat(r, "w1", 4, false) // w1 released both (idle) about then
	lost, recheck := r.sweep()
	if len(lost) != 0 || !slices.Equal(recheck, []lostConversation{{cid: "c1", agent: "echo", worker: "w1"}}) {
		t.Fatalf("sweep = lost %+v, recheck %+v; want only c1 to recheck", lost, recheck)
	}
	if _, recheck := r.sweep(); len(recheck) != 0 {
		t.Fatalf("second sweep rechecks %+v", recheck)
	}
}
