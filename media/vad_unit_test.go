package media

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// The detector, the level helpers and the reply accounting without a
// network, frame by frame.

func TestVADValidate(t *testing.T) {
	t.Parallel()
	for _, v := range []VAD{{}, {ThresholdDBov: -127}, {ThresholdDBov: -0.5, MinSpeech: time.Millisecond, BargeIn: true}} {
		if err := v.Validate(); err != nil {
			t.Errorf("%+v: %v", v, err)
		}
	}
	for _, v := range []VAD{{ThresholdDBov: -128}, {ThresholdDBov: 3}, {MinSpeech: -1}, {Hangover: -time.Second}, {BargeInMin: -1}} {
		if err := v.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: %v, want ErrBadConfig", v, err)
		}
	}
	d := VAD{}.withDefaults()
	if d.ThresholdDBov != -45 || d.MinSpeech != 60*time.Millisecond || d.Hangover != 400*time.Millisecond ||
		d.BargeInMin != 300*time.Millisecond || d.BargeIn {
		t.Fatalf("defaults %+v", d)
	}
	e := newTestEngine(t, testConfig())
	if _, _, err := e.NewLeg(t.Context(), LegOptions{Offer: newClient(t, clientOpts{}).offer(nil), VAD: VAD{Hangover: -1}}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("NewLeg with a bad VAD: %v", err)
	}
}

// vadRun feeds a detector frames of the given levels (one per 20 ms from
// t0, timestamps from 0) and returns the kinds of the events and the
// frame index each came at.
func vadRun(d *speechDetector, t0 time.Time, lv []float64) (kinds []SpeechKind, at []int, evs []SpeechEvent) {
	for i, l := range lv {
		if ev, ok := d.frame(uint64(i)*frameTicks, t0.Add(time.Duration(i)*frameDuration), l, SourceAudioLevel); ok {
			kinds, at, evs = append(kinds, ev.Kind), append(at, i), append(evs, ev)
		}
	}
	return kinds, at, evs
}

func repeat(n int, v float64) []float64 { return slices.Repeat([]float64{v}, n) }

func TestVADDetector(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	lv := slices.Concat(repeat(3, -80), repeat(2, -20), repeat(3, -80), // a 40 ms blip: nothing
		repeat(3, -30), repeat(19, -60), repeat(1, -10), repeat(20, -60)) // 8-10 start; 19 quiet: still speech; 30 voiced; 50 ends it
	kinds, at, evs := vadRun(newSpeechDetector(VAD{}), t0, lv)
	if !slices.Equal(kinds, []SpeechKind{SpeechStarted, SpeechStopped}) || !slices.Equal(at, []int{10, 50}) {
		t.Fatalf("events %v at frames %v", kinds, at)
	}
	if evs[0].At != t0.Add(7*frameDuration) || evs[0].LevelDBov != -30 {
		t.Fatalf("started %+v", evs[0])
	}
	if evs[1].At != t0.Add(30*frameDuration) || evs[1].LevelDBov != -10 {
		t.Fatalf("stopped %+v", evs[1])
	}

	// Custom settings: -20 dBov threshold, 100 ms to start (5 frames),
	// 100 ms to stop. A frame at exactly the threshold is quiet.
	d := newSpeechDetector(VAD{ThresholdDBov: -20, MinSpeech: 100 * time.Millisecond, Hangover: 100 * time.Millisecond})
	kinds, at, _ = vadRun(d, t0, slices.Concat(repeat(4, -10), repeat(1, -20), repeat(5, -10), repeat(5, -30)))
	if !slices.Equal(kinds, []SpeechKind{SpeechStarted, SpeechStopped}) || !slices.Equal(at, []int{9, 14}) {
		t.Fatalf("custom: events %v at frames %v", kinds, at)
	}

	// Lost frames count as media time: 2 voiced frames 40 ms apart span
	// 60 ms and start speech; 400 ms after the last voiced frame's
	// timestamp, a quiet frame ends it.
	d = newSpeechDetector(VAD{})
	if _, ok := d.frame(0, t0, -10, SourceDecode); ok {
		t.Fatal("one frame started speech")
	}
	if ev, ok := d.frame(2*frameTicks, t0.Add(40*time.Millisecond), -10, SourceDecode); !ok || ev.Kind != SpeechStarted || ev.Source != SourceDecode {
		t.Fatalf("after a gap: %+v %v", ev, ok)
	}
	if got := d.spoken(time.Time{}); got != 60*time.Millisecond {
		t.Fatalf("spoken %v", got)
	}
	// A reply that began 10 ms before the last voiced frame arrived.
	if got := d.spoken(t0.Add(30 * time.Millisecond)); got != 10*time.Millisecond {
		t.Fatalf("spoken since the reply %v", got)
	}
	if _, ok := d.frame(21*frameTicks, t0.Add(time.Second), -90, SourceDecode); ok {
		t.Fatal("stopped before the hangover")
	}
	// No more frames: the clock ends it.
	dl, ok := d.deadline()
	if !ok || dl != t0.Add(40*time.Millisecond+defaultHangover+idleSlack) {
		t.Fatalf("deadline %v %v", dl, ok)
	}
	if _, ok := d.idle(dl.Add(-time.Nanosecond)); ok {
		t.Fatal("idle before the deadline")
	}
	if ev, ok := d.idle(dl); !ok || ev.Kind != SpeechStopped || ev.At != t0.Add(40*time.Millisecond) {
		t.Fatalf("idle: %+v %v", ev, ok)
	}
	if _, ok := d.deadline(); ok {
		t.Fatal("deadline after the end")
	}
}

