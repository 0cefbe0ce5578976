package media

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/thesyncim/gopus"
)

// Opus ⇄ PCM for agents that speak PCM, with the pure-Go gopus codec (no
// cgo). Opus itself is RFC 6716; its RTP payload format RFC 7587.

// maxOpusPacketMS is the longest Opus packet (RFC 6716 §3.2.1: 120 ms).
const maxOpusPacketMS = 120

// maxPacketBytes bounds an Opus packet handed to the codec.
const maxPacketBytes = 1500

// encodeBitrate is the bitrate of Opus encoded from agent PCM: plenty for
// speech (RFC 7587 §3.1.1 recommends 20–32 kbit/s for fullband speech).
const encodeBitrate = 32000

// pcmDecoder turns visitor Opus packets into mono PCM at the agent rate.
// It is owned by the leg's RTP reader goroutine.
type pcmDecoder struct {
	dec *gopus.Decoder
	f   Format
	pcm []int16   // one packet's samples, up to 120 ms
	f32 []float32 // FEC output
}

func newPCMDecoder(f Format) (*pcmDecoder, error) {
	cfg := gopus.DefaultDecoderConfig(f.SampleRate, f.Channels)
	dec, err := gopus.NewDecoder(cfg)
	if err != nil {
		return nil, fmt.Errorf("media: opus decoder %s: %w", f, err)
	}
	n := f.SampleRate * maxOpusPacketMS / 1000 * f.Channels
	return &pcmDecoder{dec: dec, f: f, pcm: make([]int16, n), f32: make([]float32, f.frameSamples()*f.Channels)}, nil
}

// decode decodes one Opus packet into a new little-endian int16 buffer.
func (d *pcmDecoder) decode(pkt []byte) ([]byte, error) {
	n, err := decodeInt16(d.dec, pkt, d.pcm)
	if err != nil {
		return nil, err
	}
	return int16LE(d.pcm[:n*d.f.Channels]), nil
}

// decodeInt16 decodes one Opus packet into pcm, refusing one larger than
// maxPacketBytes; it returns the samples per channel.
func decodeInt16(dec *gopus.Decoder, pkt []byte, pcm []int16) (int, error) {
	if len(pkt) > maxPacketBytes {
		return 0, fmt.Errorf("media: opus packet of %d bytes", len(pkt))
	}
	return dec.DecodeInt16(pkt, pcm)
}

// conceal makes a 20 ms frame for one lost packet: from the in-band FEC
// (LBRR) of next when fec is set and next carries it, else by packet loss
// concealment (RFC 6716 §4.4).
func (d *pcmDecoder) conceal(next []byte, fec bool) ([]byte, error) {
	if fec && len(next) > 0 && len(next) <= maxPacketBytes {
		n, err := d.dec.DecodeWithFEC(next, d.f32, true)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 2*n*d.f.Channels)
		for i, v := range d.f32[:n*d.f.Channels] {
			binary.LittleEndian.PutUint16(out[2*i:], uint16(floatToInt16(v)))
		}
		return out, nil
	}
	n, err := d.dec.DecodeInt16(nil, d.pcm[:d.f.frameSamples()*d.f.Channels])
	if err != nil {
		return nil, err
	}
	return int16LE(d.pcm[:n*d.f.Channels]), nil
}

// warmupFrames is how many frames of tone warm an encoder up (a few ms of
// CPU per PCM leg).
const warmupFrames = 30

// pcmEncoder turns agent PCM into 20 ms Opus packets. It is owned by the
// playout clock's shard that sends the leg's frames.
type pcmEncoder struct {
	enc *gopus.Encoder
	out []byte
}

func newPCMEncoder(f Format) (*pcmEncoder, error) {
	enc, err := gopus.NewEncoder(gopus.EncoderConfig{
		SampleRate:  f.SampleRate,
		Channels:    f.Channels,
		Application: gopus.ApplicationVoIP,
	})
	if err != nil {
		return nil, fmt.Errorf("media: opus encoder %s: %w", f, err)
	}
	if err := enc.SetBitrate(encodeBitrate); err != nil {
		return nil, fmt.Errorf("media: opus encoder bitrate: %w", err)
	}
	e := &pcmEncoder{enc: enc, out: make([]byte, maxPacketBytes)}
	// Warm up: gopus allocates its buffers lazily, the first time it
	// switches mode (MEASURED.md), which happens ~20 frames into a tone.
	// Do that now rather than while playing.
	n := f.frameSamples() * f.Channels
	frame := make([]int16, n)
	if _, err := e.encode(frame); err != nil {
		return nil, fmt.Errorf("media: opus encoder warm-up: %w", err)
	}
	for k := range warmupFrames {
		for i := range frame {
			frame[i] = int16(8000 * math.Sin(2*math.Pi*440*float64(k*n+i)/float64(f.SampleRate)))
		}
		if _, err := e.encode(frame); err != nil {
			return nil, fmt.Errorf("media: opus encoder warm-up: %w", err)
		}
	}
	// Fade the state back to silence (Reset would also drop the buffers),
	// so the first real frame is not predicted from the tone.
	clear(frame)
	for range warmupFrames / 3 {
		if _, err := e.encode(frame); err != nil {
			return nil, fmt.Errorf("media: opus encoder warm-up: %w", err)
		}
	}
	return e, nil
}

// encode encodes exactly one 20 ms frame; the packet is valid until the
// next call.
func (e *pcmEncoder) encode(pcm []int16) ([]byte, error) {
	n, err := e.enc.EncodeInt16(pcm, e.out)
	if err != nil {
		return nil, err
	}
	return e.out[:n], nil
}

// int16LE encodes samples as little-endian bytes in a new slice.
func int16LE(s []int16) []byte {
	out := make([]byte, 2*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint16(out[2*i:], uint16(v))
	}
	return out
}

// appendLEInt16 appends the little-endian samples in b (an odd last byte
// is ignored) to dst.
func appendLEInt16(dst []int16, b []byte) []int16 {
	for i := 0; i+1 < len(b); i += 2 {
		dst = append(dst, int16(binary.LittleEndian.Uint16(b[i:])))
	}
	return dst
}

func floatToInt16(v float32) int16 {
	x := math.Round(float64(v) * 32768)
	return int16(max(min(x, math.MaxInt16), math.MinInt16))
}
