package media

import (
	"math"
	"sync/atomic"
	"time"
)

// rateStale is how old a bitrate may be before Stats reports 0 (the stream
// stopped, so no window closed).
const rateStale = 3 * time.Second

// legStats are a leg's counters, written by its goroutines and read by
// Stats without locks.
type legStats struct {
	createdAt time.Time

	framesIn, framesOut atomic.Uint64
	lost, late, dups    atomic.Uint64
	dropped, rejected   atomic.Uint64
	decodeErrors        atomic.Uint64
	bargeIns            atomic.Uint64
	// speechDecodes counts Opus packets decoded at 16 kHz for voice
	// activity or utterances (not those decoded for a PCM agent): not in
	// Stats, it tells tests when VAD pays for decoding.
	speechDecodes atomic.Uint64

	jitterMS, rttMS atomic.Uint64 // float64 bits
	bitrateIn       gauge
	bitrateOut      gauge

	connectedAt, firstFrameAt atomic.Int64 // unix nanos, 0 = not yet
}

// gauge is a float64 value with the time it was set.
type gauge struct {
	bits atomic.Uint64
	at   atomic.Int64
}

func (g *gauge) set(v float64, now time.Time) {
	g.bits.Store(math.Float64bits(v))
	g.at.Store(now.UnixNano())
}

func (g *gauge) get(now time.Time) float64 {
	at := g.at.Load()
	if at == 0 || now.Sub(time.Unix(0, at)) > rateStale {
		return 0
	}
	return math.Float64frombits(g.bits.Load())
}

func storeFloat(a *atomic.Uint64, v float64) { a.Store(math.Float64bits(v)) }
func loadFloat(a *atomic.Uint64) float64     { return math.Float64frombits(a.Load()) }

func unixTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Stats returns the leg's media counters (cheap: atomic loads).
func (l *audioPath) Stats() Stats {
	s := &l.stats
	now := time.Now()
	return Stats{
		FramesIn:     s.framesIn.Load(),
		FramesOut:    s.framesOut.Load(),
		Lost:         s.lost.Load(),
		Late:         s.late.Load(),
		Duplicates:   s.dups.Load(),
		Dropped:      s.dropped.Load(),
		Rejected:     s.rejected.Load(),
		DecodeErrors: s.decodeErrors.Load(),
		BargeIns:     s.bargeIns.Load(),
		JitterMS:     loadFloat(&s.jitterMS),
		RTTMS:        loadFloat(&s.rttMS),
		BitrateIn:    s.bitrateIn.get(now),
		BitrateOut:   s.bitrateOut.get(now),
		ConnectedAt:  unixTime(s.connectedAt.Load()),
		FirstFrameAt: unixTime(s.firstFrameAt.Load()),
		CreatedAt:    s.createdAt,
	}
}
