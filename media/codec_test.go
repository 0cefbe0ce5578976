package media

import (
	"testing"
	"time"
)

func TestPCMCodecRoundTrip(t *testing.T) {
	t.Parallel()
	for _, rate := range []int{16000, 24000, 48000} {
		f := FormatPCM(rate)
		enc, err := newPCMEncoder(f)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := newPCMDecoder(f)
		if err != nil {
			t.Fatal(err)
		}
		var loud int
		for i := range 20 {
			pkt, err := enc.encode(sine(f.frameSamples(), rate, i*f.frameSamples()))
			if err != nil {
				t.Fatal(err)
			}
			pcm, err := dec.decode(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if len(pcm) != f.frameBytes() {
				t.Fatalf("%d Hz: %d bytes, want %d", rate, len(pcm), f.frameBytes())
			}
			if rms(pcmOf(pcm)) > 3000 {
				loud++
			}
		}
		if loud < 15 {
			t.Fatalf("%d Hz: %d loud frames of 20", rate, loud)
		}
		// Loss concealment yields a whole frame, with or without FEC.
		for _, fec := range []bool{false, true} {
			pkt, _ := enc.encode(sine(f.frameSamples(), rate, 0))
			pcm, err := dec.conceal(pkt, fec)
			if err != nil || len(pcm) != f.frameBytes() {
				t.Fatalf("%d Hz conceal(fec=%v): %d bytes, %v", rate, fec, len(pcm), err)
			}
		}
	}
	if _, err := (&pcmDecoder{}).decode(make([]byte, 2000)); err == nil {
		t.Fatal("oversized packet decoded")
	}
}

func BenchmarkPCMDecode(b *testing.B) {
	f := FormatPCM(16000)
	enc, err := newPCMEncoder(FormatPCM(48000))
	if err != nil {
		b.Fatal(err)
	}
	pkts := make([][]byte, 50)
	for i := range pkts {
		p, err := enc.encode(sine(960, 48000, i*960))
		if err != nil {
			b.Fatal(err)
		}
		pkts[i] = append([]byte(nil), p...)
	}
	dec, err := newPCMDecoder(f)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := dec.decode(pkts[i%len(pkts)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPCMEncode(b *testing.B) {
	f := FormatPCM(16000)
	enc, err := newPCMEncoder(f)
	if err != nil {
		b.Fatal(err)
	}
	frames := make([][]int16, 50)
	for i := range frames {
		frames[i] = sine(320, 16000, i*320)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := enc.encode(frames[i%len(frames)]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMicPathPCMConceal drives the PCM mic path without a network: a lost
// packet is concealed (from the next packet's FEC) so the agent gets
// contiguous 20 ms frames.
func TestMicPathPCMConceal(t *testing.T) {
	t.Parallel()
	f := FormatPCM(16000)
	dec, err := newPCMDecoder(f)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	l := &Leg{audioPath: audioPath{log: discardLogger(), jb: newJitterBuffer(60 * time.Millisecond), dec: dec, format: f, codec: f.String(), onMic: rec.onMic}}
	pkts := realOpus(t, 10)
	t0 := time.Unix(1000, 0)
	for i, p := range pkts {
		if i == 4 || i == 6 || i == 7 {
			continue // lost
		}
		now := t0.Add(time.Duration(i) * 20 * time.Millisecond)
		l.deliver(l.jb.push(rtpIn{Seq: uint16(100 + i), TS: uint32(i * 960), Payload: p, Arrival: now}, now))
	}
	l.deliver(l.jb.flush(t0.Add(time.Second)))
	frames, _, _, _ := rec.snapshot()
	if len(frames) != 10 {
		t.Fatalf("%d frames, want 10 (7 decoded + 3 concealed)", len(frames))
	}
	for i, fr := range frames {
		if fr.Seq != uint64(100+i) || fr.Timestamp != uint64(i*960) || len(fr.Payload) != 640 || fr.Codec != "pcm_s16le/16000/1" {
			t.Fatalf("frame %d: seq %d ts %d %d bytes %s", i, fr.Seq, fr.Timestamp, len(fr.Payload), fr.Codec)
		}
	}
	if st := l.Stats(); st.Lost != 3 || st.FramesIn != 10 || st.DecodeErrors != 0 {
		t.Fatalf("stats %+v", st)
	}

	// Garbage is counted, not delivered.
	l.deliver(l.jb.push(rtpIn{Seq: 110, TS: 10 * 960, Payload: []byte{0xff, 0xff, 0xff}, Arrival: t0}, t0))
	if st := l.Stats(); st.DecodeErrors != 1 || st.FramesIn != 10 {
		t.Fatalf("after garbage: %+v", st)
	}
}
