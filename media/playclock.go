package media

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

// The playout clock: the agent → visitor audio of every leg of an engine
// is sent by one shard goroutine per CPU instead of a goroutine and a timer
// per leg. A shard keeps the paths that have audio to play; it sleeps until
// the earliest frame due among them and then sends every frame due within
// clockSlack, so that at hundreds of legs a shard wakes a few hundred
// times a second rather than fifty times per leg. Each path keeps its own
// schedule (next = start + n×20 ms), so a frame goes out at most
// clockSlack early and never later than the shard can manage. A shard
// writes its paths' frames one after the other: a write must not block
// (a direct leg's does not once it is connected). A LiveKit bridge has a
// clock of its own, because the SDK's track can block a write while it
// reconnects.
//
// A shard's goroutine runs only while its paths play, and for shardLinger
// after: an idle engine holds none. A path is in at most one shard's list
// (audioPath.player.listed); Play puts it there (kick) and the shard drops
// it when nothing is left to play. While a path is listed, its shard's
// goroutine owns the path's pacer state (player's last fields, audioPath.out
// and .enc).

// clockSlack is how early a shard sends a frame to send it with another.
const clockSlack = 5 * time.Millisecond

// shardLinger is how long a shard's goroutine waits, once no path plays,
// before it returns.
const shardLinger = time.Second

// playClock is the playout clock of an engine's legs, or of one bridge.
type playClock struct {
	shards []*clockShard
	next   atomic.Uint32 // round robin over shards
	wg     sync.WaitGroup
}

// newPlayClock makes a clock of n shards.
func newPlayClock(n int) *playClock {
	c := &playClock{shards: make([]*clockShard, max(n, 1))}
	for i := range c.shards {
		c.shards[i] = &clockShard{clock: c, wake: make(chan struct{}, 1)}
	}
	return c
}

// close stops every shard and waits for their goroutines; a path kicked
// afterwards does not play. The transports must be closed first.
func (c *playClock) close() {
	for _, s := range c.shards {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.signal()
	}
	c.wg.Wait()
}

// pick is the shard for a new path.
func (c *playClock) pick() *clockShard {
	return c.shards[int(c.next.Add(1))%len(c.shards)]
}

// clockShard is one goroutine's share of the paths.
type clockShard struct {
	clock *playClock
	wake  chan struct{} // 1-buffered: pending has grown, or close

	mu      sync.Mutex
	pending []*audioPath // kicked, not yet taken by the goroutine
	running bool         // the goroutine runs
	closed  bool
}

func (s *clockShard) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// add lists a path (its listed flag is set) and starts the goroutine if
// it is not running.
func (s *clockShard) add(a *audioPath) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.pending = append(s.pending, a)
	start := !s.running
	if start {
		s.running = true
		s.clock.wg.Add(1)
	}
	s.mu.Unlock()
	if start {
		go s.run()
	} else {
		s.signal()
	}
}

// take moves the pending paths to list. It reports false when the
// goroutine must return: the clock is closed, or nothing plays and idle is
// set (the linger ran out); running is cleared under the same lock, so a
// later add starts a new goroutine.
func (s *clockShard) take(list []*audioPath, idle bool) ([]*audioPath, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list = append(list, s.pending...)
	clear(s.pending)
	s.pending = s.pending[:0]
	if s.closed || (len(list) == 0 && idle) {
		s.running = false
		return list, false
	}
	return list, true
}

// run is the shard's goroutine: it sends the frames due and sleeps until
// the next, or until a path is added.
func (s *clockShard) run() {
	defer s.clock.wg.Done()
	timer := time.NewTimer(shardLinger)
	defer timer.Stop()
	var (
		list []*audioPath
		idle bool // the linger ran out with nothing listed
		ok   bool
	)
	for {
		if list, ok = s.take(list, idle); !ok {
			return
		}
		idle = false
		now := time.Now()
		var due time.Time
		keep := list[:0]
		for _, a := range list {
			at, more := a.playStep(now)
			if !more {
				continue
			}
			keep = append(keep, a)
			if due.IsZero() || at.Before(due) {
				due = at
			}
		}
		clear(list[len(keep):])
		list = keep
		wait := shardLinger
		if len(list) > 0 {
			wait = due.Sub(time.Now())
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
			idle = len(list) == 0
		case <-s.wake:
		}
	}
}

