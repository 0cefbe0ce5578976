package media

import (
	"fmt"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/thesyncim/gopus"
)

// The mic path's voice activity and barge-in: for each frame the jitter
// buffer releases, the mic reader takes its level (extLevel, decodeLevel,
// or deliverPCM for a PCM agent), runs the detector (vad.go) and reports
// SpeechEvents through OnSpeech; while the visitor speaks over agent audio
// for BargeInMin it cuts the playout queue (playout.go); with OnUtterance
// set it captures each speech as PCM (utterance.go). Everything here runs
// on the mic reader goroutine (readMic), which owns the detector, the
// decoder and the capture; the only shared state is the playout queue,
// under its own lock.

// speech is a transport's VAD set-up (from LegOptions or BridgeOptions).
type speech struct {
	cfg   VAD // with defaults
	on    func(SpeechEvent)
	onUtt func(Utterance)

	// Owned by the mic reader; fresh for each visitor track (readMic).
	det   *speechDetector
	dec   *levelDecoder // 16 kHz mono; made on first need (a frame without an audio level, an utterance)
	noDec bool          // making dec failed (logged once): such frames have no level
	cap   *capture      // the utterance capture; nil without OnUtterance
}

// initSpeech sets VAD up: it runs when OnSpeech or OnUtterance is set or
// barge-in is on.
func (a *audioPath) initSpeech(v VAD, on func(SpeechEvent), onUtt func(Utterance)) error {
	if err := v.Validate(); err != nil {
		return err
	}
	if on == nil && onUtt == nil && !v.BargeIn {
		return nil
	}
	a.sp = &speech{cfg: v.withDefaults(), on: on, onUtt: onUtt}
	return nil
}

// startSpeech readies the detector for a new visitor track.
func (a *audioPath) startSpeech() {
	if a.sp != nil {
		a.sp.det = newSpeechDetector(a.sp.cfg)
		a.sp.dec, a.sp.noDec = nil, false
		if a.sp.onUtt != nil {
			a.sp.cap = newCapture(a.sp.cfg)
		}
	}
}

// endSpeech closes a speech still open when the visitor's track ends, so
// that started and stopped come in pairs.
func (a *audioPath) endSpeech() {
	if a.sp != nil && a.sp.det != nil && a.sp.det.speaking {
		a.emitSpeech(a.sp.det.end())
	}
}

// speechIdle ends the speech when the visitor stopped sending (by now).
func (a *audioPath) speechIdle(now time.Time) {
	if a.sp == nil || a.sp.det == nil {
		return
	}
	if ev, ok := a.sp.det.idle(now); ok {
		a.emitSpeech(ev)
	}
}

// speechDeadline is when speechIdle has something to do.
func (a *audioPath) speechDeadline() (time.Time, bool) {
	if a.sp == nil || a.sp.det == nil {
		return time.Time{}, false
	}
	return a.sp.det.deadline()
}

// frameLevel is one frame's level and where it came from.
type frameLevel struct {
	dBov   float64
	source string
	ok     bool
}

// extLevel is a frame's level from its RFC 6464 header extension, if VAD
// runs and the packet carried one.
func (a *audioPath) extLevel(f *micFrame) frameLevel {
	if a.sp == nil || f.level == 0 {
		return frameLevel{}
	}
	return frameLevel{dBov: -float64(f.level - 1), source: SourceAudioLevel, ok: true}
}

// decodeLevel is a frame's level from its decoded audio, for an Opus agent
// (a PCM agent's frames are decoded anyway: deliverPCM measures those). It
// also returns the decoded 16 kHz samples, valid until the next decode, so
// that an utterance being captured need not decode the frame again.
func (a *audioPath) decodeLevel(f *micFrame) (frameLevel, []int16) {
	pcm, ok := a.decode16(f.Payload)
	if !ok {
		return frameLevel{}, nil
	}
	return frameLevel{dBov: int16DBov(pcm), source: SourceDecode, ok: true}, pcm
}

// decoder16 is the speech's 16 kHz mono decoder, made on first need; nil
// if it cannot be made (logged once).
func (a *audioPath) decoder16() *levelDecoder {
	if a.sp.dec == nil && !a.sp.noDec {
		dec, err := newLevelDecoder()
		if err != nil {
			a.log.Warn("media: no voice activity or utterances from decoded audio", "err", err)
			a.sp.noDec = true
			return nil
		}
		a.sp.dec = dec
	}
	return a.sp.dec
}

