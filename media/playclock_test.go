package media

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// rtpTap is an rtpWriter that keeps what it is given and when.
type rtpTap struct {
	mu     sync.Mutex
	pkts   []rtp.Packet
	at     []time.Time
	closed atomic.Bool // set once nothing may be written
	late   atomic.Int32
}

func (w *rtpTap) WriteRTP(p *rtp.Packet) error {
	if w.closed.Load() {
		w.late.Add(1)
	}
	c := *p
	c.Payload = bytes.Clone(p.Payload)
	w.mu.Lock()
	w.pkts = append(w.pkts, c)
	w.at = append(w.at, time.Now())
	w.mu.Unlock()
	return nil
}

func (w *rtpTap) snapshot() ([]rtp.Packet, []time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]rtp.Packet(nil), w.pkts...), append([]time.Time(nil), w.at...)
}

func (w *rtpTap) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pkts)
}

// newTestPath is an audio path for format f that is not on a clock.
func newTestPath(t *testing.T, f Format) *audioPath {
	t.Helper()
	a := &audioPath{}
	life := &lifecycle{}
	life.initLifecycle(nil)
	if err := a.init(Config{}, f, nil, life, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	return a
}

func playOpus(a *audioPath, frames [][]byte) {
	for _, p := range frames {
		a.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: p})
	}
}

// TestPlayStepSchedule drives one path's steps by hand: frames go out on
// a 20 ms schedule, at most clockSlack early; a talkspurt after silence
// sets the marker and moves the media clock over the gap; a path far
// behind restarts its schedule; a partial PCM frame is padded after
// padAfter; an idle path leaves the list; a stopped one sends nothing.
func TestPlayStepSchedule(t *testing.T) {
	a := newTestPath(t, FormatOpus())
	tap := &rtpTap{}
	a.play.track, a.play.idle = tap, true
	a.play.listed.Store(true)
	t0 := time.Now()
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	step := func(at time.Time, wantSent int, wantNext time.Time, wantMore bool) {
		t.Helper()
		next, more := a.playStep(at)
		if got := tap.len(); got != wantSent || more != wantMore || (more && !next.Equal(wantNext)) {
			t.Fatalf("step at %v: sent %d, next %v, more %v; want %d, %v, %v",
				at.Sub(t0), got, next.Sub(t0), more, wantSent, wantNext.Sub(t0), wantMore)
		}
	}
	playOpus(a, fakeOpus(3))
	step(t0, 1, ms(20), true)
	step(ms(14), 1, ms(20), true) // 6 ms early: not yet
	step(ms(16), 2, ms(40), true) // 4 ms early: sent with the others due
	step(ms(41), 3, ms(60), true)
	step(ms(60), 3, time.Time{}, false) // nothing queued: off the list
	if a.play.listed.Load() {
		t.Fatal("an idle path is still listed")
	}

	// A talkspurt 500 ms later: the marker is set and the timestamp
	// jumps over the silence.
	a.play.listed.Store(true)
	playOpus(a, fakeOpus(2))
	step(ms(540), 4, ms(560), true)
	pkts, _ := tap.snapshot()
	for i := 1; i < 3; i++ {
		if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 || pkts[i].Timestamp != pkts[i-1].Timestamp+opusFrameTicks || pkts[i].Marker {
			t.Fatalf("packet %d: seq %d ts %d marker %v after seq %d ts %d", i,
				pkts[i].SequenceNumber, pkts[i].Timestamp, pkts[i].Marker, pkts[i-1].SequenceNumber, pkts[i-1].Timestamp)
		}
	}
	if !pkts[0].Marker || !pkts[3].Marker {
		t.Fatal("a talkspurt's first packet has no marker")
	}
	gap := pkts[3].Timestamp - pkts[2].Timestamp
	if want := uint32(500 * opusClock / 1000); gap < want-opusFrameTicks || gap > want+opusFrameTicks {
		t.Fatalf("timestamp moved %d over 500 ms of silence, want about %d", gap, want)
	}

	// Far behind (the machine stalled): the schedule restarts at now
	// instead of sending the missed frames back to back.
	playOpus(a, fakeOpus(3))
	step(ms(700), 5, ms(720), true)
	step(ms(720), 6, ms(740), true)

	// Stopped: nothing more is sent, and the path leaves the list.
	a.stopPlayout()
	step(ms(740), 6, time.Time{}, false)

	// A partial PCM frame plays, padded with silence, padAfter after it
	// last grew.
	p := newTestPath(t, FormatPCM(16000))
	ptap := &rtpTap{}
	p.play.track, p.play.idle = ptap, true
	p.play.listed.Store(true)
	p.Play(agentbridge.AudioFrame{Codec: "pcm_s16le/16000/1", Payload: make([]byte, 200)})
	at, ok := p.pq.partialSince()
	if !ok {
		t.Fatal("no partial frame")
	}
	if next, more := p.playStep(at.Add(10 * time.Millisecond)); !more || !next.Equal(at.Add(padAfter)) || ptap.len() != 0 {
		t.Fatalf("partial frame: next %v, more %v, sent %d", next.Sub(at), more, ptap.len())
	}
	if _, more := p.playStep(at.Add(padAfter)); !more || ptap.len() != 1 {
		t.Fatalf("padded frame not sent: more %v, sent %d", more, ptap.len())
	}
}