func TestVADLevels(t *testing.T) {
	t.Parallel()
	full := make([]int16, 320)
	for i := range full {
		full[i] = 32767
		if i%2 == 1 {
			full[i] = -32768
		}
	}
	for _, c := range []struct {
		pcm  []int16
		want float64
	}{
		{full, 0}, {make([]int16, 320), -127}, {nil, -127}, {sine(960, 48000, 0), -13.3}, {[]int16{1}, -90.3},
	} {
		if got := int16DBov(c.pcm); got < c.want-0.1 || got > c.want+0.1 {
			t.Errorf("int16DBov = %.2f, want %.1f", got, c.want)
		}
		if got, want := pcmDBov(int16LE(c.pcm)), int16DBov(c.pcm); got != want {
			t.Errorf("pcmDBov = %v, int16DBov = %v", got, want)
		}
	}

	// The decoder's level of a real tone.
	d, err := newLevelDecoder()
	if err != nil {
		t.Fatal(err)
	}
	var db float64
	for _, p := range realOpus(t, 10) {
		pcm, err := d.decode(p)
		if err != nil {
			t.Fatal(err)
		}
		db = int16DBov(pcm)
	}
	if db < -16 || db > -10 {
		t.Fatalf("decoded tone at %.1f dBov", db)
	}

	// The header extension, as the jitter buffer carries it.
	var pkt rtp.Packet
	if packetLevel(&pkt, 1) != 0 || packetLevel(&pkt, 0) != 0 {
		t.Fatal("a level without the extension")
	}
	if err := pkt.Header.SetExtension(3, []byte{0x80 | 42}); err != nil {
		t.Fatal(err)
	}
	if got := packetLevel(&pkt, 3); got != 43 {
		t.Fatalf("packetLevel = %d, want 43", got)
	}
}

func TestPlayQueueReply(t *testing.T) {
	t.Parallel()
	q := newPlayQueue(10, FormatOpus())
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	if _, ok := q.playing(t0); ok {
		t.Fatal("playing before anything")
	}
	for range 5 {
		q.pushOpus([]byte{1})
	}
	if _, ok := q.playing(t0); ok {
		t.Fatal("playing before the first frame was sent")
	}
	for i := range 3 {
		q.pop(at(20 * i))
	}
	if since, ok := q.playing(at(45)); !ok || since != t0 {
		t.Fatalf("playing %v since %v", ok, since)
	}
	q.pop(at(60))
	q.pop(at(80))
	if _, ok := q.playing(at(100)); !ok {
		t.Fatal("not playing just after the last frame")
	}
	if _, ok := q.playing(at(121)); ok {
		t.Fatal("playing 40 ms after the last frame")
	}
	// A pause shorter than replyIdle continues the reply; a longer one
	// starts a new one.
	q.pushOpus([]byte{2})
	q.pop(at(80 + 999))
	q.pushOpus([]byte{3})
	q.pushOpus([]byte{4})
	if dropped, heard := q.cut(); dropped != 2 || heard != 6 {
		t.Fatalf("cut: dropped %d, heard %d", dropped, heard)
	}
	if _, ok := q.playing(at(1080)); ok {
		t.Fatal("playing after the cut")
	}
	// Held while the visitor speaks on: the rest of the cut reply is
	// dropped, not queued.
	if dropped := q.pushOpus([]byte{9}); dropped != 1 || q.len() != 0 {
		t.Fatalf("a frame while held: dropped %d, %d queued", dropped, q.len())
	}
	q.release() // the visitor stopped speaking
	q.pushOpus([]byte{5})
	q.pop(at(1100))
	q.pushOpus([]byte{6})
	q.pop(at(1120 + 1001))
	if since, ok := q.playing(at(2121)); !ok || since != at(2121) {
		t.Fatalf("a new reply after replyIdle: playing %v since %v", ok, since)
	}
	if _, heard := q.cut(); heard != 1 {
		t.Fatalf("heard %d of the new reply", heard)
	}
}

// TestPlayQueueGrows: a play queue starts with a few slots and grows as
// frames wait, keeping their order, up to its bound; past the bound the
// oldest frames are dropped.
func TestPlayQueueGrows(t *testing.T) {
	q := newPlayQueue(100, FormatOpus())
	if len(q.ring) != playQueueStart {
		t.Fatalf("a new queue has %d slots, want %d", len(q.ring), playQueueStart)
	}
	now := time.Now()
	// Wrap the ring before it grows, so growing must unwrap it.
	for i := range 10 {
		q.pushOpus([]byte{byte(i)})
	}
	for range 10 {
		q.pop(now)
	}
	dropped := 0
	for i := range 130 {
		dropped += q.pushOpus([]byte{byte(i)})
	}
	if dropped != 30 || q.len() != 100 || len(q.ring) != 100 {
		t.Fatalf("130 frames into a queue of 100: %d dropped, %d queued, %d slots", dropped, q.len(), len(q.ring))
	}
	for want := 30; want < 130; want++ {
		it, ok := q.pop(now)
		if !ok || it.opus[0] != byte(want) {
			t.Fatalf("frame %d: got %v %v", want, it.opus, ok)
		}
	}
}
