package media

import (
	"errors"
	"testing"
	"time"

	"github.com/pion/rtcp"
)

func TestParseFormat(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want string
		opus bool
	}{
		{"opus", "opus/48000/2", true},
		{"opus/48000/2", "opus/48000/2", true},
		{" OPUS/48000/2 ", "opus/48000/2", true},
		{"pcm_s16le/16000", "pcm_s16le/16000/1", false},
		{"pcm_s16le/16000/1", "pcm_s16le/16000/1", false},
		{"pcm_s16le/24000/1", "pcm_s16le/24000/1", false},
		{"pcm_s16le/48000", "pcm_s16le/48000/1", false},
	}
	for _, tc := range cases {
		f, err := ParseFormat(tc.in)
		if err != nil {
			t.Fatalf("ParseFormat(%q): %v", tc.in, err)
		}
		if f.String() != tc.want || f.IsOpus() != tc.opus {
			t.Fatalf("ParseFormat(%q) = %s (opus %v)", tc.in, f, f.IsOpus())
		}
		if again, err := ParseFormat(f.String()); err != nil || again != f {
			t.Fatalf("round trip of %s: %v %v", f, again, err)
		}
	}
	for _, bad := range []string{
		"", "opus/", "opus/48000", "opus/44100/2", "opus/48000/1", "opus/48000/2/1",
		"pcm_s16le", "pcm_s16le/8000", "pcm_s16le/16000/2", "pcm_s16le/x", "pcm_s16le/-16000",
		"pcm_f32le/16000", "g711", "pcm_s16le/16000/1/1",
	} {
		if _, err := ParseFormat(bad); !errors.Is(err, ErrBadFormat) {
			t.Errorf("ParseFormat(%q) err = %v", bad, err)
		}
	}
	if FormatOpus().String() != "opus/48000/2" || FormatPCM(16000).String() != "pcm_s16le/16000/1" {
		t.Fatal("helpers")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	d := Config{}.withDefaults()
	if d.JitterWindow != 60*time.Millisecond || d.SilenceTimeout != 30*time.Second || d.PlayoutQueue != 500 ||
		d.SocketBuffer != 4<<20 || d.FailedTimeout != 25*time.Second {
		t.Fatalf("defaults %+v", d)
	}
	for _, c := range []Config{
		{UDPPort: 70000},
		{PortMin: 5000, PortMax: 4000},
		{JitterWindow: 300 * time.Millisecond},
		{JitterWindow: time.Millisecond},
		{PlayoutQueue: -1},
		{NAT1To1IPs: []string{"not-an-ip"}},
		{SilenceTimeout: -time.Second},
	} {
		if err := c.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
		if _, err := NewEngine(c, nil); !errors.Is(err, ErrBadConfig) {
			t.Errorf("NewEngine(%+v) = %v", c, err)
		}
	}
	e, err := NewEngine(Config{NAT1To1IPs: []string{"203.0.113.7"}, PortMin: 40000, PortMax: 40100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = e.Close()
}

func TestRTTFromReport(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 250_000_000)
	sent := now.Add(-30 * time.Millisecond)
	r := rtcp.ReceptionReport{LastSenderReport: ntpMiddle(sent), Delay: uint32(10 * 65536 / 1000)} // 10 ms held
	rtt, ok := rttFromReport(r, now)
	if !ok || rtt < 19*time.Millisecond || rtt > 21*time.Millisecond {
		t.Fatalf("rtt %v %v, want ≈20 ms", rtt, ok)
	}
	if _, ok := rttFromReport(rtcp.ReceptionReport{}, now); ok {
		t.Fatal("RTT without a sender report")
	}
	if _, ok := rttFromReport(rtcp.ReceptionReport{LastSenderReport: ntpMiddle(now.Add(time.Second))}, now); ok {
		t.Fatal("RTT from the future")
	}
}
