package media

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

func TestAddrRedactor(t *testing.T) {
	var buf bytes.Buffer
	h := NewAddrRedactor(slog.NewTextHandler(&buf, nil))
	log := slog.New(h).With("peer", "candidate 198.51.100.23:5000")
	log.Warn("http: TLS handshake error from 203.0.113.7:51234: EOF",
		"cand", "udp6 host [2001:db8::1]:443 typ host",
		"mapped", "::ffff:192.0.2.1",
		"err", errors.New("dial 10.1.2.3:3478: refused"),
		slog.Group("g", "addr", "fe80::1%eth0"),
		"time", "12:30:45", "version", "1.2.3", "count", 7)
	out := buf.String()
	for _, ip := range []string{"203.0.113.7", "2001:db8::1", "198.51.100.23", "192.0.2.1", "10.1.2.3", "fe80::1"} {
		if strings.Contains(out, ip) {
			t.Errorf("%s is in the log:\n%s", ip, out)
		}
	}
	for _, kept := range []string{":51234", "12:30:45", "version=1.2.3", "count=7", "typ host"} {
		if !strings.Contains(out, kept) {
			t.Errorf("%q was lost:\n%s", kept, out)
		}
	}
	if a, b := h.Redact("from 203.0.113.7"), h.Redact("to 203.0.113.7"); a[5:] != b[3:] || !strings.HasPrefix(a[5:], "ip-") {
		t.Errorf("one address, two names: %q, %q", a, b)
	}
	if a, b := h.Redact("203.0.113.7"), NewAddrRedactor(slog.DiscardHandler).Redact("203.0.113.7"); a == b {
		t.Errorf("two processes name an address alike (%q): the key is not random", a)
	}
}

// TestPionLogsHideAddresses: a real call, logged at debug, where pion
// names every ICE candidate: no address reaches the log.
func TestPionLogsHideAddresses(t *testing.T) {
	var buf agenttest.LogBuffer // pion logs from its own goroutines
	e, err := NewEngine(testConfig(), slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	connect(t, e, clientOpts{}, FormatOpus())
	out := buf.String()
	if !strings.Contains(out, "pion=") || !strings.Contains(out, "ip-") {
		t.Fatalf("pion logged no candidate at debug level:\n%s", out)
	}
	if strings.Contains(out, "127.0.0.1") {
		t.Fatalf("a candidate address is in the log:\n%s", out)
	}
}

// TestPionRoutineWarningsAreDebug: a call that connects, plays and ends
// normally leaves no pion warning in the log; the routine ones (the
// closed connection's stream loop) are there at debug.
func TestPionRoutineWarningsAreDebug(t *testing.T) {
	var buf agenttest.LogBuffer
	e, err := NewEngine(testConfig(), slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	c, leg, rec := connect(t, e, clientOpts{}, FormatOpus())
	c.send(fakeOpus(10))
	for _, p := range fakeOpus(10) {
		leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: p})
	}
	agenttest.Poll(t, testWait, "media both ways", func() bool { return rec.numFrames() == 10 && c.received() == 10 })
	_ = leg.Close()
	c.close()
	agenttest.Poll(t, testWait, "the closed connection's stream loop ended", func() bool {
		return strings.Contains(buf.String(), "Failed to accept RTP")
	})
	for line := range strings.Lines(buf.String()) {
		if strings.Contains(line, "pion=") && !strings.Contains(line, "level=DEBUG") {
			t.Errorf("pion logged above debug in a normal call: %s", line)
		}
	}
	for _, msg := range []string{"Failed to accept RTP stream is already closed", "Failed to ping without candidate pairs. Connection is not possible yet."} {
		if !isRoutineWarning(msg) {
			t.Errorf("%q is not routine", msg)
		}
	}
	if isRoutineWarning("Failed to accept RTP srtp: invalid key") {
		t.Error("any failure to accept a stream is routine")
	}
}
