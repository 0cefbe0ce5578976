package media

import (
	"bytes"
	"errors"
	"testing"

	"github.com/thesyncim/gopus"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// decodeAll decodes Opus packets at rate with channels (a fresh gopus
// decoder) and returns the samples.
func decodeAll(t *testing.T, pkts [][]byte, rate, channels int) []int16 {
	t.Helper()
	dec, err := gopus.NewDecoder(gopus.DefaultDecoderConfig(rate, channels))
	if err != nil {
		t.Fatal(err)
	}
	var out []int16
	buf := make([]int16, rate*maxOpusPacketMS/1000*channels)
	for _, p := range pkts {
		n, err := dec.DecodeInt16(p, buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:n*channels]...)
	}
	return out
}

// TestSpeechEncoder: a 16 kHz tone comes back from the packets with its
// length (whole 20 ms frames, the last padded by Flush) and its energy;
// 22.05 kHz is refused; each packet is its own slice; a new rate flushes
// what was held at the old one; Reset drops what is held.
func TestSpeechEncoder(t *testing.T) {
	t.Parallel()
	e, err := NewSpeechEncoder()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encode(sine(441, 22050, 0), 22050); !errors.Is(err, ErrBadFormat) {
		t.Fatalf("22050 Hz: %v, want ErrBadFormat", err)
	}
	// 1.01 s of tone in uneven pieces: 50 whole frames and 10 ms held.
	const total = 16160
	tone := sine(total, 16000, 0)
	var pkts [][]byte
	for off := 0; off < total; {
		n := min(1234, total-off)
		p, err := e.Encode(tone[off:off+n], 16000)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, p...)
		off += n
	}
	if len(pkts) != 50 {
		t.Fatalf("%d packets before Flush, want 50", len(pkts))
	}
	tail, err := e.Flush()
	if err != nil || len(tail) != 1 {
		t.Fatalf("Flush: %d packets, %v", len(tail), err)
	}
	pkts = append(pkts, tail...)
	if again, err := e.Flush(); err != nil || len(again) != 0 {
		t.Fatalf("second Flush: %d packets, %v", len(again), err)
	}
	pcm := decodeAll(t, pkts, 16000, 1)
	// Each packet is its own slice: clearing one leaves the others.
	copies := make([][]byte, len(pkts))
	for i, p := range pkts {
		copies[i] = bytes.Clone(p)
	}
	for i := range pkts {
		clear(pkts[i])
		for j := i + 1; j < len(pkts); j++ {
			if !bytes.Equal(pkts[j], copies[j]) {
				t.Fatalf("packets %d and %d share memory", i, j)
			}
		}
	}
	if len(pcm) != 51*320 {
		t.Fatalf("%d samples decoded, want %d", len(pcm), 51*320)
	}
	// The codec's delay and onset aside, the tone's RMS (7071) comes back.
	if in, out := rms(tone[1600:14400]), rms(pcm[1600:14400]); out < 0.8*in || out > 1.2*in {
		t.Fatalf("RMS %.0f in, %.0f out", in, out)
	}

	// A new rate: the 5 ms held at 16 kHz comes out first, then 20 ms at
	// 24 kHz.
	if p, err := e.Encode(sine(80, 16000, 0), 16000); err != nil || len(p) != 0 {
		t.Fatalf("5 ms: %d packets, %v", len(p), err)
	}
	p, err := e.Encode(sine(480, 24000, 0), 24000)
	if err != nil || len(p) != 2 {
		t.Fatalf("20 ms at 24 kHz: %d packets, %v", len(p), err)
	}
	// Reset drops what is held.
	if p, err := e.Encode(sine(100, 24000, 0), 24000); err != nil || len(p) != 0 {
		t.Fatalf("100 samples: %d packets, %v", len(p), err)
	}
	e.Reset()
	if p, err := e.Flush(); err != nil || len(p) != 0 {
		t.Fatalf("Flush after Reset: %d packets, %v", len(p), err)
	}
	for _, rate := range []int{8000, 12000, 48000} {
		p, err := e.Encode(sine(rate/50, rate, 0), rate)
		if err != nil || len(p) != 1 {
			t.Fatalf("%d Hz: %d packets, %v", rate, len(p), err)
		}
	}
}

// TestSpeechEncoderPlays: mono packets from the encoder, played on a leg's
// stereo Opus track, reach a pion client that decodes them as stereo with
// the tone's energy in both channels.
func TestSpeechEncoderPlays(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	c, leg, _ := connect(t, e, clientOpts{}, FormatOpus())
	enc, err := NewSpeechEncoder()
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := enc.Encode(sine(16000, 16000, 0), 16000) // 1 s
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: p})
	}
	agenttest.Poll(t, testWait, "the speech", func() bool { return c.received() >= len(pkts) })
	got := c.payloads()
	if len(got) != 50 {
		t.Fatalf("%d packets, want 50", len(got))
	}
	pcm := decodeAll(t, got, 48000, 2)
	var left, right []int16
	for i := 2 * 4800; i+1 < len(pcm)-2*4800; i += 2 { // the middle 0.8 s
		left, right = append(left, pcm[i]), append(right, pcm[i+1])
	}
	if l, r := rms(left), rms(right); l < 5000 || r < 5000 {
		t.Fatalf("RMS %.0f left, %.0f right", l, r)
	}
	if st := leg.Stats(); st.Rejected != 0 || st.FramesOut != 50 {
		t.Fatalf("stats %+v", st)
	}
}
