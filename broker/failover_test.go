package broker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// TestMessageInDetectionWindowAnswered: a visitor writes after the worker
// holding the conversation died but before the broker can tell (the
// heartbeat timeout). The rooms flush that follows, once the worker counts
// as dead, must not make the registry forget it: the sweep then reports the
// conversation lost and the other worker answers the message, without the
// visitor writing again. Before, the flush's owner() dropped the
// assignment, the sweep saw nothing and the message waited for the
// visitor's next one.
func TestMessageInDetectionWindowAnswered(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 3 s heartbeat timeout")
	}
	b := startBrokerWith(t, nil, func(cfg *configs.Config) {
		cfg.Agents.DispatchTimeout = 500 * time.Millisecond
		cfg.Agents.HeartbeatTimeout = 3 * time.Second
	})
	worker := func() (*agentbridge.Worker, *nats.Conn) {
		return startEchoWorker(t, b, agentbridge.Options{HeartbeatInterval: 100 * time.Millisecond})
	}
	w1, nc1 := worker()
	s := startEngagedSession(t.Context(), t, b).Session
	cid := s.ConversationID
	agenttest.Poll(t, 10*time.Second, "worker 1 to hold the conversation", func() bool { w, ok := b.registry.owner(cid, "echo"); return ok && w == w1.ID() })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, cid) // the visitor's live leg
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	b.LegAttached(s, "leg_test", "http")
	worker() // worker 2, which takes over
	agenttest.Poll(t, 10*time.Second, "worker 2 to heartbeat", func() bool { return b.AliveWorkers("echo") == 2 })

	// The broker learns of the death from missed heartbeats only, as with
	// an external NATS that sends it no disconnect events, or an agent
	// whose heartbeats do not name its connection.
	if err := b.registry.connSub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	nc1.Close() // worker 1's process dies: no drain, no more heartbeats
	p, err := b.PostMessage(ctx, s, "are you there?", "m-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if w, ok := b.registry.owner(cid, "echo"); !ok || w != w1.ID() {
		t.Fatal("the message was not posted inside the detection window")
	}
	// The moment the broker can tell, a flush of the (busy) room runs.
	agenttest.Poll(t, 10*time.Second, "worker 1 to count as dead", func() bool { return b.AliveWorkers("echo") == 1 })
	b.LegAttached(s, "leg_test", "http") // the room is busy
	b.rooms.flush(ctx)
	dead := time.Now()

	m, err := b.AwaitReply(ctx, sub, p)
	if err != nil || m.Body != "echo: are you there?" {
		t.Fatalf("reply = %+v, %v", m, err)
	}
	t.Logf("worker 1 counts as dead → the other worker's answer: %v", time.Since(dead).Round(time.Millisecond))
}

// TestClosedConnectionFailsOverAtOnce: a worker whose NATS connection
// closes (a process killed: its socket closes with it) is gone as soon as
// the server says so, not after the heartbeat timeout (10 minutes here,
// so the periodic sweep runs every 2.5 minutes and cannot find it): the
// visitor is told the agent was lost, another worker takes the
// conversation and answers. A heartbeat the dead worker sent before its
// connection closed, delivered after, does not bring it back.
func TestClosedConnectionFailsOverAtOnce(t *testing.T) {
	b := startBrokerWith(t, nil, func(cfg *configs.Config) {
		fastDispatch(cfg)
		cfg.Agents.HeartbeatTimeout = 10 * time.Minute
	})
	opts := agentbridge.Options{HeartbeatInterval: 100 * time.Millisecond}
	w1, nc1 := startEchoWorker(t, b, opts)
	s := startEngagedSession(t.Context(), t, b).Session
	cid := s.ConversationID
	agenttest.Poll(t, 10*time.Second, "worker 1 to hold the conversation", func() bool {
		w, ok := b.registry.owner(cid, "echo")
		return ok && w == w1.ID()
	})
	w2, _ := startEchoWorker(t, b, opts)
	agenttest.Poll(t, 10*time.Second, "worker 2 to heartbeat", func() bool { return b.AliveWorkers("echo") == 2 })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, cid) // the visitor's live leg, on this broker
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	// Worker 1's last heartbeat, as it was on the wire when it died.
	stale := agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: w1.ID(), Seq: 1 << 40, Agent: "echo",
		Capacity: 1000, Conversations: []string{cid}, IntervalMS: 100, NATSServerID: nc1.ConnectedServerId()}
	stale.NATSClientID, _ = nc1.GetClientID()
	killed := time.Now()
	nc1.Close() // the process dies: no drain, no last heartbeat
	lost := false
	for !lost {
		select {
		case <-sub.Ready():
			updates, _ := sub.Take(nil)
			for _, u := range updates {
				lost = lost || u.Notice != nil && u.Notice.Kind == NoticeAgentLost && u.Notice.WorkerID == w1.ID()
			}
		case <-ctx.Done():
			t.Fatal("no agent_lost notice: the closed connection went unnoticed")
		}
	}
	t.Logf("connection closed → agent_lost: %v", time.Since(killed).Round(time.Millisecond))
	b.registry.applyHeartbeat(&stale)
	if b.registry.alive("echo") != 1 {
		t.Fatal("a heartbeat of the closed connection brought the dead worker back")
	}
	agenttest.Poll(t, 10*time.Second, "worker 2 to hold the conversation", func() bool {
		w, ok := b.registry.owner(cid, "echo")
		return ok && w == w2.ID()
	})
	p, err := b.PostMessage(ctx, s, "are you there?", "m-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := b.AwaitReply(ctx, sub, p); err != nil || m.Body != "echo: are you there?" {
		t.Fatalf("reply = %+v, %v", m, err)
	}
}
