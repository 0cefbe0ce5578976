package media

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Codec names used in Format.Codec.
const (
	codecOpus = "opus"
	codecPCM  = "pcm_s16le"
)

// frameDuration is the length of one audio frame on both paths (RFC 7587
// allows 2.5–120 ms; browsers send 20 ms).
const frameDuration = 20 * time.Millisecond

// FormatOpus is the Opus format as carried by WebRTC: opus/48000/2
// (RFC 7587 §7: the SDP always says 48000/2, whatever is actually coded).
func FormatOpus() Format { return Format{Codec: codecOpus, SampleRate: 48000, Channels: 2} }

// FormatPCM is signed 16-bit little-endian mono PCM at rate Hz.
func FormatPCM(rate int) Format { return Format{Codec: codecPCM, SampleRate: rate, Channels: 1} }

// ParseFormat parses an agent audio format: "opus" or "opus/48000/2" for Opus
// passthrough; "pcm_s16le/<rate>" or "pcm_s16le/<rate>/1" for mono PCM at
// 16000, 24000 or 48000 Hz. Errors wrap ErrBadFormat.
func ParseFormat(s string) (Format, error) {
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), "/")
	if len(parts) > 3 {
		return Format{}, fmt.Errorf("%w: %q", ErrBadFormat, s)
	}
	nums := make([]int, 0, 2)
	for _, p := range parts[1:] {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return Format{}, fmt.Errorf("%w: %q: bad number %q", ErrBadFormat, s, p)
		}
		nums = append(nums, n)
	}
	var f Format
	switch parts[0] {
	case codecOpus:
		f = FormatOpus()
		if len(nums) == 0 {
			return f, nil
		}
		if len(nums) != 2 {
			return Format{}, fmt.Errorf("%w: %q: want opus or opus/48000/2", ErrBadFormat, s)
		}
		f.SampleRate, f.Channels = nums[0], nums[1]
	case codecPCM:
		if len(nums) == 0 {
			return Format{}, fmt.Errorf("%w: %q: PCM needs a sample rate", ErrBadFormat, s)
		}
		f = FormatPCM(nums[0])
		if len(nums) == 2 {
			f.Channels = nums[1]
		}
	default:
		return Format{}, fmt.Errorf("%w: %q: unknown codec", ErrBadFormat, s)
	}
	if err := f.Validate(); err != nil {
		return Format{}, err
	}
	return f, nil
}

// Validate reports whether media supports f (errors wrap ErrBadFormat).
func (f Format) Validate() error {
	switch f.Codec {
	case codecOpus:
		if f.SampleRate != 48000 || f.Channels != 2 {
			return fmt.Errorf("%w: %s: Opus is opus/48000/2", ErrBadFormat, f)
		}
	case codecPCM:
		switch f.SampleRate {
		case 16000, 24000, 48000:
		default:
			return fmt.Errorf("%w: %s: PCM rate must be 16000, 24000 or 48000", ErrBadFormat, f)
		}
		if f.Channels != 1 {
			return fmt.Errorf("%w: %s: PCM must be mono", ErrBadFormat, f)
		}
	default:
		return fmt.Errorf("%w: unknown codec %q", ErrBadFormat, f.Codec)
	}
	return nil
}

// String is the canonical form used as the Parley-Codec header:
// "opus/48000/2" or "pcm_s16le/16000/1".
func (f Format) String() string {
	return f.Codec + "/" + strconv.Itoa(f.SampleRate) + "/" + strconv.Itoa(f.Channels)
}

// IsOpus reports whether frames in f are Opus packets (passed through as
// received) rather than PCM.
func (f Format) IsOpus() bool { return f.Codec == codecOpus }

// frameSamples is the number of samples per channel in one 20 ms frame.
func (f Format) frameSamples() int { return f.SampleRate / 50 }

// frameBytes is the size of one 20 ms PCM frame (int16 samples).
func (f Format) frameBytes() int { return f.frameSamples() * f.Channels * 2 }
