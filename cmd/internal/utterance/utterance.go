// Package utterance finds utterances in a stream of agent-side audio
// frames by their energy: the demo echo agent's stand-in for a real voice
// activity detector. It lives beside the echo agent, not in the agent SDK,
// so that SDK users do not import an Opus decoder they do not need.
package utterance

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/thesyncim/gopus"

	"github.com/parley-rtc/parley/agentbridge"
)

// Utterance is a stretch of speech found by a Detector.
type Utterance struct {
	// N numbers the utterances of a stream from 1.
	N int
	// Duration is the speech's length, from the first loud frame to the
	// last.
	Duration time.Duration
	// PeakDBFS is the loudest frame's level in dB below full scale.
	PeakDBFS float64
}

// Detector finds utterances in a stream of 20 ms audio frames by
// their energy: speech starts with a frame louder than ThresholdDBFS and
// ends after Hangover of quieter frames. It is a stand-in for a real voice
// activity detector, enough for tests and demos. Opus frames are decoded
// (pure Go); very small Opus packets, which carry silence, are not. It is
// not safe for concurrent use.
type Detector struct {
	// ThresholdDBFS is the level above which a frame is speech (-40).
	ThresholdDBFS float64
	// Hangover is how much quiet ends an utterance (240 ms).
	Hangover time.Duration

	dec      *gopus.Decoder
	pcm      []int16
	speaking bool
	loud     int // frames from the first to the last loud frame
	quiet    int // quiet frames since the last loud one
	peak     float64
	count    int
}

// vadRate is the sample rate Opus frames are decoded at.
const vadRate = 16000

// silentOpusBytes: Opus packets this small carry (near) silence.
const silentOpusBytes = 8

// NewDetector returns a detector with the default settings.
func NewDetector() *Detector {
	return &Detector{ThresholdDBFS: -40, Hangover: 240 * time.Millisecond}
}

// Push takes the next frame and returns an utterance when one has just
// ended.
func (d *Detector) Push(f agentbridge.AudioFrame) (Utterance, bool) {
	level := d.level(f)
	if level > d.ThresholdDBFS {
		if !d.speaking {
			d.speaking, d.loud, d.quiet, d.peak = true, 0, 0, level
		}
		d.loud += d.quiet + 1
		d.quiet = 0
		d.peak = max(d.peak, level)
		return Utterance{}, false
	}
	if !d.speaking {
		return Utterance{}, false
	}
	d.quiet++
	if time.Duration(d.quiet)*agentbridge.FrameDuration < d.Hangover {
		return Utterance{}, false
	}
	d.speaking = false
	d.count++
	return Utterance{N: d.count, Duration: time.Duration(d.loud) * agentbridge.FrameDuration, PeakDBFS: d.peak}, true
}

// level returns the frame's RMS level in dBFS (-inf for silence).
func (d *Detector) level(f agentbridge.AudioFrame) float64 {
	var samples []int16
	switch {
	case strings.HasPrefix(f.Codec, "pcm_s16le/"):
		n := len(f.Payload) / 2
		if cap(d.pcm) < n {
			d.pcm = make([]int16, n)
		}
		samples = d.pcm[:n]
		for i := range samples {
			samples[i] = int16(binary.LittleEndian.Uint16(f.Payload[2*i:]))
		}
	case strings.HasPrefix(f.Codec, "opus/"):
		if len(f.Payload) <= silentOpusBytes {
			return math.Inf(-1)
		}
		if d.dec == nil {
			// Mono at 16 kHz holds all the energy of speech and costs a
			// third less than 48 kHz stereo.
			dec, err := gopus.NewDecoder(gopus.DefaultDecoderConfig(vadRate, 1))
			if err != nil {
				return math.Inf(-1)
			}
			d.dec, d.pcm = dec, make([]int16, vadRate*120/1000) // up to 120 ms
		}
		n, err := d.dec.DecodeInt16(f.Payload, d.pcm[:cap(d.pcm)])
		if err != nil {
			return math.Inf(-1)
		}
		samples = d.pcm[:n]
	default:
		return math.Inf(-1)
	}
	if len(samples) == 0 {
		return math.Inf(-1)
	}
	var sum float64
	for _, s := range samples {
		v := float64(s) / 32768
		sum += v * v
	}
	return 10 * math.Log10(sum/float64(len(samples)))
}

// String describes the utterance the way the echo agent transcribes it.
func (u Utterance) String() string {
	return "utterance " + strconv.Itoa(u.N) + " (" + strconv.FormatFloat(u.Duration.Seconds(), 'f', 2, 64) + " s)"
}
