package media

import (
	"cmp"
	"fmt"
	"math"
	"time"
)

// Voice activity detection (VAD) on the visitor's microphone. Each 20 ms
// frame gets a level in dBov: from the RFC 6464 client-to-mixer audio level
// header extension when the visitor's browser sends it (free: one byte of
// the RTP header), else from the decoded audio. A frame louder than the
// threshold is voiced; hysteresis turns voiced frames into speech: MinSpeech
// of voiced frames in a row starts it, Hangover without one ends it.
// Durations are measured in media time (RTP timestamps), so network jitter
// does not stretch or shrink them; event times are wall-clock arrivals.

// VAD configures voice activity detection and barge-in on a leg (zero
// fields: defaults).
type VAD struct {
	// ThresholdDBov: a 20 ms frame is voiced above this level (dBov,
	// -127..0; default -45).
	ThresholdDBov float64
	// MinSpeech: voiced this long starts speech (default 60 ms).
	MinSpeech time.Duration
	// Hangover: quiet this long ends speech (default 400 ms).
	Hangover time.Duration
	// BargeIn cuts the agent's playout when the visitor speaks over it.
	BargeIn bool
	// BargeInMin: speech this long over agent audio is a barge-in
	// (default 300 ms).
	BargeInMin time.Duration
}

// Defaults for zero VAD fields.
const (
	defaultVADThreshold = -45.0
	defaultMinSpeech    = 60 * time.Millisecond
	defaultHangover     = 400 * time.Millisecond
	defaultBargeInMin   = 300 * time.Millisecond
)

// minDBov is the quietest level RFC 6464 can express (digital silence).
const minDBov = -127.0

// withDefaults returns v with zero fields set to their defaults.
func (v VAD) withDefaults() VAD {
	v.ThresholdDBov = cmp.Or(v.ThresholdDBov, defaultVADThreshold)
	v.MinSpeech = cmp.Or(v.MinSpeech, defaultMinSpeech)
	v.Hangover = cmp.Or(v.Hangover, defaultHangover)
	v.BargeInMin = cmp.Or(v.BargeInMin, defaultBargeInMin)
	return v
}

// Validate reports whether v (after defaults) is usable; errors wrap
// ErrBadConfig.
func (v VAD) Validate() error {
	v = v.withDefaults()
	switch {
	case v.ThresholdDBov < minDBov || v.ThresholdDBov > 0 || math.IsNaN(v.ThresholdDBov):
		return fmt.Errorf("%w: VAD threshold %v dBov not in [-127, 0]", ErrBadConfig, v.ThresholdDBov)
	case v.MinSpeech < 0 || v.Hangover < 0 || v.BargeInMin < 0:
		return fmt.Errorf("%w: negative VAD duration", ErrBadConfig)
	}
	return nil
}

// SpeechKind is what a SpeechEvent reports.
type SpeechKind string

// Speech event kinds.
const (
	SpeechStarted SpeechKind = "started"  // the visitor started speaking
	SpeechStopped SpeechKind = "stopped"  // the visitor stopped speaking
	SpeechBargeIn SpeechKind = "barge_in" // the visitor spoke over the agent: playout was cut
)

// Sources of the level a speech was detected from (SpeechEvent.Source).
const (
	SourceAudioLevel = "audio_level" // RFC 6464 header extension
	SourceDecode     = "decode"      // level of the decoded audio
)

// SpeechEvent is a change in the visitor's voice activity, or a barge-in.
// A leg reports started and stopped in pairs (a leg or track that ends
// mid-speech reports stopped), and barge_in only between them.
type SpeechEvent struct {
	Kind SpeechKind
	// At is, for started, the onset (the start of the first voiced frame:
	// its arrival less 20 ms); for stopped, the end of the last voiced
	// frame (its arrival); for barge_in, when playout was cut.
	At time.Time
	// Source is SourceAudioLevel or SourceDecode: where the level of the
	// frame that started this speech came from.
	Source string
	// LevelDBov is the loudest frame of this speech so far.
	LevelDBov float64
	// HeardMS, for barge_in, is how much agent audio of the reply being
	// cut was sent to the visitor (ms). A reply is the agent audio since
	// playout last started after being idle (replyIdle) or cleared.
	HeardMS int64
	// Dropped is, for a barge-in, how many queued agent frames the cut
	// dropped.
	Dropped int
}

// frameTicks is one 20 ms frame in RTP ticks of the Opus clock.
const frameTicks = opusFrameTicks

// ticks converts a duration to Opus RTP ticks.
func ticks(d time.Duration) uint64 {
	return uint64(d.Nanoseconds() * opusClock / int64(time.Second))
}