// TestPlayClockPaths plays on one clock for many paths at once: each gets
// all its frames in order, never ahead of its schedule by more than
// clockSlack; a path stopped mid-reply gets nothing more; the shards'
// goroutines return after shardLinger once nothing plays, and close
// waits for them.
func TestPlayClockPaths(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const paths, frames = 40, 25
	clock := newPlayClock(2)
	as := make([]*audioPath, paths)
	taps := make([]*rtpTap, paths)
	began := make([]time.Time, paths) // no frame of path i is due before
	for i := range as {
		as[i], taps[i] = newTestPath(t, FormatOpus()), &rtpTap{}
		began[i] = time.Now()
		if i%2 == 0 {
			playOpus(as[i], fakeOpus(frames)) // queued before the leg connects
		}
		as[i].startPlayout(clock, taps[i])
		if i%2 == 1 {
			playOpus(as[i], fakeOpus(frames))
		}
	}
	// One more path gets a long reply and is stopped while it plays.
	stopped, stap := newTestPath(t, FormatOpus()), &rtpTap{}
	stopped.startPlayout(clock, stap)
	playOpus(stopped, fakeOpus(500))
	agenttest.Poll(t, testWait, "the long reply started", func() bool { return stap.len() >= 3 })
	stopped.stopPlayout()
	stap.closed.Store(true)

	agenttest.Poll(t, testWait, "every frame sent", func() bool {
		for _, w := range taps {
			if w.len() < frames {
				return false
			}
		}
		return true
	})
	want := fakeOpus(frames)
	for i, w := range taps {
		pkts, at := w.snapshot()
		if len(pkts) != frames {
			t.Fatalf("path %d: %d packets, want %d", i, len(pkts), frames)
		}
		for k, p := range pkts {
			if !bytes.Equal(p.Payload, want[k]) || p.SequenceNumber != pkts[0].SequenceNumber+uint16(k) {
				t.Fatalf("path %d packet %d: seq %d payload %x (out of order)", i, k, p.SequenceNumber, p.Payload)
			}
			// Its schedule began after began[i]: frame k is due k×20 ms
			// later, and may go out clockSlack before.
			if early := time.Duration(k)*frameDuration - at[k].Sub(began[i]); early > clockSlack {
				t.Fatalf("path %d packet %d went out %v ahead of its schedule", i, k, early)
			}
		}
	}
	if n := stap.late.Load(); n != 0 {
		t.Fatalf("%d packets written after stopPlayout returned", n)
	}
	if st := stopped.Stats(); st.FramesOut >= 500 || st.FramesOut != uint64(stap.len()) {
		t.Fatalf("stopped path: %d frames out, %d written", st.FramesOut, stap.len())
	}

	// Nothing plays: the shards' goroutines return by themselves.
	agenttest.Poll(t, 3*shardLinger, "shards idle", func() bool {
		for _, s := range clock.shards {
			s.mu.Lock()
			running := s.running
			s.mu.Unlock()
			if running {
				return false
			}
		}
		return true
	})
	// A path that plays again starts one; close stops it.
	playOpus(as[0], fakeOpus(200))
	agenttest.Poll(t, testWait, "playing again", func() bool { return taps[0].len() > frames })
	clock.close()
	n := taps[0].len()
	playOpus(as[1], fakeOpus(5)) // after close: not played, no goroutine
	if n >= frames+200 || taps[1].len() != frames {
		t.Fatalf("after close: %d and %d sent", n, taps[1].len())
	}
}

// marshalTap is an rtpWriter that only marshals the packet, as a
// transport would before encrypting it: the playout's own cost shows.
type marshalTap struct {
	buf []byte
	n   atomic.Int64
}

func (w *marshalTap) WriteRTP(p *rtp.Packet) error {
	b, err := p.MarshalTo(w.buf[:cap(w.buf)])
	_ = b
	w.n.Add(1)
	return err
}

// BenchmarkPlayClock plays agent audio on many paths at once, one op a
// 20 ms frame of every path, and reports the process CPU each frame cost
// (scheduling, queue, RTP header; no SRTP, no socket). Wall time is the
// frames' real-time pace, so only cpu-µs/frame means anything.
func BenchmarkPlayClock(b *testing.B) {
	for _, paths := range []int{50, 300} {
		b.Run(strconv.Itoa(paths), func(b *testing.B) {
			clock := newPlayClock(runtime.GOMAXPROCS(0))
			defer clock.close()
			cfg := Config{PlayoutQueue: b.N + 1}
			taps := make([]*marshalTap, paths)
			frames := fakeOpus(b.N)
			for i := range taps {
				a := &audioPath{}
				life := &lifecycle{}
				life.initLifecycle(nil)
				if err := a.init(cfg, FormatOpus(), nil, life, discardLogger()); err != nil {
					b.Fatal(err)
				}
				taps[i] = &marshalTap{buf: make([]byte, 0, 1500)}
				playOpus(a, frames)
				a.startPlayout(clock, taps[i])
			}
			cpu0 := processCPU(b)
			b.ResetTimer()
			agenttest.Poll(b, time.Duration(b.N)*frameDuration+10*time.Second, "every frame sent", func() bool {
				for _, w := range taps {
					if w.n.Load() < int64(b.N) {
						return false
					}
				}
				return true
			})
			b.StopTimer()
			cpu := processCPU(b) - cpu0
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*paths), "cpu-µs/frame")
		})
	}
}

// processCPU is the process's user and system CPU time so far.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
