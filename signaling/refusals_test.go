package signaling

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestRefusalLogIsRateLimited: a flood of refusals writes a handful of
// lines, and the next line let through counts the ones left out.
func TestRefusalLogIsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l := newRefusalLog(slog.New(slog.NewTextHandler(&buf, nil)))
	now := time.Unix(1_800_000_000, 0)
	l.now = func() time.Time { return now }
	for range 10_000 {
		l.warn("livekit webhook refused", "err", "bad signature")
	}
	l.warn("another kind refused") // kinds are limited apart
	if n := strings.Count(buf.String(), "livekit webhook refused"); n != refusalBurst {
		t.Fatalf("a flood of 10 000 wrote %d lines, want %d:\n%s", n, refusalBurst, buf.String())
	}
	if !strings.Contains(buf.String(), "another kind refused") {
		t.Fatal("a second kind was suppressed by the first one's flood")
	}
	buf.Reset()
	now = now.Add(refusalEvery)
	l.warn("livekit webhook refused", "err", "bad signature")
	l.warn("livekit webhook refused", "err", "bad signature")
	if got := buf.String(); strings.Count(got, "refused") != 1 || !strings.Contains(got, "suppressed=9995") {
		t.Fatalf("after a second: %q, want one line with suppressed=9995", got)
	}
}
