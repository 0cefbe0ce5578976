package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
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

// mediaStates reads the media_state events of leg from the conversation
// log, waiting until the closed one is there.
func mediaStates(t *testing.T, b *Broker, cid, leg string) []agentbridge.Event {
	t.Helper()
	var got []agentbridge.Event
	poll(t, 10*time.Second, "media_state closed in the log", func() bool {
		evs, err := b.ReadLog(t.Context(), cid, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		done := false
		for _, ev := range evs {
			if ev.Type == agentbridge.EventMediaState && ev.LegID == leg {
				got = append(got, ev)
				done = done || ev.State == "closed"
			}
		}
		return done
	})
	return got
}

// TestMediaStatesLoggedInCallOrder makes many rapid state changes on a
// live voice leg, then closes its transport: the log holds every state in
// the order of the calls, and "closed" last.
func TestMediaStatesLoggedInCallOrder(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	v := b.NewVoice(s)
	leg := &testLeg{closed: make(chan struct{})}
	if err := b.StartVoice(t.Context(), v, leg); err != nil {
		t.Fatal(err)
	}
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
