package agentbridge_test

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// sameFrame compares frames, times by instant.
func sameFrame(a, b agentbridge.AudioFrame) bool {
	return a.Codec == b.Codec && a.Seq == b.Seq && a.Timestamp == b.Timestamp &&
		a.CapturedAt.Equal(b.CapturedAt) && a.CapturedAt.IsZero() == b.CapturedAt.IsZero() &&
		bytes.Equal(a.Payload, b.Payload)
}

func TestAudioFrameRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		f    agentbridge.AudioFrame
	}{
		{"opus", agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: 1, Timestamp: 960,
			CapturedAt: time.Unix(0, 1_700_000_000_123_456_789), Payload: []byte{0xfc, 0xff, 0xfe}}},
		{"pcm without capture time", agentbridge.AudioFrame{Codec: "pcm_s16le/16000/1", Seq: 7,
			Timestamp: 320, Payload: make([]byte, 640)}},
		{"zero seq and timestamp", agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: []byte{1}}},
		{"max values", agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: math.MaxUint64,
			Timestamp: math.MaxUint64, CapturedAt: time.Unix(0, math.MaxInt64)}},
		{"epoch capture time", agentbridge.AudioFrame{Codec: "c", CapturedAt: time.Unix(0, 0)}},
		{"empty payload", agentbridge.AudioFrame{Codec: "c", Seq: 3}},
	}
	for _, tt := range tests {
		m := tt.f.Msg("parley.conv.c.in.audio")
		if m.Subject != "parley.conv.c.in.audio" {
			t.Errorf("%s: subject %q", tt.name, m.Subject)
		}
		if got := m.Header.Get(agentbridge.HeaderCodec); got != tt.f.Codec {
			t.Errorf("%s: codec header %q", tt.name, got)
		}
		if _, ok := m.Header[agentbridge.HeaderCapturedAt]; ok == tt.f.CapturedAt.IsZero() {
			t.Errorf("%s: %s header present=%v for CapturedAt %v", tt.name, agentbridge.HeaderCapturedAt, ok, tt.f.CapturedAt)
		}
		got, err := agentbridge.ParseAudioFrame(m)
		if err != nil {
			t.Fatalf("%s: parse: %v", tt.name, err)
		}
		if !sameFrame(got, tt.f) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", tt.name, got, tt.f)
		}
	}
}

func TestParseAudioFrameHeaders(t *testing.T) {
	t.Parallel()
	msg := func(h map[string]string) *nats.Msg {
		m := nats.NewMsg("s")
		for k, v := range h {
			m.Header.Set(k, v)
		}
		m.Data = []byte("payload")
		return m
	}
	valid := func() map[string]string {
		return map[string]string{
			agentbridge.HeaderCodec:      agentbridge.CodecOpus,
			agentbridge.HeaderSeq:        "5",
			agentbridge.HeaderTimestamp:  "4800",
			agentbridge.HeaderCapturedAt: "1700000000000000000",
		}
	}
	with := func(k, v string) *nats.Msg {
		h := valid()
		h[k] = v
		return msg(h)
	}
	without := func(k string) *nats.Msg {
		h := valid()
		delete(h, k)
		return msg(h)
	}
	tests := []struct {
		name string
		m    *nats.Msg
		ok   bool
	}{
		{"valid", msg(valid()), true},
		{"timestamp optional", without(agentbridge.HeaderTimestamp), true},
		{"captured at optional", without(agentbridge.HeaderCapturedAt), true},
		{"negative captured at", with(agentbridge.HeaderCapturedAt, "-5"), true},
		{"no headers", &nats.Msg{Subject: "s", Data: []byte("x")}, false},
		{"empty headers", msg(nil), false},
		{"missing codec", without(agentbridge.HeaderCodec), false},
		{"empty codec", with(agentbridge.HeaderCodec, ""), false},
		{"missing seq", without(agentbridge.HeaderSeq), false},
		{"empty seq", with(agentbridge.HeaderSeq, ""), false},
		{"non-numeric seq", with(agentbridge.HeaderSeq, "five"), false},
		{"negative seq", with(agentbridge.HeaderSeq, "-1"), false},
		{"seq overflow", with(agentbridge.HeaderSeq, "18446744073709551616"), false},
		{"seq with space", with(agentbridge.HeaderSeq, " 5"), false},
		{"bad timestamp", with(agentbridge.HeaderTimestamp, "0x10"), false},
		{"negative timestamp", with(agentbridge.HeaderTimestamp, "-1"), false},
		{"bad captured at", with(agentbridge.HeaderCapturedAt, "yesterday"), false},
		{"captured at overflow", with(agentbridge.HeaderCapturedAt, "9223372036854775808"), false},
	}
	for _, tt := range tests {
		f, err := agentbridge.ParseAudioFrame(tt.m)
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case !tt.ok && !errors.Is(err, agentbridge.ErrBadFrame):
			t.Errorf("%s: error %v, want ErrBadFrame", tt.name, err)
		case tt.ok && !bytes.Equal(f.Payload, tt.m.Data):
			t.Errorf("%s: payload %q", tt.name, f.Payload)
		}
	}
}