// speechDetector is the hysteresis of one visitor stream: it turns frame
// levels into started/stopped. It is pure (the caller passes times) and
// owned by the mic reader.
type speechDetector struct {
	threshold         float64
	minSpeech, hangTS uint64 // in RTP ticks
	hangover          time.Duration

	// The run of voiced frames that may become speech.
	inRun     bool
	runTS     uint64    // timestamp of its first frame
	runAt     time.Time // arrival of its first frame
	runPeak   float64
	runSource string

	speaking    bool
	onsetTS     uint64    // timestamp of the first voiced frame of the speech
	onsetAt     time.Time // start of the speech (SpeechEvent.At of started)
	peak        float64
	source      string
	lastVoiceTS uint64    // timestamp of the last voiced frame
	lastVoiceAt time.Time // its arrival
}

func newSpeechDetector(v VAD) *speechDetector {
	v = v.withDefaults()
	// A run of n voiced frames spans n frames of media time: MinSpeech
	// rounds up to whole frames (60 ms: 3 frames).
	return &speechDetector{
		threshold: v.ThresholdDBov,
		minSpeech: ticks(v.MinSpeech),
		hangTS:    ticks(v.Hangover),
		hangover:  v.Hangover,
	}
}

// frame takes one frame's level (timestamp ts, arrival at) and returns the
// event it causes, if any. Frames come in timestamp order.
func (d *speechDetector) frame(ts uint64, at time.Time, level float64, source string) (SpeechEvent, bool) {
	if level > d.threshold {
		return d.voiced(ts, at, level, source)
	}
	if !d.speaking {
		d.inRun = false
		return SpeechEvent{}, false
	}
	if ts >= d.lastVoiceTS+d.hangTS {
		return d.end(), true
	}
	return SpeechEvent{}, false
}

func (d *speechDetector) voiced(ts uint64, at time.Time, level float64, source string) (SpeechEvent, bool) {
	d.lastVoiceTS, d.lastVoiceAt = ts, at
	if d.speaking {
		d.peak = max(d.peak, level)
		return SpeechEvent{}, false
	}
	if !d.inRun {
		d.inRun, d.runTS, d.runAt, d.runPeak, d.runSource = true, ts, at, level, source
	}
	d.runPeak = max(d.runPeak, level)
	if ts+frameTicks < d.runTS+d.minSpeech {
		return SpeechEvent{}, false
	}
	d.inRun, d.speaking = false, true
	d.onsetTS, d.onsetAt, d.peak, d.source = d.runTS, d.runAt.Add(-frameDuration), d.runPeak, d.runSource
	return SpeechEvent{Kind: SpeechStarted, At: d.onsetAt, Source: d.source, LevelDBov: d.peak}, true
}

// idle ends the speech when no voiced frame has arrived for Hangover plus
// slack by the wall clock now: the visitor stopped sending (muted, DTX, a
// network cut), so no quiet frame will end it.
func (d *speechDetector) idle(now time.Time) (SpeechEvent, bool) {
	if dl, ok := d.deadline(); ok && !now.Before(dl) {
		return d.end(), true
	}
	return SpeechEvent{}, false
}

// idleSlack is how long past Hangover (wall clock) idle waits: longer than
// the jitter buffer may hold a frame, so that when packets do flow the
// media-time hangover decides.
const idleSlack = maxJitterWindow

// deadline is when idle would end the speech; ok is false when the visitor
// is not speaking.
func (d *speechDetector) deadline() (time.Time, bool) {
	if !d.speaking {
		return time.Time{}, false
	}
	return d.lastVoiceAt.Add(d.hangover + idleSlack), true
}

// end ends the speech (the caller checked d.speaking).
func (d *speechDetector) end() SpeechEvent {
	d.speaking = false
	return SpeechEvent{Kind: SpeechStopped, At: d.lastVoiceAt, Source: d.source, LevelDBov: d.peak}
}

// spoken is how long the visitor has spoken since start, by the end of
// the last voiced frame: media time when start is no later than the onset,
// else the wall clock from start (the agent's reply began mid-speech).
func (d *speechDetector) spoken(start time.Time) time.Duration {
	if !start.After(d.onsetAt) {
		return time.Duration((d.lastVoiceTS + frameTicks - d.onsetTS) * uint64(time.Second) / opusClock)
	}
	return d.lastVoiceAt.Sub(start)
}

// pcmDBov is the level of little-endian int16 PCM in dBov (RMS relative to
// a full-scale square wave, as RFC 6464 §3 and browsers measure it),
// -127 for digital silence.
func pcmDBov(le []byte) float64 {
	n := len(le) / 2
	if n == 0 {
		return minDBov
	}
	var sum int64
	for i := 0; i+1 < len(le); i += 2 {
		v := int64(int16(uint16(le[i]) | uint16(le[i+1])<<8))
		sum += v * v
	}
	return dBov(float64(sum) / float64(n))
}

// int16DBov is pcmDBov of samples.
func int16DBov(s []int16) float64 {
	if len(s) == 0 {
		return minDBov
	}
	var sum int64
	for _, v := range s {
		sum += int64(v) * int64(v)
	}
	return dBov(float64(sum) / float64(len(s)))
}

// dBov converts a mean square (of int16 samples) to dBov.
func dBov(meanSquare float64) float64 {
	if meanSquare <= 0 {
		return minDBov
	}
	return max(10*math.Log10(meanSquare/(32768*32768)), minDBov)
}
