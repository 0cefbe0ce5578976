package signaling

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// refusalLog's limits on a clock of the test's: a burst per origin and
// widget, then one line per refusalEvery; a global cap over all of them;
// what is held back is counted on the next line; the map stays bounded.
func TestRefusalLogLimits(t *testing.T) {
	var buf bytes.Buffer
	l := newRefusalLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// linesOf counts the lines of n refusals at now, the i-th from origin(i).
	linesOf := func(n int, origin func(i int) string) int {
		lines := 0
		for i := range n {
			if l.refused(now, origin(i), "wdg_1", "/v1/widget/resolve") {
				lines++
			}
		}
		return lines
	}
	if logged := linesOf(100, func(int) string { return "https://a.example" }); logged != refusalBurst {
		t.Fatalf("%d lines for 100 refusals at once, want the burst %d", logged, refusalBurst)
	}
	// A minute later: one more, which counts the 97 held back.
	now = now.Add(refusalEvery)
	if !l.refused(now, "https://a.example", "wdg_1", "/v1/widget/resolve") || l.refused(now, "https://a.example", "wdg_1", "/v1/widget/resolve") {
		t.Fatal("not one line a minute later")
	}
	if !strings.Contains(buf.String(), `"suppressed":97`) {
		t.Fatalf("the held-back refusals are not counted:\n%s", buf.String())
	}
	// The same origin for another widget is another key.
	if !l.refused(now, "https://a.example", "wdg_2", "/v1/widget/resolve") {
		t.Fatal("another widget shares the origin's limit")
	}
	// Distinct origins: the global limit (refusalGlobalMax at once, then
	// refusalGlobalRate a second).
	now = now.Add(time.Hour)
	if logged := linesOf(5000, func(i int) string { return fmt.Sprintf("https://s%d.example", i) }); logged != refusalGlobalMax {
		t.Fatalf("%d lines for 5000 distinct origins at once, want %d", logged, refusalGlobalMax)
	}
	if n := len(l.keys); n > refusalKeys {
		t.Fatalf("%d limiters kept, bound %d", n, refusalKeys)
	}
	now = now.Add(time.Second)
	if logged := linesOf(100, func(i int) string { return fmt.Sprintf("https://t%d.example", i) }); logged != refusalGlobalRate {
		t.Fatalf("%d lines a second later, want %d", logged, refusalGlobalRate)
	}
	// A huge Origin header is cut before it reaches the log.
	now = now.Add(time.Hour)
	l.refused(now, "https://"+strings.Repeat("x", 10000)+".example", "wdg_1", "/v1/widget/resolve")
	if strings.Contains(buf.String(), strings.Repeat("x", 300)) {
		t.Fatal("a 10 kB origin reached the log whole")
	}
}

// TestRefusalLogOtherKinds: a refusal of another kind (a forged LiveKit
// webhook) is limited on its own key: a flood writes the burst, and the
// next line let through counts what was held back.
func TestRefusalLogOtherKinds(t *testing.T) {
	var buf bytes.Buffer
	l := newRefusalLog(slog.New(slog.NewTextHandler(&buf, nil)))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 10_000 {
		l.warn(now, "livekit webhook", "livekit webhook refused", "err", "bad signature")
	}
	if n := strings.Count(buf.String(), "livekit webhook refused"); n != refusalBurst {
		t.Fatalf("a flood of 10 000 wrote %d lines, want %d:\n%s", n, refusalBurst, buf.String())
	}
	buf.Reset()
	// Another kind is not held back by the flood, and its line counts
	// what the flood's limit held back.
	if !l.refused(now, "https://a.example", "wdg_1", "/v1/widget/resolve") {
		t.Fatal("a flood of webhooks held back a refused origin")
	}
	if got := buf.String(); !strings.Contains(got, fmt.Sprintf("suppressed=%d", 10_000-refusalBurst)) {
		t.Fatalf("the next line: %q, want it to count the %d held back", got, 10_000-refusalBurst)
	}
	buf.Reset()
	now = now.Add(refusalEvery)
	l.warn(now, "livekit webhook", "livekit webhook refused", "err", "bad signature")
	l.warn(now, "livekit webhook", "livekit webhook refused", "err", "bad signature")
	if got := buf.String(); strings.Count(got, "refused") != 1 {
		t.Fatalf("a minute later: %q, want one line", got)
	}
}
