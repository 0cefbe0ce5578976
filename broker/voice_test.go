package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// testLeg is the smallest MediaLeg: the broker plays to it and hangs it up.
type testLeg struct{ closed chan struct{} }

func (l *testLeg) Play(agentbridge.AudioFrame) {}
func (l *testLeg) ClearAudio()                 {}
func (l *testLeg) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

// startVoiceOn starts a voice leg of s with leg as its media; the leg
// ends when the test does.
func startVoiceOn(t testing.TB, b *Broker, s Session, leg MediaLeg) *Voice {
	t.Helper()
	v := b.NewVoice(s)
	if err := b.StartVoice(t.Context(), v, leg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.End(context.Background(), "test") })
	return v
}

// mediaStates reads the media_state events of leg from the conversation
// log, waiting until the closed one is there.
func mediaStates(t *testing.T, b *Broker, cid, leg string) []agentbridge.Event {
	t.Helper()
	return pollLog(t, b, cid, "media_state closed in the log",
		func(ev agentbridge.Event) bool { return ev.Type == agentbridge.EventMediaState && ev.LegID == leg },
		func(got []agentbridge.Event) bool {
			return slices.ContainsFunc(got, func(ev agentbridge.Event) bool { return ev.State == "closed" })
		})
}

// startTestVoice starts a session with a live voice leg on a testLeg.
func startTestVoice(t *testing.T, b *Broker) (Session, *Voice, *testLeg) {
	t.Helper()
	s := startSession(t, b)
	v := b.NewVoice(s)
	leg := &testLeg{closed: make(chan struct{})}
	if err := b.StartVoice(t.Context(), v, leg); err != nil {
		t.Fatal(err)
	}
	return s, v, leg
}

// TestMediaStatesLoggedInCallOrder makes many rapid state changes on a
// live voice leg, then closes its transport: the log holds every state in
// the order of the calls, and "closed" last.
func TestMediaStatesLoggedInCallOrder(t *testing.T) {
	b := startBroker(t)
	s, v, leg := startTestVoice(t, b)
	const n = 200
	states := []string{"connected", "disconnected", "failed", "connected"}
	for i := range n {
		v.MediaState(states[i%len(states)], fmt.Sprintf("r%03d", i))
	}
	v.TransportClosed(fmt.Sprintf("r%03d", n))

	got := mediaStates(t, b, s.ConversationID, v.ID())
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("leg not ended after its transport closed")
	}
	<-leg.closed
	inversions := 0
	for i := 1; i < len(got); i++ {
		if got[i].Reason < got[i-1].Reason {
			inversions++
		}
	}
	if len(got) != n+1 || inversions > 0 {
		t.Fatalf("%d media_state events with %d inversions, want %d in call order", len(got), inversions, n+1)
	}
	for i, ev := range got {
		want := "closed"
		if i < n {
			want = states[i%len(states)]
		}
		if ev.Reason != fmt.Sprintf("r%03d", i) || ev.State != want {
			t.Fatalf("event %d: %s %s, want %s r%03d", i, ev.State, ev.Reason, want, i)
		}
	}
	if got[n].State != "closed" {
		t.Fatalf("last media_state %q, want closed", got[n].State)
	}
}

// TestStateQueueDropPolicy fills a small queue with more states than it
// holds: intermediate states give way oldest first, terminal ones
// (failed, closed) are all kept, and what is left is in push order.
func TestStateQueueDropPolicy(t *testing.T) {
	q := stateQueue{max: 4}
	var pushed []queuedState
	dropped := 0
	for i := range 20 {
		st := queuedState{state: "connected", reason: fmt.Sprintf("r%02d", i)}
		switch i % 7 {
		case 3:
			st.state = stateFailed
		case 5:
			st.state = "disconnected"
		}
		pushed = append(pushed, st)
		if q.push(st) {
			dropped++
		}
	}
	// The newest intermediate state is kept (it replaced an older one).
	if last := q.items[len(q.items)-1]; last.reason != "r19" || len(q.items) != q.max {
		t.Fatalf("after 20 pushes: %+v", q.items)
	}
	closed := queuedState{state: stateClosed, reason: "r20", end: true}
	if q.push(closed) {
		dropped++
	}
	var got []queuedState
	for {
		st, ok := q.pop()
		if !ok {
			break
		}
		got = append(got, st)
	}
	failed := 0
	for _, st := range pushed {
		if st.state == stateFailed {
			failed++
		}
	}
	gotFailed := 0
	for i, st := range got {
		if i > 0 && st.reason <= got[i-1].reason {
			t.Fatalf("out of order: %+v", got)
		}
		if st.state == stateFailed {
			gotFailed++
		}
	}
	if gotFailed != failed || got[len(got)-1] != closed {
		t.Fatalf("kept %d of %d failed states, last %+v: %+v", gotFailed, failed, got[len(got)-1], got)
	}
	if len(got)+dropped != len(pushed)+1 {
		t.Fatalf("%d kept + %d dropped != %d pushed", len(got), dropped, len(pushed)+1)
	}
	t.Logf("pushed %d, kept %d, dropped %d", len(pushed)+1, len(got), dropped)
}

// playLeg counts the frames the broker plays to it.
type playLeg struct {
	testLeg
	played atomic.Int64
}

