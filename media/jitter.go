package media

import (
	"time"
)

// This file holds the mic path's reorder buffer and its statistics. They are
// pure (no goroutines, no clock of their own: the caller passes now) so they
// can be tested packet by packet; the leg's RTP reader owns one of each.

// jitterSlots bounds how far ahead of the next expected packet a packet can
// be held. It is a power of two larger than maxJitterWindow/frameDuration.
const jitterSlots = 32

// histBits is how many already-emitted sequence numbers are remembered to
// tell duplicates from late packets.
const histBits = 64

// rtpIn is one received RTP packet as the jitter buffer sees it.
type rtpIn struct {
	Seq     uint16    // RTP sequence number (RFC 3550 §5.1)
	TS      uint32    // RTP timestamp
	Payload []byte    // borrowed: copied if the packet must be held
	Arrival time.Time // when it was read from the socket
	level   uint8     // 1 + its RFC 6464 audio level, 0 if none (packetLevel)
}

// micFrame is one frame released by the jitter buffer, in sequence order.
type micFrame struct {
	Seq     uint64    // extended sequence number (RFC 3550 A.1: cycles<<16 | seq)
	TS      uint64    // extended RTP timestamp
	Arrival time.Time // arrival of this very packet
	// Payload is borrowed: valid until the next push or flush.
	Payload []byte
	// LostBefore is how many frames were given up just before this one.
	LostBefore int
	level      uint8 // as in rtpIn
}

// jitterSlot holds one out-of-order packet.
type jitterSlot struct {
	used    bool
	ext     int64
	ts      uint32
	arrival time.Time
	level   uint8
	buf     []byte // owned, reused
}

// jitterBuffer restores RTP sequence order with little delay: a packet that
// is next in sequence is released at once; after a gap, later packets are
// held until the missing one arrives, or the oldest held packet has waited
// window, or more than window/20 ms packets are held; then the gap is
// skipped and counted lost. A packet older than the last released one is
// dropped and counted late, unless it is a copy of one already received
// (counted as a duplicate).
type jitterBuffer struct {
	window  time.Duration
	maxHeld int

	started bool
	next    int64  // extended seq expected next (last released + 1)
	highest int64  // highest extended seq seen
	hist    uint64 // bit i: seq next-1-i was received (released or late)

	tsStarted bool
	lastTS    int64 // extended timestamp of the last released frame

	slots [jitterSlots]jitterSlot
	held  int

	pendingLost int
	lost        uint64
	late        uint64
	dups        uint64

	out []micFrame // reused result slice
}

// newJitterBuffer makes a jitter buffer that waits at most window for a gap.
func newJitterBuffer(window time.Duration) *jitterBuffer {
	maxHeld := min(max(int(window/frameDuration), 1), jitterSlots-1)
	return &jitterBuffer{window: window, maxHeld: maxHeld, out: make([]micFrame, 0, jitterSlots)}
}

// push adds one packet received at now and returns the frames it releases,
// in order. The result and its payloads are valid until the next call.
func (j *jitterBuffer) push(p rtpIn, now time.Time) []micFrame {
	j.out = j.out[:0]
	var ext int64
	if !j.started {
		j.started = true
		ext = int64(p.Seq)
		j.next, j.highest = ext, ext
	} else {
		ext = j.highest + int64(int16(p.Seq-uint16(j.highest)))
		if ext > j.highest {
			j.highest = ext
		}
	}

	switch {
	case ext < j.next:
		j.dropOld(ext)
	case ext == j.next:
		j.emit(ext, p.TS, p.Payload, p.Arrival, p.level)
		j.drain()
	case ext-j.next >= jitterSlots:
		// Too far ahead to hold: give up everything before it.
		for j.held > 0 {
			j.skipGap()
		}
		gap := ext - j.next
		j.lost += uint64(gap)
		j.pendingLost += int(gap)
		j.emit(ext, p.TS, p.Payload, p.Arrival, p.level)
	default:
		s := &j.slots[ext&(jitterSlots-1)]
		if s.used {
			j.dups++ // same ext: the slot can only hold ext itself
			break
		}
		s.used, s.ext, s.ts, s.arrival, s.level = true, ext, p.TS, p.Arrival, p.level
		s.buf = append(s.buf[:0], p.Payload...)
		j.held++
	}
	j.release(now)
	return j.out
}

// flush releases what has waited long enough by now (no packet arrived to
// trigger it) and returns it like push.
func (j *jitterBuffer) flush(now time.Time) []micFrame {
	j.out = j.out[:0]
	j.release(now)
	return j.out
}

// deadline is when flush next has something to do; ok is false when
// nothing is held.
func (j *jitterBuffer) deadline() (t time.Time, ok bool) {
	if j.held == 0 {
		return time.Time{}, false
	}
	return j.oldestArrival().Add(j.window), true
}

