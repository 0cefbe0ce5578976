package broker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// TestDispatchOutdatedBySessionEnd: a visitor ends the only session while
// its dispatch is still out, then comes back (a resumed session). The
// worker took the first dispatch on a log head before session_ended, so it
// lets the conversation go when it reads that event. The broker must not
// count that worker as the holder: the new session is dispatched again,
// whether it starts before the late reply comes back (the loop runs once
// more) or after. Before, the late reply was recorded, the registry
// trusted it and the resumed session's message waited for a worker that
// had left (TestEndSession's REPLY_TIMEOUT under load).
func TestDispatchOutdatedBySessionEnd(t *testing.T) {
	for _, resumeFirst := range []bool{true, false} {
		name := "resume after the late reply"
		if resumeFirst {
			name = "resume before the late reply"
		}
		t.Run(name, func(t *testing.T) { testDispatchOutdated(t, resumeFirst) })
	}
}

// handWorker speaks the agent protocol by hand on real NATS, so a test
// decides when it answers a dispatch and what its heartbeats list.
type handWorker struct {
	t    *testing.T
	b    *Broker
	ctx  context.Context
	nc   *nats.Conn
	reqs chan *nats.Msg
	seq  uint64
}

const handWorkerID = "wrk_hand"

// startHandBroker starts a broker whose dispatches wait dispatchTimeout
// for a reply (long when the test holds replies) and whose workers count as
// alive for hbTimeout, with one hand worker of agent echo.
func startHandBroker(t *testing.T, dispatchTimeout, hbTimeout time.Duration) (*Broker, *handWorker) {
	b := startBrokerWith(t, nil, func(cfg *configs.Config) {
		cfg.Agents.DispatchTimeout = dispatchTimeout
		cfg.Agents.HeartbeatTimeout = hbTimeout
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	w := &handWorker{t: t, b: b, ctx: ctx, reqs: make(chan *nats.Msg, 8),
		nc: connectAs(t, b, AgentRole("echo"), agentbridge.ConnectOptions(b.subj.Prefix, "echo")...)}
	if _, err := w.nc.ChanSubscribe(b.subj.Dispatch("echo"), w.reqs); err != nil {
		t.Fatal(err)
	}
	w.heartbeat()
	agenttest.Poll(t, 10*time.Second, "the worker's heartbeat", func() bool { return b.AliveWorkers("echo") == 1 })
	return b, w
}

// heartbeat sends the worker's next heartbeat, listing convs.
func (w *handWorker) heartbeat(convs ...string) {
	w.t.Helper()
	w.seq++
	hb, _ := json.Marshal(agentbridge.Heartbeat{V: agentbridge.Version, WorkerID: handWorkerID, Agent: "echo",
		Seq: w.seq, IntervalMS: 1000, Conversations: convs})
	if err := w.nc.Publish(w.b.subj.Heartbeat("echo"), hb); err != nil {
		w.t.Fatal(err)
	}
}

// next waits for the next dispatch request.
func (w *handWorker) next(what string) (*nats.Msg, agentbridge.DispatchRequest) {
	w.t.Helper()
	select {
	case m := <-w.reqs:
		var req agentbridge.DispatchRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			w.t.Fatal(err)
		}
		return m, req
	case <-w.ctx.Done():
		w.t.Fatalf("no dispatch request: %s", what)
		return nil, agentbridge.DispatchRequest{}
	}
}

// accept answers a dispatch request: taken, as of the last heartbeat.
func (w *handWorker) accept(m *nats.Msg) {
	w.t.Helper()
	data, _ := json.Marshal(agentbridge.DispatchReply{Accepted: true, WorkerID: handWorkerID, HeartbeatSeq: w.seq})
	if err := m.Respond(data); err != nil {
		w.t.Fatal(err)
	}
}

func testDispatchOutdated(t *testing.T, resumeFirst bool) {
	b, hw := startHandBroker(t, 20*time.Second, time.Minute)
	ctx, next, accept := hw.ctx, hw.next, hw.accept
	const worker = handWorkerID

	first := startEngagedSession(ctx, t, b)
	cid := first.Session.ConversationID
	m1, r1 := next("for the first session")
	if err := b.EndSession(ctx, first.Session.ID, "visitor_ended"); err != nil {
		t.Fatal(err)
	}
	resume := func() {
		t.Helper()
		s, err := b.StartSession(ctx, StartRequest{Widget: "pk_demo", Agent: "echo", Origin: "http://localhost", ResumeToken: first.ResumeToken})
		if err != nil || s.Session.ConversationID != cid {
			t.Fatalf("resume: %v (conversation %s, want %s)", err, s.Session.ConversationID, cid)
		}
	}
	if resumeFirst {
		resume()
		accept(m1) // late: the conversation was released meanwhile
	} else {
		accept(m1)
		agenttest.Poll(t, 10*time.Second, "the first dispatch loop to end", func() bool {
			b.dispatcher.mu.Lock()
			defer b.dispatcher.mu.Unlock()
			return !b.dispatcher.running[cid]
		})
		if w, ok := b.registry.owner(cid, "echo"); ok {
			t.Fatalf("the late reply made %s the holder of a released conversation", w)
		}
		resume()
	}
	m2, r2 := next("for the resumed session")
	if r2.HeadSeq <= r1.HeadSeq {
		t.Fatalf("second dispatch head %d, first %d: not taken after the release", r2.HeadSeq, r1.HeadSeq)
	}
	accept(m2)
	agenttest.Poll(t, 10*time.Second, "the worker to hold the conversation", func() bool {
		w, ok := b.registry.owner(cid, "echo")
		return ok && w == worker
	})
}

// TestDispatchAgainWhenHolderLetGo: a visitor writes just as the holding
// worker lets the conversation go (idle), before its heartbeat says so.
// The broker relied on a holder that had left; when the heartbeat shows
// the release, it dispatches the conversation again, so the message is
// answered without the visitor writing twice.
func TestDispatchAgainWhenHolderLetGo(t *testing.T) {
	// The sweep that finds the release runs every quarter of it.
	b, hw := startHandBroker(t, 20*time.Second, 3*time.Second)
	res := startEngagedSession(hw.ctx, t, b)
	cid := res.Session.ConversationID
	m, _ := hw.next("for the session")
	hw.accept(m)
	hw.heartbeat(cid)
	agenttest.Poll(t, 10*time.Second, "the worker to hold the conversation", func() bool {
		_, ok := b.registry.owner(cid, "echo")
		return ok
	})
	hw.heartbeat(cid) // alive and holding it as the visitor writes
	if _, err := b.PostMessage(hw.ctx, res.Session, "still there?", "m-1", ""); err != nil {
		t.Fatal(err)
	}
	hw.heartbeat() // it had let go just before the message came
	_, req := hw.next("after the worker's release came to light")
	if req.ConversationID != cid {
		t.Fatalf("dispatch of %s, want %s", req.ConversationID, cid)
	}
}

// TestDispatchAgainWhenAcceptanceUnrecorded: a worker takes a dispatch but
// its reply does not reach the broker in time (a busy machine, a new
// worker starting up). The worker holds the conversation at the request's
// epoch and its heartbeat says so; the record does not. The broker used to
// take the heartbeat for a dispatch, so the record never got the epoch and
// every append of the worker was held and then refused: a message after an
// agent crash went unanswered (TestAgentProcessKill9DuringCalls under
// load). The broker now asks again until the record has the holder, and the
// worker's appends at the first request's epoch are stored.
func TestDispatchAgainWhenAcceptanceUnrecorded(t *testing.T) {
	b, hw := startHandBroker(t, 2*time.Second, time.Minute)
	res := startEngagedSession(hw.ctx, t, b)
	cid := res.Session.ConversationID
	_, r1 := hw.next("for the session")
	// Taken, but the reply is lost: only the heartbeat tells.
	hw.heartbeat(cid)
	agenttest.Poll(t, 10*time.Second, "the registry to learn the holder from the heartbeat", func() bool {
		w, ok := b.registry.owner(cid, "echo")
		return ok && w == handWorkerID
	})
	m2, r2 := hw.next("again, as the first acceptance was not recorded")
	if r2.Epoch != r1.Epoch {
		t.Errorf("second request at epoch %d, first at %d: the record moved without an acceptance", r2.Epoch, r1.Epoch)
	}
	hw.accept(m2)
	agenttest.Poll(t, 10*time.Second, "the record to name the worker", func() bool {
		c, err := b.Conversation(hw.ctx, cid)
		return err == nil && c.WorkerID == handWorkerID && c.Epoch >= r1.Epoch
	})
	r := appendReq(t, hw.nc, b.subj.Append("echo"), delta(cid, handWorkerID, r1.Epoch, "Hello"), "msg_a1/0")
	if r.Error != nil || r.Seq == 0 {
		t.Fatalf("the holder's append at the first request's epoch %d: %+v", r1.Epoch, r.Error)
	}
}
