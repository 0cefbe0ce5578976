package media

import (
	"sync/atomic"
	"testing"
)

// endLifecycle is what a transport's state loop does once quit closes.
func endLifecycle(c *lifecycle, release func()) {
	<-c.quit
	c.drain(release)
	c.report(StateClosed, c.reason)
	c.finish()
}

func TestLifecycleStopOnceFirstReasonKept(t *testing.T) {
	var c lifecycle
	var states []string
	c.initLifecycle(func(s State, reason string) { states = append(states, string(s)+":"+reason) })
	if c.State() != StateConnecting || c.Reason() != "" || c.isEnding() {
		t.Fatalf("new lifecycle: state %q, reason %q, ending %v", c.State(), c.Reason(), c.isEnding())
	}
	go endLifecycle(&c, func() {})

	if !c.stop(ReasonSilence) {
		t.Fatal("first stop was not the first")
	}
	if c.stop(ReasonFailed) || c.stop(ReasonClosed) {
		t.Fatal("a later stop claimed to be the first")
	}
	if !c.isEnding() {
		t.Fatal("not ending after stop")
	}
	c.closeWait() // a Close after the end began: waits, changes nothing
	select {
	case <-c.Done():
	default:
		t.Fatal("closeWait returned before Done closed")
	}
	if c.Reason() != ReasonSilence {
		t.Fatalf("reason %q, want the first one, %q", c.Reason(), ReasonSilence)
	}
	if c.State() != StateClosed {
		t.Fatalf("state %q, want closed", c.State())
	}
	if len(states) != 1 || states[0] != string(StateClosed)+":"+ReasonSilence {
		t.Fatalf("OnState saw %q, want closed once with the first reason", states)
	}
}

func TestLifecycleNoSpawnAfterDrain(t *testing.T) {
	var c lifecycle
	c.initLifecycle(nil)
	var ran atomic.Int32
	if !c.spawn(func() { ran.Add(1); <-c.quit }) {
		t.Fatal("spawn before drain refused")
	}
	c.stop(ReasonClosed)
	released := false
	c.drain(func() { released = true })
	if !released {
		t.Fatal("drain did not call release")
	}
	if ran.Load() != 1 {
		t.Fatalf("drain returned before the goroutine ran (%d runs)", ran.Load())
	}
	if c.spawn(func() { ran.Add(1) }) || c.spawnReader(func() { ran.Add(1) }) {
		t.Fatal("a goroutine started after drain")
	}
	c.wg.Wait()
	if ran.Load() != 1 {
		t.Fatalf("%d runs, want 1: a refused goroutine ran", ran.Load())
	}
}

func TestLifecycleOneReaderAtATime(t *testing.T) {
	var c lifecycle
	c.initLifecycle(nil)
	release := make(chan struct{})
	if !c.spawnReader(func() { <-release; c.readerDone() }) {
		t.Fatal("first reader refused")
	}
	if c.spawnReader(func() {}) {
		t.Fatal("a second reader started while the first runs")
	}
	close(release)
	c.wg.Wait()
	if !c.spawnReader(func() {}) {
		t.Fatal("no reader may start after readerDone")
	}
	c.wg.Wait()
}

func TestLifecycleDoneAfterEveryGoroutine(t *testing.T) {
	var c lifecycle
	c.initLifecycle(nil)
	const n = 8
	var returned atomic.Int32
	gate := make(chan struct{}) // held until release: goroutines outlive quit
	for range n / 2 {
		c.spawn(func() { <-c.quit; <-gate; returned.Add(1) })
		c.spawn(func() { <-gate; returned.Add(1) })
	}
	go endLifecycle(&c, func() { close(gate) })
	c.closeWait()
	if got := returned.Load(); got != n {
		t.Fatalf("Done closed with %d of %d goroutines returned", got, n)
	}
	if c.Reason() != ReasonClosed {
		t.Fatalf("reason %q, want %q", c.Reason(), ReasonClosed)
	}
}

func TestLifecycleCloseFromOnStateDoesNotWait(t *testing.T) {
	var c lifecycle
	returned := make(chan struct{})
	c.initLifecycle(func(s State, _ string) {
		if s == StateConnected {
			c.closeWait() // would deadlock if it waited for the state loop
			close(returned)
		}
	})
	go func() {
		c.report(StateConnected, "")
		endLifecycle(&c, func() {})
	}()
	<-returned
	<-c.Done()
	if c.Reason() != ReasonClosed {
		t.Fatalf("reason %q, want %q", c.Reason(), ReasonClosed)
	}
}
