package agentbridge

import (
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// FrameDuration is the duration of one audio frame.
const FrameDuration = 20 * time.Millisecond

// AudioFrame is one 20 ms audio frame as carried on the audio subjects.
type AudioFrame struct {
	// Codec is e.g. CodecOpus or "pcm_s16le/16000/1".
	Codec string
	// Seq numbers frames of one direction of a leg without wrapping.
	Seq uint64
	// Timestamp is the media clock of the frame's first sample.
	Timestamp uint64
	// CapturedAt is when the broker received the frame (zero if unknown).
	CapturedAt time.Time
	// Payload is the encoded frame.
	Payload []byte
}

// Msg encodes the frame as a NATS message on subject.
func (f AudioFrame) Msg(subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(HeaderCodec, f.Codec)
	m.Header.Set(HeaderSeq, strconv.FormatUint(f.Seq, 10))
	m.Header.Set(HeaderTimestamp, strconv.FormatUint(f.Timestamp, 10))
	if !f.CapturedAt.IsZero() {
		m.Header.Set(HeaderCapturedAt, strconv.FormatInt(f.CapturedAt.UnixNano(), 10))
	}
	m.Data = f.Payload
	return m
}

// ParseAudioFrame decodes a frame from a NATS message.
func ParseAudioFrame(m *nats.Msg) (AudioFrame, error) {
	var f AudioFrame
	if m.Header == nil {
		return f, fmt.Errorf("%w: no headers", ErrBadFrame)
	}
	f.Codec = m.Header.Get(HeaderCodec)
	if f.Codec == "" {
		return f, fmt.Errorf("%w: missing %s", ErrBadFrame, HeaderCodec)
	}
	var err error
	if f.Seq, err = strconv.ParseUint(m.Header.Get(HeaderSeq), 10, 64); err != nil {
		return f, fmt.Errorf("%w: %s: %v", ErrBadFrame, HeaderSeq, err)
	}
	if ts := m.Header.Get(HeaderTimestamp); ts != "" {
		if f.Timestamp, err = strconv.ParseUint(ts, 10, 64); err != nil {
			return f, fmt.Errorf("%w: %s: %v", ErrBadFrame, HeaderTimestamp, err)
		}
	}
	if ca := m.Header.Get(HeaderCapturedAt); ca != "" {
		n, err := strconv.ParseInt(ca, 10, 64)
		if err != nil {
			return f, fmt.Errorf("%w: %s: %v", ErrBadFrame, HeaderCapturedAt, err)
		}
		f.CapturedAt = time.Unix(0, n)
	}
	f.Payload = m.Data
	return f, nil
}