// decode16 decodes pkt at 16 kHz mono with the speech's decoder; the
// samples are valid until the next decode. It counts the decodes
// (legStats.speechDecodes), so tests can tell when VAD pays for them.
func (a *audioPath) decode16(pkt []byte) ([]int16, bool) {
	dec := a.decoder16()
	if dec == nil {
		return nil, false
	}
	a.stats.speechDecodes.Add(1)
	pcm, err := dec.decode(pkt)
	return pcm, err == nil
}

// listen runs the detector on one frame and cuts the playout on a
// barge-in.
func (a *audioPath) listen(f *micFrame, lv frameLevel) {
	det := a.sp.det
	if ev, ok := det.frame(f.TS, f.Arrival, lv.dBov, lv.source); ok {
		a.emitSpeech(ev)
	}
	if !a.sp.cfg.BargeIn || !det.speaking || lv.dBov <= det.threshold {
		return // barge-in is decided on a voiced frame of a speech
	}
	now := time.Now()
	start, playing := a.pq.playing(now)
	if !playing || det.spoken(start) < a.sp.cfg.BargeInMin {
		return
	}
	dropped, heard := a.pq.cut()
	if dropped > 0 {
		a.stats.dropped.Add(uint64(dropped))
	}
	a.stats.bargeIns.Add(1)
	a.emitSpeech(SpeechEvent{Kind: SpeechBargeIn, At: now, Source: det.source, LevelDBov: det.peak,
		HeardMS: int64(heard) * frameDuration.Milliseconds(), Dropped: dropped})
}

// emitSpeech reports ev to OnSpeech.
func (a *audioPath) emitSpeech(ev SpeechEvent) {
	if ev.Kind == SpeechStopped {
		a.pq.release() // the visitor has stopped: the agent may speak
	}
	a.log.Debug("media: speech", "kind", ev.Kind, "source", ev.Source, "level_dbov", ev.LevelDBov, "heard_ms", ev.HeardMS)
	if a.sp.on != nil {
		a.sp.on(ev)
	}
	// The utterance starts after OnSpeech (its pre-roll decode does not
	// delay the event) and is handed over after it.
	switch {
	case a.sp.cap == nil:
	case ev.Kind == SpeechStarted:
		a.beginUtterance(ev)
	case ev.Kind == SpeechStopped:
		a.endUtterance(ev)
	}
}

// levelDecoder measures the level of Opus packets by decoding them, when
// the visitor's packets carry no audio level. It decodes at 16 kHz mono:
// the level of speech is in its lower band, and a narrower output costs
// less.
type levelDecoder struct {
	dec *gopus.Decoder
	pcm []int16
}

const levelRate = 16000

func newLevelDecoder() (*levelDecoder, error) {
	dec, err := gopus.NewDecoder(gopus.DefaultDecoderConfig(levelRate, 1))
	if err != nil {
		return nil, fmt.Errorf("media: opus decoder for voice activity: %w", err)
	}
	return &levelDecoder{dec: dec, pcm: make([]int16, levelRate*maxOpusPacketMS/1000)}, nil
}

// decode decodes pkt; the samples are valid until the next call.
func (d *levelDecoder) decode(pkt []byte) ([]int16, error) {
	n, err := decodeInt16(d.dec, pkt, d.pcm)
	if err != nil {
		return nil, err
	}
	return d.pcm[:n], nil
}

// reset starts the decoder afresh, for packets that do not follow the last
// one it decoded.
func (d *levelDecoder) reset() { d.dec.Reset() }

// audioLevelExtID is the id the RFC 6464 audio level header extension was
// negotiated with on r (0: not negotiated).
func audioLevelExtID(r *webrtc.RTPReceiver) uint8 {
	if r == nil {
		return 0
	}
	for _, e := range r.GetParameters().HeaderExtensions {
		if e.URI == sdp.AudioLevelURI && e.ID > 0 && e.ID < 256 {
			return uint8(e.ID)
		}
	}
	return 0
}

// packetLevel is the jitter buffer's form of a packet's audio level: 1 +
// the RFC 6464 level (0..127, -dBov), or 0 when it carries none.
func packetLevel(p *rtp.Packet, id uint8) uint8 {
	if id == 0 {
		return 0
	}
	b := p.GetExtension(id)
	var ext rtp.AudioLevelExtension
	if ext.Unmarshal(b) != nil {
		return 0
	}
	return ext.Level + 1
}