func newPlayLeg() *playLeg { return &playLeg{testLeg: testLeg{closed: make(chan struct{})}} }

func (l *playLeg) Play(agentbridge.AudioFrame) { l.played.Add(1) }

// TestAgentAudioOnlyFromHolder: the voice leg plays agent frames from the
// worker holding the conversation (Parley-Worker), and drops, counts and
// logs once those of any other worker or without the header.
func TestAgentAudioOnlyFromHolder(t *testing.T) {
	b, logs, obs := startWatchedBroker(t)
	s := startSession(t, b)
	heartbeat(b.registry, "w1", 1, false, s.ConversationID)
	b.registry.assign(s.ConversationID, "echo", "w1", 1, 1, 0)
	leg := newPlayLeg()
	startVoiceOn(t, b, s, leg)
	send := func(worker string, seq uint64) {
		m := agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: seq, Payload: []byte{1, 2, 3}}.Msg(b.subj.OutAudio("echo", s.ConversationID))
		if worker != "" {
			m.Header.Set(agentbridge.HeaderWorker, worker)
		}
		if err := b.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		send("w2", uint64(i))
		send("", uint64(i))
		send("w1", uint64(i))
	}
	agenttest.Poll(t, 5*time.Second, "the holder's frames played", func() bool { return leg.played.Load() == 5 })
	agenttest.Poll(t, 5*time.Second, "the others counted", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return obs.audio == 10
	})
	if n := strings.Count(logs.String(), "agent audio from a worker not holding the conversation"); n != 1 {
		t.Fatalf("refused audio logged %d times, want once", n)
	}
}

// clearLeg counts the broker's ClearAudio calls.
type clearLeg struct {
	testLeg
	cleared atomic.Int64
}

func (l *clearLeg) ClearAudio() { l.cleared.Add(1) }

// TestAgentClearAudioClearsPlayout: a clear_audio the holding worker
// appends through the broker empties the visitor's playout queue.
func TestAgentClearAudioClearsPlayout(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	holdConversation(t, b, s.ConversationID, "w1", 1, 1)
	leg := &clearLeg{testLeg: testLeg{closed: make(chan struct{})}}
	startVoiceOn(t, b, s, leg)
	nc := connectAs(t, b, AgentRole("echo"), nats.CustomInboxPrefix(b.subj.Inbox("echo")))
	r := appendReq(t, nc, b.subj.Append("echo"), map[string]any{"v": 2, "type": agentbridge.EventClearAudio,
		"conversation_id": s.ConversationID, "worker_id": "w1", "epoch": 1}, "")
	if r.Error != nil || r.Seq == 0 {
		t.Fatalf("clear_audio append = %+v", r)
	}
	agenttest.Poll(t, 5*time.Second, "the playout queue cleared", func() bool { return leg.cleared.Load() == 1 })
}

// BenchmarkAgentAudioFrame is the broker's cost per agent audio frame
// received from NATS, up to handing it to the leg's playout: the holder
// check (Parley-Worker against the registry), parsing the headers, and
// counting.
func BenchmarkAgentAudioFrame(b *testing.B) {
	br := startBroker(b)
	s := startSession(b, br)
	heartbeat(br.registry, "w1", 1, false, s.ConversationID)
	br.registry.assign(s.ConversationID, "echo", "w1", 1, 1, 0)
	leg := newPlayLeg()
	v := startVoiceOn(b, br, s, leg)
	m := agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: 1, Payload: make([]byte, 120)}.Msg(br.subj.OutAudio("echo", s.ConversationID))
	m.Header.Set(agentbridge.HeaderWorker, "w1")
	b.ReportAllocs()
	for b.Loop() {
		v.onAgentAudio(m)
	}
	if leg.played.Load() == 0 {
		b.Fatal("no frame played")
	}
}

// TestAgentAudioHolderChange: once the conversation goes to another worker,
// the old holder's frames are refused from the next one on (the leg's
// cached holder check follows the registry).
func TestAgentAudioHolderChange(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	for _, w := range []string{"w1", "w2"} {
		heartbeat(b.registry, w, 1, false)
	}
	b.registry.assign(s.ConversationID, "echo", "w1", 1, 1, 0)
	leg := newPlayLeg()
	v := startVoiceOn(t, b, s, leg)
	frame := func(worker string) *nats.Msg {
		m := agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: 1, Payload: []byte{1}}.Msg(b.subj.OutAudio("echo", s.ConversationID))
		m.Header.Set(agentbridge.HeaderWorker, worker)
		return m
	}
	v.onAgentAudio(frame("w1"))
	v.onAgentAudio(frame("w1"))
	if got := leg.played.Load(); got != 2 {
		t.Fatalf("holder w1: %d frames played, want 2", got)
	}
	b.registry.assign(s.ConversationID, "echo", "w2", 1, 2, 0)
	v.onAgentAudio(frame("w1"))
	if got := leg.played.Load(); got != 2 {
		t.Fatalf("w1 after losing the conversation: %d frames played, want 2", got)
	}
	v.onAgentAudio(frame("w2"))
	if got := leg.played.Load(); got != 3 {
		t.Fatalf("new holder w2: %d frames played, want 3", got)
	}
}
