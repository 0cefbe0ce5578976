package media

import (
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/thesyncim/gopus"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// BenchmarkVAD is the cost of voice activity detection per 20 ms mic
// frame, on the mic reader goroutine, in its worst case: the visitor
// speaks in every frame and barge-in is on (the playout queue is checked
// each frame). audio_level reads the RFC 6464 header extension of a parsed
// packet; decode decodes the Opus packet (an Opus agent, no extension);
// pcm_agent measures a frame a PCM agent's path decoded anyway.
func BenchmarkVAD(b *testing.B) {
	newPath := func(b *testing.B) *audioPath {
		a := &audioPath{log: discardLogger(), pq: newPlayQueue(10, FormatOpus())}
		if err := a.initSpeech(VAD{BargeIn: true}, func(SpeechEvent) {}, nil); err != nil {
			b.Fatal(err)
		}
		a.startSpeech()
		return a
	}
	t0 := time.Now()
	frame := func(i int, payload []byte, level uint8) micFrame {
		return micFrame{Seq: uint64(i), TS: uint64(i) * frameTicks, Arrival: t0.Add(time.Duration(i) * frameDuration),
			Payload: payload, level: level}
	}
	tone := voipOpus(b, 50)

	b.Run("audio_level", func(b *testing.B) {
		a := newPath(b)
		var pkt rtp.Packet
		if err := pkt.Header.SetExtension(1, []byte{loud}); err != nil {
			b.Fatal(err)
		}
		raw, err := pkt.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		if err := pkt.Unmarshal(raw); err != nil { // as readMic holds it
			b.Fatal(err)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			f := frame(i, tone[0], packetLevel(&pkt, 1))
			if lv := a.extLevel(&f); lv.ok {
				a.listen(&f, lv)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		a := newPath(b)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			f := frame(i, tone[i%len(tone)], 0)
			if lv, _ := a.decodeLevel(&f); lv.ok {
				a.listen(&f, lv)
			}
		}
	})
	b.Run("pcm_agent", func(b *testing.B) {
		a := newPath(b)
		pcm := int16LE(sine(320, 16000, 0))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			f := frame(i, tone[0], 0)
			a.listen(&f, frameLevel{dBov: pcmDBov(pcm), source: SourceDecode, ok: true})
		}
	})
	// What decoding at 48 kHz would cost instead of levelRate.
	b.Run("decode_48k_for_comparison", func(b *testing.B) {
		dec, err := gopus.NewDecoder(gopus.DefaultDecoderConfig(48000, 1))
		if err != nil {
			b.Fatal(err)
		}
		pcm := make([]int16, 48000*maxOpusPacketMS/1000)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			n, err := dec.DecodeInt16(tone[i%len(tone)], pcm)
			if err != nil {
				b.Fatal(err)
			}
			_ = int16DBov(pcm[:n])
		}
	})
}

// BenchmarkBargeIn measures barge-in reaction with real pion peers: the
// agent plays a reply, the client speaks over it (audio level extension)
// until playout stops. reaction is from the speech onset in the client's
// audio (the start of its first loud frame) to the arrival of the last
// reply frame at the client, so it includes BargeInMin (300 ms by
// default); cut is from the leg's decision (barge_in At) to that arrival
// (negative: the last frame was sent before the decision), and
// frames_after_cut counts reply frames that arrived after the decision.
// Run with -benchtime=20x: each iteration takes about a second.
func BenchmarkBargeIn(b *testing.B) {
	e := newTestEngine(b, testConfig())
	sl := &speechLog{}
	c, leg, _ := connectLeg(b, e, clientOpts{audioLevel: true}, LegOptions{AgentFormat: FormatOpus(), VAD: VAD{BargeIn: true}, OnSpeech: sl.on})
	c.sendRTP(levels(5, quiet))
	var reaction, cut []time.Duration
	after := 0
	for i := 0; b.Loop(); i++ {
		tag := byte(10 + i%200)
		play(leg, replyFrames(tag, 100))
		agenttest.Poll(b, testWait, "the reply playing", func() bool { return ofReply(c, tag) >= 5 })
		cuts := leg.Stats().BargeIns
		var onset time.Time
		tick := time.NewTicker(frameDuration)
		for k := 0; leg.Stats().BargeIns == cuts; k++ {
			if k == 50 {
				b.Fatal("no barge-in after 1 s of speech")
			}
			if k > 0 {
				<-tick.C
			}
			sent := c.sendRTP(levels(1, loud))
			if k == 0 {
				onset = sent[0].Add(-frameDuration)
			}
		}
		tick.Stop()
		c.sendRTP(levels(25, quiet)) // ends the speech; the cut reply has arrived
		evs := sl.events()
		var at time.Time
		for _, ev := range evs {
			if ev.Kind == SpeechBargeIn {
				at = ev.At
			}
		}
		last, n := c.arrivals(tag, at)
		after = max(after, n)
		reaction = append(reaction, last.Sub(onset))
		cut = append(cut, last.Sub(at))
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"_p50_ms")
		b.ReportMetric(float64(d[(len(d)*99)/100].Microseconds())/1000, name+"_p99_ms")
	}
	report("reaction", reaction)
	report("cut", cut)
	b.ReportMetric(float64(after), "frames_after_cut_max")
}

// arrivals is when the last frame of reply r reached the client, and how
// many of its frames arrived after since.
func (c *client) arrivals(r byte, since time.Time) (last time.Time, after int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.got {
		if len(p) > 1 && p[1] == r {
			last = c.gotAt[i]
			if last.After(since) {
				after++
			}
		}
	}
	return last, after
}

// voipOpus encodes n 20 ms frames of a tone at 48 kHz mono and 32 kbit/s,
// as browsers send speech.
func voipOpus(b *testing.B, n int) [][]byte {
	return toneOpus(b, n, 32000)
}
