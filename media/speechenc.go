package media

import (
	"bytes"
	"fmt"
)

// SpeechEncoder turns mono PCM into 20 ms Opus packets (RFC 6716) to Play
// (Codec agentbridge.CodecOpus): the speech pipeline's text-to-speech
// output. Mono packets play on the leg's stereo Opus track as they are:
// each packet's TOC byte says it is mono (RFC 6716 §3.1), and browsers
// decode it so. It is not safe for concurrent use: one per leg's TTS
// goroutine.
type SpeechEncoder struct {
	enc  *pcmEncoder // for rate (gopus encoders are per rate)
	rate int
	held []int16 // the last partial frame
}

// speechEncoderRate is the rate a SpeechEncoder starts at: the local
// text-to-speech engines' (flite speaks at 16 kHz).
const speechEncoderRate = 16000

// NewSpeechEncoder makes an encoder, ready (warmed up) for 16 kHz speech;
// another rate makes a new encoder on its first Encode.
func NewSpeechEncoder() (*SpeechEncoder, error) {
	enc, err := newPCMEncoder(FormatPCM(speechEncoderRate))
	if err != nil {
		return nil, err
	}
	return &SpeechEncoder{enc: enc, rate: speechEncoderRate, held: make([]int16, 0, speechEncoderRate/50)}, nil
}

// Encode returns the 20 ms packets of pcm at rate (8000, 12000, 16000,
// 24000 or 48000 Hz; anything else is an error wrapping ErrBadFormat:
// resample first with media/speech). The last partial frame is held back
// until more PCM comes or Flush pads it with silence. Each packet is a new
// slice. A rate other than the last call's first flushes what is held at
// the old rate (its packet comes first), then starts a new encoder.
func (e *SpeechEncoder) Encode(pcm []int16, rate int) ([][]byte, error) {
	switch rate {
	case 8000, 12000, 16000, 24000, 48000:
	default:
		return nil, fmt.Errorf("%w: speech at %d Hz (Opus takes 8, 12, 16, 24 or 48 kHz)", ErrBadFormat, rate)
	}
	var out [][]byte
	if rate != e.rate {
		var err error
		if out, err = e.Flush(); err != nil {
			return nil, err
		}
		enc, err := newPCMEncoder(FormatPCM(rate))
		if err != nil {
			return nil, err
		}
		e.enc, e.rate = enc, rate
	}
	spf := e.rate / 50
	e.held = append(e.held, pcm...)
	off := 0
	for ; len(e.held)-off >= spf; off += spf {
		pkt, err := e.enc.encode(e.held[off : off+spf])
		if err != nil {
			e.Reset()
			return nil, fmt.Errorf("media: opus encode of speech: %w", err)
		}
		out = append(out, bytes.Clone(pkt))
	}
	e.held = e.held[:copy(e.held, e.held[off:])]
	return out, nil
}

// Flush returns the held partial frame padded with silence to 20 ms (no
// packet when nothing is held): the end of the speech.
func (e *SpeechEncoder) Flush() ([][]byte, error) {
	if len(e.held) == 0 {
		return nil, nil
	}
	n := len(e.held)
	frame := append(e.held, make([]int16, e.rate/50-n)...)
	e.held = frame[:0]
	pkt, err := e.enc.encode(frame)
	if err != nil {
		return nil, fmt.Errorf("media: opus encode of speech: %w", err)
	}
	return [][]byte{bytes.Clone(pkt)}, nil
}

// Reset drops held PCM (a barge-in cut the reply).
func (e *SpeechEncoder) Reset() { e.held = e.held[:0] }
