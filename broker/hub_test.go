package broker

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// hubLog writes a conversation's log by hand, as the broker's writer does
// (each event names its predecessor), so a test can choose which live
// notifications the hub gets and in what order.
type hubLog struct {
	t    *testing.T
	b    *Broker
	cid  string
	last uint64
}

// store appends one event and returns it as stored, with seq and prev_seq.
func (l *hubLog) store(text string) agentbridge.Event {
	l.t.Helper()
	ev := agentbridge.Event{V: agentbridge.Version, Type: agentbridge.EventUserMessage, ConversationID: l.cid,
		MessageID: newID("msg_"), Text: text, PrevSeq: l.last, TS: time.Now().UTC()}
	data, _ := json.Marshal(ev)
	ack, err := l.b.js.Publish(l.t.Context(), l.b.subj.InEvent(l.cid), data)
	if err != nil {
		l.t.Fatal(err)
	}
	ev.Seq, l.last = ack.Sequence, ack.Sequence
	return ev
}

// notify publishes ev live, as the broker that stored it would.
func (l *hubLog) notify(ev agentbridge.Event) {
	l.t.Helper()
	data, _ := json.Marshal(ev)
	if err := l.b.nc.Publish(l.b.subj.ConvEvent("echo", l.cid), data); err != nil {
		l.t.Fatal(err)
	}
}

// next returns the next event a subscription delivers; what it took after
// that event waits in pending for the following call.
func next(t *testing.T, s *Subscription, pending *[]Update) agentbridge.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		for len(*pending) > 0 {
			u := (*pending)[0]
			*pending = (*pending)[1:]
			if u.Event != nil {
				return *u.Event
			}
		}
		select {
		case <-s.Ready():
		case <-timeout:
			t.Fatal("no event within 10 s")
		}
		var open bool
		if *pending, open = s.Take(nil); !open && len(*pending) == 0 {
			t.Fatalf("subscription ended: %v", s.Err())
		}
	}
}

// TestHubLiveOrder: a hub delivers a conversation's live events in log
// order, once each, whatever order and however often they are announced,
// and reads an event it was never told about from the log.
func TestHubLiveOrder(t *testing.T) {
	b := startBroker(t)
	l := &hubLog{t: t, b: b, cid: newID("conv_")}
	before := l.store("before the subscription") // not delivered: stored before Subscribe
	sub, err := b.Subscribe(t.Context(), l.cid)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var pending []Update
	l.notify(before)

	e1, e2, e3, e4, e5 := l.store("1"), l.store("2"), l.store("3"), l.store("4"), l.store("5")
	// In order, with a repeat.
	l.notify(e1)
	l.notify(e1)
	// Reordered: 3 arrives before 2 (stored by two brokers).
	l.notify(e3)
	l.notify(e2)
	// 4 is never announced (lost on a reconnect): 5 shows the gap and
	// the hub reads 4 from the log.
	l.notify(e5)
	want := []agentbridge.Event{e1, e2, e3, e4, e5}
	for _, w := range want {
		got := next(t, sub, &pending)
		if got.Seq != w.Seq || got.Text != w.Text || got.PrevSeq != w.PrevSeq {
			t.Fatalf("got seq %d (%q, prev %d), want seq %d (%q, prev %d)", got.Seq, got.Text, got.PrevSeq, w.Seq, w.Text, w.PrevSeq)
		}
	}
	// Nothing more: the repeats and the late copies are dropped.
	l.notify(e2)
	l.notify(e4)
	e6 := l.store("6")
	l.notify(e6)
	if got := next(t, sub, &pending); got.Seq != e6.Seq {
		t.Fatalf("got seq %d after the repeats, want %d", got.Seq, e6.Seq)
	}
}

// TestHubResync: after the broker's NATS connection comes back, a hub
// reads what was stored meanwhile, without waiting for a later event.
func TestHubResync(t *testing.T) {
	b := startBroker(t)
	l := &hubLog{t: t, b: b, cid: newID("conv_")}
	sub, err := b.Subscribe(t.Context(), l.cid)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var pending []Update
	missed := l.store("stored while disconnected")
	b.hubs.resync()
	if got := next(t, sub, &pending); got.Seq != missed.Seq {
		t.Fatalf("got seq %d, want %d", got.Seq, missed.Seq)
	}
}
