package broker

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// TestSubMux: many subscriptions share the mux's few goroutines; each gets
// all of its messages, in the order they were published, and no other
// subscription's; after unsubscribe a subscription's handler is not
// called again; stop ends the shard goroutines.
func TestSubMux(t *testing.T) {
	srv := agenttest.RunNATS(t, nil)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	m := newSubMux(nc)

	const subs, msgs = 40, 200
	var mu sync.Mutex
	got := make([][]int, subs)
	var wrong []string
	handles := make([]*nats.Subscription, subs)
	for i := range subs {
		subject := "mux.test." + strconv.Itoa(i)
		handles[i], err = m.subscribe(subject, "conv_"+strconv.Itoa(i%7), func(msg *nats.Msg) {
			n, _ := strconv.Atoi(string(msg.Data))
			mu.Lock()
			defer mu.Unlock()
			if msg.Subject != subject {
				wrong = append(wrong, fmt.Sprintf("%s got %s", subject, msg.Subject))
			}
			got[i] = append(got[i], n)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for n := range msgs {
		for i := range subs {
			if err := pub.Publish("mux.test."+strconv.Itoa(i), []byte(strconv.Itoa(n))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	agenttest.Poll(t, 10*time.Second, "every message handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range got {
			if len(got[i]) < msgs {
				return false
			}
		}
		return true
	})
	mu.Lock()
	for i, ns := range got {
		if len(ns) != msgs {
			t.Errorf("subscription %d: %d messages, want %d", i, len(ns), msgs)
		}
		for n := range ns {
			if ns[n] != n {
				t.Fatalf("subscription %d: message %d is %d: out of order", i, n, ns[n])
			}
		}
	}
	if len(wrong) > 0 {
		t.Errorf("messages handled by another subscription's handler: %v", wrong[:min(3, len(wrong))])
	}
	mu.Unlock()

	// Unsubscribed: no more calls, while the others still get theirs.
	if err := m.unsubscribe(handles[0]); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1} {
		if err := pub.Publish("mux.test."+strconv.Itoa(i), []byte(strconv.Itoa(msgs))); err != nil {
			t.Fatal(err)
		}
	}
	_ = pub.Flush()
	agenttest.Poll(t, 10*time.Second, "the live subscription's next message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got[1]) == msgs+1
	})
	mu.Lock()
	if len(got[0]) != msgs {
		t.Errorf("an unsubscribed handler ran: %d messages", len(got[0]))
	}
	mu.Unlock()

	nc.Close()
	done := make(chan struct{})
	go func() { m.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not end the shard goroutines")
	}
}
