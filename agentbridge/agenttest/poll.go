package agenttest

import (
	"testing"
	"time"
)

// Poll checks cond until it holds, and fails the test (naming what it
// waited for) if it still does not after timeout. It checks at once, then
// every millisecond, backing off to every 10 ms, so that a condition that
// is quickly true costs little and a slow one does not spin.
func Poll(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if cond() {
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	interval := time.Millisecond
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			if cond() { // it may have come true while the timer fired
				return
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
			if interval < 10*time.Millisecond {
				interval = min(2*interval, 10*time.Millisecond)
				tick.Reset(interval)
			}
		}
	}
}