// player is an audio path's place on the clock.
type player struct {
	shard  atomic.Pointer[clockShard] // set by startPlayout
	listed atomic.Bool                // in its shard's pending list or run list

	mu      sync.Mutex // held while the shard sends a frame; stopPlayout takes it
	stopped bool
	track   rtpWriter

	// The pacer's state, owned by the shard while listed.
	next time.Time // when the next frame is due
	idle bool      // nothing was queued at the last step: the next frame starts a talkspurt
	rate rateMeter
	pkt  rtp.Packet
}

// startPlayout starts sending queued agent frames to track, on clock. It
// is called once, when the transport connects (frames played before wait
// in the queue).
func (a *audioPath) startPlayout(clock *playClock, track rtpWriter) {
	p := &a.play
	p.mu.Lock()
	if p.stopped || p.shard.Load() != nil {
		p.mu.Unlock()
		return
	}
	p.track, p.idle = track, true
	p.pkt.Version = 2
	p.shard.Store(clock.pick())
	p.mu.Unlock()
	a.kick()
}

// stopPlayout stops the playout: once it returns, no frame is being sent
// or will be. It is idempotent and may come before startPlayout.
func (a *audioPath) stopPlayout() {
	p := &a.play
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
}

// kick lists the path on its shard after a frame was queued, unless it is
// listed or not playing yet.
func (a *audioPath) kick() {
	s := a.play.shard.Load()
	if s == nil || !a.play.listed.CompareAndSwap(false, true) {
		return
	}
	s.add(a)
}

// playStep is one look of the shard at a listed path, at now: it sends the
// next frame if it is due within clockSlack, and returns when the path
// next needs the clock. It returns false when the path leaves the list:
// nothing is queued (a later push lists it again) or the playout stopped.
// The schedule is next = start + n×20 ms (no drift); it restarts after idle
// time or when more than resyncAfter behind.
func (a *audioPath) playStep(now time.Time) (time.Time, bool) {
	p := &a.play
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return time.Time{}, false // stays listed: no kick lists it again
	}
	if !p.idle && p.next.After(now.Add(clockSlack)) {
		return p.next, true // playing, and not due: the queue can wait
	}
	if a.pq.len() == 0 {
		p.idle = true
		at, partial := a.pq.partialSince()
		if partial && now.Before(at.Add(padAfter)) {
			return at.Add(padAfter), true
		}
		if partial {
			if n := a.pq.padPartial(now); n > 0 {
				a.stats.dropped.Add(uint64(n))
			}
		}
		if a.pq.len() == 0 {
			return a.unlist()
		}
	}
	switch {
	case p.idle:
		p.idle = false
		if p.next.Before(now) {
			a.out.resume(now)
			p.next = now
		}
	case now.Sub(p.next) > resyncAfter:
		p.next = now
	}
	if p.next.After(now.Add(clockSlack)) {
		return p.next, true
	}
	it, ok := a.pq.pop(now)
	if !ok {
		return now, true // cleared meanwhile: the next look finds it idle
	}
	p.next = p.next.Add(frameDuration)
	payload := it.opus
	if it.pcm != nil {
		var err error
		payload, err = a.enc.encode(it.pcm)
		a.pq.recycle(it)
		if err != nil {
			a.log.Debug("media: opus encode", "err", err)
			return p.next, true
		}
	}
	pkt := &p.pkt
	pkt.Marker, pkt.SequenceNumber, pkt.Timestamp, pkt.Payload = a.out.marker, a.out.seq, a.out.ts, payload
	if err := p.track.WriteRTP(pkt); err != nil {
		a.log.Debug("media: write rtp", "err", err)
	}
	a.out.seq++
	a.out.ts += opusFrameTicks
	a.out.marker = false
	a.out.lastSent = now // the step's time: a pass over many paths shares one reading
	a.stats.framesOut.Add(1)
	if bps, ok := p.rate.add(len(payload), now); ok {
		a.stats.bitrateOut.set(bps, now)
	}
	return p.next, true
}

// unlist takes an idle path off its shard's list; a push that raced with
// it lists it again here (or has already listed it anew).
func (a *audioPath) unlist() (time.Time, bool) {
	a.play.listed.Store(false)
	if _, partial := a.pq.partialSince(); a.pq.len() == 0 && !partial {
		return time.Time{}, false
	}
	if !a.play.listed.CompareAndSwap(false, true) {
		return time.Time{}, false // a kick listed it in pending
	}
	return time.Now(), true
}
