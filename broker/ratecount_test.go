package broker

import (
	"testing"
	"time"
)

func TestCountRateShared(t *testing.T) {
	a := startBroker(t)
	b := startPeer(t, a)
	now := time.Now()
	for i, br := range []*Broker{a, b, a, b} {
		n, end, err := br.CountRate(t.Context(), "resolve.ip.x", time.Minute, now)
		if err != nil || n != i+1 || !end.After(now) {
			t.Fatalf("count %d = %d, %v, %v", i, n, end, err)
		}
	}
	if _, _, err := a.CountRate(t.Context(), "k", 2*time.Hour, now); err == nil {
		t.Fatal("a window over the maximum was accepted")
	}
}