func TestParseAudioFrameValues(t *testing.T) {
	t.Parallel()
	m := nats.NewMsg("s")
	m.Header.Set(agentbridge.HeaderCodec, "pcm_s16le/16000/1")
	m.Header.Set(agentbridge.HeaderSeq, "12")
	m.Header.Set(agentbridge.HeaderCapturedAt, "1500")
	m.Data = []byte{9, 8}
	f, err := agentbridge.ParseAudioFrame(m)
	if err != nil {
		t.Fatal(err)
	}
	want := agentbridge.AudioFrame{Codec: "pcm_s16le/16000/1", Seq: 12, CapturedAt: time.Unix(0, 1500), Payload: []byte{9, 8}}
	if !sameFrame(f, want) {
		t.Fatalf("got %+v, want %+v", f, want)
	}
}

func FuzzParseAudioFrame(f *testing.F) {
	f.Add(agentbridge.CodecOpus, "1", "960", "1700000000000000000", []byte{1, 2, 3})
	f.Add("pcm_s16le/16000/1", "0", "", "", []byte{})
	f.Add("", "1", "1", "1", []byte(nil))
	f.Add("c", "18446744073709551615", "18446744073709551615", "-9223372036854775808", []byte("x"))
	f.Add("c", "-1", "x", "y", []byte("x"))
	f.Add("c\r\nInjected: yes", "007", "+1", " 1", []byte("\x00"))
	f.Fuzz(func(t *testing.T, codec, seq, ts, capturedAt string, payload []byte) {
		m := nats.NewMsg("parley.conv.c.in.audio")
		for k, v := range map[string]string{
			agentbridge.HeaderCodec: codec, agentbridge.HeaderSeq: seq,
			agentbridge.HeaderTimestamp: ts, agentbridge.HeaderCapturedAt: capturedAt,
		} {
			if v != "" {
				m.Header.Set(k, v)
			}
		}
		m.Data = payload
		fr, err := agentbridge.ParseAudioFrame(m)
		if err != nil {
			if !errors.Is(err, agentbridge.ErrBadFrame) {
				t.Fatalf("error %v is not ErrBadFrame", err)
			}
			return
		}
		if fr.Codec == "" {
			t.Fatal("accepted a frame without codec")
		}
		again, err := agentbridge.ParseAudioFrame(fr.Msg(m.Subject))
		if err != nil {
			t.Fatalf("re-encoded frame %+v does not parse: %v", fr, err)
		}
		if !sameFrame(again, fr) {
			t.Fatalf("re-encoding changed the frame\nfirst  %+v\nsecond %+v", fr, again)
		}
	})
}
