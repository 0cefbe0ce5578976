package utterance_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/cmd/internal/utterance"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// tone returns 20 ms frames: for each burst, on frames of a 440 Hz tone at
// amplitude amp (0..1), then off frames of silence, as 48 kHz stereo Opus.
func tone(t *testing.T, bursts, on, off int, amp float64) []agentbridge.AudioFrame {
	t.Helper()
	var out []agentbridge.AudioFrame
	for i, p := range signalingtest.Tone(t, bursts, on, off, amp*32767) {
		out = append(out, agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: uint64(i), Payload: p})
	}
	return out
}

func TestDetectorOpus(t *testing.T) {
	d := utterance.NewDetector()
	var got []utterance.Utterance
	for _, f := range tone(t, 3, 20, 30, 0.4) {
		if u, ok := d.Push(f); ok {
			got = append(got, u)
		}
	}
	if len(got) != 3 {
		t.Fatalf("found %d utterances, want 3: %+v", len(got), got)
	}
	for i, u := range got {
		if u.N != i+1 || u.Duration < 380e6 || u.Duration > 460e6 || u.PeakDBFS > 0 || u.PeakDBFS < -20 {
			t.Errorf("utterance %d = %+v (%s)", i, u, u)
		}
	}
	// Silence and a very quiet tone are not speech.
	d = utterance.NewDetector()
	for _, f := range append(tone(t, 1, 0, 50, 0), tone(t, 1, 20, 30, 0.001)...) {
		if u, ok := d.Push(f); ok {
			t.Fatalf("utterance in silence: %+v", u)
		}
	}
}

func TestDetectorPCM(t *testing.T) {
	d := utterance.NewDetector()
	frame := func(amp float64) agentbridge.AudioFrame {
		b := make([]byte, 640)
		for i := range 320 {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(amp*32767*math.Sin(float64(i)))))
		}
		return agentbridge.AudioFrame{Codec: "pcm_s16le/16000/1", Payload: b}
	}
	n := 0
	for range 2 {
		for range 10 {
			if _, ok := d.Push(frame(0.5)); ok {
				t.Fatal("utterance ended during speech")
			}
		}
		for range 15 {
			if u, ok := d.Push(frame(0)); ok {
				n++
				if u.Duration != 200e6 {
					t.Fatalf("duration %s", u.Duration)
				}
			}
		}
	}
	if n != 2 {
		t.Fatalf("found %d utterances, want 2", n)
	}
	if _, ok := d.Push(agentbridge.AudioFrame{Codec: "mp3", Payload: []byte{1, 2, 3}}); ok {
		t.Fatal("unknown codec made an utterance")
	}
}

func BenchmarkDetectorOpus(b *testing.B) {
	frames := tone(&testing.T{}, 1, 25, 25, 0.4)
	d := utterance.NewDetector()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.Push(frames[i%len(frames)])
	}
}