// counters returns frames lost (gaps given up), late and duplicate packets.
func (j *jitterBuffer) counters() (lost, late, dups uint64) { return j.lost, j.late, j.dups }

// release skips gaps while too many packets are held or the oldest has
// waited the window.
func (j *jitterBuffer) release(now time.Time) {
	for j.held > 0 && (j.held > j.maxHeld || !now.Before(j.oldestArrival().Add(j.window))) {
		j.skipGap()
	}
}

// dropOld accounts for a packet behind the release point.
func (j *jitterBuffer) dropOld(ext int64) {
	d := j.next - 1 - ext
	if d < histBits && d >= 0 && j.hist&(1<<d) != 0 {
		j.dups++
		return
	}
	j.late++
	if d < histBits && d >= 0 {
		j.hist |= 1 << d
	}
}

// emit appends a frame and advances the release point past ext.
func (j *jitterBuffer) emit(ext int64, ts uint32, payload []byte, arrival time.Time, level uint8) {
	shift := ext - (j.next - 1)
	if shift >= histBits {
		j.hist = 1
	} else {
		j.hist = j.hist<<shift | 1
	}
	j.next = ext + 1
	j.out = append(j.out, micFrame{
		Seq:        uint64(ext),
		TS:         j.extendTS(ts),
		Arrival:    arrival,
		Payload:    payload,
		LostBefore: j.pendingLost,
		level:      level,
	})
	j.pendingLost = 0
}

// extendTS unwraps a 32-bit RTP timestamp against the last released one.
func (j *jitterBuffer) extendTS(ts uint32) uint64 {
	if !j.tsStarted {
		j.tsStarted = true
		j.lastTS = int64(ts)
	} else {
		j.lastTS += int64(int32(ts - uint32(j.lastTS)))
	}
	if j.lastTS < 0 {
		return 0
	}
	return uint64(j.lastTS)
}

// drain releases held packets that are now next in sequence.
func (j *jitterBuffer) drain() {
	for j.held > 0 {
		s := &j.slots[j.next&(jitterSlots-1)]
		if !s.used || s.ext != j.next {
			return
		}
		s.used = false
		j.held--
		j.emit(s.ext, s.ts, s.buf, s.arrival, s.level)
	}
}

// skipGap gives up the frames missing before the lowest held packet,
// counting them lost, and releases the run that follows.
func (j *jitterBuffer) skipGap() {
	for e := j.next; e <= j.highest; e++ {
		s := &j.slots[e&(jitterSlots-1)]
		if s.used && s.ext == e {
			gap := e - j.next
			j.lost += uint64(gap)
			j.pendingLost += int(gap)
			j.hist <<= uint64(gap) // the skipped seqs were not received
			j.next = e
			j.drain()
			return
		}
	}
	j.held = 0 // unreachable while held > 0; keeps the loop finite
}

// oldestArrival is the earliest arrival among held packets.
func (j *jitterBuffer) oldestArrival() time.Time {
	var t time.Time
	for i := range j.slots {
		s := &j.slots[i]
		if s.used && (t.IsZero() || s.arrival.Before(t)) {
			t = s.arrival
		}
	}
	return t
}

// interarrival estimates RFC 3550 §6.4.1 interarrival jitter (A.8) in RTP
// timestamp units of clock Hz.
type interarrival struct {
	clock       int64
	started     bool
	base        time.Time
	lastTransit uint32
	jitter      float64
}

// update adds a packet with RTP timestamp ts that arrived at arrival.
func (a *interarrival) update(ts uint32, arrival time.Time) {
	if !a.started {
		a.started, a.base = true, arrival
		a.lastTransit = -ts
		return
	}
	r := uint32(arrival.Sub(a.base).Nanoseconds() * a.clock / int64(time.Second))
	transit := r - ts
	d := float64(int32(transit - a.lastTransit))
	if d < 0 {
		d = -d
	}
	a.jitter += (d - a.jitter) / 16
	a.lastTransit = transit
}

// ms is the current jitter in milliseconds.
func (a *interarrival) ms() float64 { return a.jitter * 1000 / float64(a.clock) }

// rateMeter measures a byte rate over windows of about a second.
type rateMeter struct {
	start time.Time
	bytes int
}

// add counts n bytes at now; when a window closes it returns its rate in
// bits per second and ok.
func (m *rateMeter) add(n int, now time.Time) (bps float64, ok bool) {
	if m.start.IsZero() {
		m.start = now
	}
	m.bytes += n
	el := now.Sub(m.start)
	if el < time.Second {
		return 0, false
	}
	bps = float64(m.bytes*8) / el.Seconds()
	m.start, m.bytes = now, 0
	return bps, true
}
