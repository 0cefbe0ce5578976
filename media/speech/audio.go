package speech

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// RecognitionRate is the sample rate speech recognition works at (16 kHz,
// what pocketsphinx's en-us model was trained on and what the media path
// decodes a visitor's Opus to for a PCM agent).
const RecognitionRate = 16000

// Audio is mono signed 16-bit PCM (s16le on the wire) at Rate samples per
// second.
type Audio struct {
	Rate    int
	Samples []int16
}

// Duration is how long the audio plays.
func (a Audio) Duration() time.Duration {
	if a.Rate <= 0 {
		return 0
	}
	return time.Duration(len(a.Samples)) * time.Second / time.Duration(a.Rate)
}

// PCM returns the samples as s16le bytes ("pcm_s16le/<rate>/1" frames).
func (a Audio) PCM() []byte {
	b := make([]byte, 2*len(a.Samples))
	for i, s := range a.Samples {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(s))
	}
	return b
}

// AudioFromPCM reads s16le mono bytes at rate (an odd trailing byte is
// dropped).
func AudioFromPCM(rate int, pcm []byte) Audio {
	s := make([]int16, len(pcm)/2)
	for i := range s {
		s[i] = int16(binary.LittleEndian.Uint16(pcm[2*i:]))
	}
	return Audio{Rate: rate, Samples: s}
}

// WAV returns the audio as a canonical 44-byte-header RIFF/WAVE file
// (PCM, 16-bit, mono).
func (a Audio) WAV() []byte {
	n := 2 * len(a.Samples)
	b := make([]byte, 44, 44+n)
	copy(b[0:], "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+n))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1) // WAVE_FORMAT_PCM
	binary.LittleEndian.PutUint16(b[22:], 1) // mono
	binary.LittleEndian.PutUint32(b[24:], uint32(a.Rate))
	binary.LittleEndian.PutUint32(b[28:], uint32(2*a.Rate))
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(n))
	return append(b, a.PCM()...)
}

// errWAV is ParseWAV's error; callers wrap it in an *Error.
var errWAV = errors.New("not a 16-bit PCM WAV file")

// ParseWAV reads a RIFF/WAVE file of 16-bit PCM (format 1, or
// WAVE_FORMAT_EXTENSIBLE with a PCM subformat), mono or multi-channel
// (mixed down to mono). Chunks other than fmt and data are skipped. A data
// chunk whose size runs past the end (streamed WAV, which writes 0xFFFFFFFF
// or 0) is read to the end of b.
func ParseWAV(b []byte) (Audio, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return Audio{}, fmt.Errorf("%w: no RIFF/WAVE header", errWAV)
	}
	var rate, channels int
	haveFmt := false
	for p := 12; p+8 <= len(b); {
		id := string(b[p : p+4])
		size := int(binary.LittleEndian.Uint32(b[p+4:]))
		body := b[p+8:]
		if id == "data" {
			if !haveFmt {
				return Audio{}, fmt.Errorf("%w: data before fmt", errWAV)
			}
			if size > 0 && size <= len(body) {
				body = body[:size]
			}
			return mixdown(rate, channels, body), nil
		}
		if size < 0 || size > len(body) {
			return Audio{}, fmt.Errorf("%w: chunk %q runs past the end", errWAV, id)
		}
		if id == "fmt " {
			if size < 16 {
				return Audio{}, fmt.Errorf("%w: short fmt chunk", errWAV)
			}
			format := binary.LittleEndian.Uint16(body[0:])
			channels = int(binary.LittleEndian.Uint16(body[2:]))
			rate = int(binary.LittleEndian.Uint32(body[4:]))
			bits := binary.LittleEndian.Uint16(body[14:])
			if format == 0xFFFE && size >= 26 { // WAVE_FORMAT_EXTENSIBLE: subformat GUID starts with the format tag
				format = binary.LittleEndian.Uint16(body[24:])
			}
			if format != 1 || bits != 16 || channels < 1 || channels > 8 || rate < 1000 || rate > 384000 {
				return Audio{}, fmt.Errorf("%w: format %d, %d bits, %d channels, %d Hz", errWAV, format, bits, channels, rate)
			}
			haveFmt = true
		}
		p += 8 + size + size%2 // chunks are padded to an even size
	}
	return Audio{}, fmt.Errorf("%w: no data chunk", errWAV)
}

// mixdown averages interleaved s16le frames of channels samples to mono.
func mixdown(rate, channels int, pcm []byte) Audio {
	frames := len(pcm) / (2 * channels)
	out := make([]int16, frames)
	for i := range out {
		sum := 0
		for c := 0; c < channels; c++ {
			sum += int(int16(binary.LittleEndian.Uint16(pcm[2*(i*channels+c):])))
		}
		out[i] = int16(sum / channels)
	}
	return Audio{Rate: rate, Samples: out}
}
