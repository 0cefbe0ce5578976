package media

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// lifecycle is how a voice transport (a Leg, a LiveKit Bridge) ends: once,
// for the first reason given, with every goroutine it started returned
// before Done closes and StateClosed is reported exactly once. Both
// transports embed one, so they end the same way.
//
// The transport's state loop (run) is the only goroutine that reports
// states, drains and finishes (a start-up that fails drains and, for a
// Bridge, finishes before run exists); stop may come from anywhere (Close,
// a pion or LiveKit SDK callback, the state loop itself). The sequence is:
//
//	stop(reason)   // first reason wins: quit closes, every goroutine returns
//	drain(release) // no goroutine may start any more; release the transport; wait for them
//	report(StateClosed, reason)
//	finish()       // Done closes
//
// Lock order: a transport's own locks (Leg.negMu) before mu; mu is held
// only to start goroutines, never while calling out (OnState, release).
type lifecycle struct {
	reason  string        // why the transport ends; written once by stop, before quit closes
	ending  atomic.Bool   // stop has been called: Play does nothing
	quit    chan struct{} // closed by stop: every goroutine returns
	done    chan struct{} // closed by finish when everything has stopped
	state   atomic.Value  // State
	inState atomic.Bool   // the state loop is inside OnState
	onState func(State, string)

	mu       sync.Mutex // guards stopping, reading and wg.Add
	stopping bool       // drain began: no goroutine may start
	reading  bool       // a reader of the visitor's track runs
	wg       sync.WaitGroup
}

// initLifecycle readies c in StateConnecting; onState may be nil.
func (c *lifecycle) initLifecycle(onState func(State, string)) {
	c.onState = onState
	c.quit = make(chan struct{})
	c.done = make(chan struct{})
	c.state.Store(StateConnecting)
}

// stop starts ending the transport; the first reason wins. It reports
// whether this call was the first.
func (c *lifecycle) stop(reason string) bool {
	if !c.ending.CompareAndSwap(false, true) {
		return false
	}
	c.reason = reason
	close(c.quit)
	return true
}

// isEnding reports whether stop has been called.
func (c *lifecycle) isEnding() bool { return c.ending.Load() }

// spawn runs each f on its own goroutine, owned by c (drain waits for it),
// unless drain has begun; it reports whether they started.
func (c *lifecycle) spawn(fs ...func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return false
	}
	c.start(fs)
	return true
}

// spawnReader is spawn for the goroutines that read the visitor's track:
// they start only if no reader runs (a transport carries one visitor
// track at a time). The reader slot stays taken until readerDone.
func (c *lifecycle) spawnReader(fs ...func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping || c.reading {
		return false
	}
	c.reading = true
	c.start(fs)
	return true
}

// readerDone frees the reader slot, so the next visitor track may be read.
func (c *lifecycle) readerDone() {
	c.mu.Lock()
	c.reading = false
	c.mu.Unlock()
}

// start runs fs on owned goroutines; c.mu is held.
func (c *lifecycle) start(fs []func()) {
	c.wg.Add(len(fs))
	for _, f := range fs {
		go func() {
			defer c.wg.Done()
			f()
		}()
	}
}

// drain refuses new goroutines, calls release (which makes the running
// ones return: closing the PeerConnection, leaving the room) without the
// lock, and waits for all of them.
func (c *lifecycle) drain(release func()) {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	release()
	c.wg.Wait()
}

// runStates is a transport's state loop (Leg.run, Bridge.run): it hands
// each of the transport's events to handle, stops the transport with
// ReasonSilence once the visitor has sent no audio for silence, and when
// quit closes runs teardown and returns.
func runStates[E any](c *lifecycle, a *audioPath, silence time.Duration, events <-chan E, handle func(E), teardown func()) {
	t := time.NewTimer(silence)
	defer t.Stop()
	for {
		select {
		case e := <-events:
			handle(e)
		case <-t.C:
			if a.silent(t, silence) {
				c.stop(ReasonSilence)
			}
		case <-c.quit:
			teardown()
			return
		}
	}
}

// report sets the state and tells OnState, from the state loop only.
// Repeated states are not reported again, except StateClosed.
func (c *lifecycle) report(s State, reason string) {
	if c.state.Load() == s && s != StateClosed {
		return
	}
	c.state.Store(s)
	if c.onState == nil {
		return
	}
	c.inState.Store(true)
	defer c.inState.Store(false)
	c.onState(s, reason)
}

// finish closes Done; after drain, from the state loop (or an aborted
// start-up) only.
func (c *lifecycle) finish() { close(c.done) }

// closeWait stops the transport with ReasonClosed and waits until it has
// finished. Called from OnState it does not wait, since OnState runs on
// the goroutine it would wait for.
func (c *lifecycle) closeWait() {
	c.stop(ReasonClosed)
	if c.inState.Load() {
		return
	}
	<-c.done
}

// State is the current state.
func (c *lifecycle) State() State { return c.state.Load().(State) }

// Done is closed when the transport has closed, for whatever reason.
func (c *lifecycle) Done() <-chan struct{} { return c.done }

// Reason is why the transport closed ("" while it is open).
func (c *lifecycle) Reason() string {
	select {
	case <-c.done:
		return c.reason
	default:
		return ""
	}
}

// transports is the set of an owner's live transports: an Engine's legs,
// a LiveKit's bridges by room. It refuses new ones once closed, and close
// closes them all. mu is a leaf: it is never held while calling a
// transport.
type transports[K comparable, T interface {
	comparable
	Close() error
}] struct {
	mu     sync.Mutex // guards m and closed
	m      map[K]T
	closed bool
}

// len is the number of live transports.
func (s *transports[K, T]) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// put makes t the transport of k and returns the one it replaces (the
// zero T: none); it fails with ErrClosed once the set is closed.
func (s *transports[K, T]) put(k K, t T) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var old T
	if s.closed {
		return old, ErrClosed
	}
	if s.m == nil {
		s.m = make(map[K]T)
	}
	old = s.m[k]
	s.m[k] = t
	return old, nil
}

// drop forgets t if it is still the transport of k.
func (s *transports[K, T]) drop(k K, t T) {
	s.mu.Lock()
	if s.m[k] == t {
		delete(s.m, k)
	}
	s.mu.Unlock()
}

// isClosed reports whether close was called.
func (s *transports[K, T]) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// close refuses new transports and closes the live ones at once, waiting
// for them all: each Close waits for its own teardown, and a slow one
// should not hold up the others. It reports false when already closed.
func (s *transports[K, T]) close() bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.closed = true
	live := slices.Collect(maps.Values(s.m))
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range live {
		wg.Go(func() { _ = t.Close() })
	}
	wg.Wait()
	return true
}
