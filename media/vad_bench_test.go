package media

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/thesyncim/gopus"
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
		if err := a.initSpeech(VAD{BargeIn: true}, func(SpeechEvent) {}); err != nil {
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
	tone := realOpus(b, 50)

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
			if lv := a.decodeLevel(&f); lv.ok {
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
