package agenttest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// AudioTap collects the audio frames published on one subject, such as a
// conversation's in.audio (what its agent hears) or out.audio (what its
// agent says), with the time each arrived. Its methods are safe to call
// while frames arrive.
type AudioTap struct {
	subject string
	mu      sync.Mutex
	frames  []agentbridge.AudioFrame
	at      []time.Time
	bad     error // the first message that was not an audio frame
}

// TapAudio subscribes nc to subject and collects its frames until the test
// ends. The subscription is in place when it returns (flushed), so a frame
// published afterwards is collected. A message that is not an audio frame
// fails the test.
func TapAudio(t testing.TB, nc *nats.Conn, subject string) *AudioTap {
	t.Helper()
	a := &AudioTap{subject: subject}
	sub, err := nc.Subscribe(subject, a.collect)
	if err != nil {
		t.Fatalf("tap %s: %v", subject, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("tap %s: %v", subject, err)
	}
	// Report a bad frame here, on the test's goroutine, not from NATS's
	// callback, which may run after the test has ended.
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		if err := a.err(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return a
}

// DialAudioTap connects to the NATS at url with opts (the credentials of
// someone allowed to subscribe to subject) and taps subject on that
// connection, which closes when the test ends.
func DialAudioTap(t testing.TB, url, subject string, opts ...nats.Option) *AudioTap {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("tap %s: connect %s: %v", subject, url, err)
	}
	t.Cleanup(nc.Close) // after the tap's own clean-up (last in, first out)
	return TapAudio(t, nc, subject)
}

func (a *AudioTap) collect(m *nats.Msg) {
	now := time.Now()
	f, err := agentbridge.ParseAudioFrame(m)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		if a.bad == nil {
			a.bad = fmt.Errorf("bad frame on %s: %w", a.subject, err)
		}
		return
	}
	a.frames = append(a.frames, f)
	a.at = append(a.at, now)
}

func (a *AudioTap) err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bad
}

// Len is how many frames have arrived.
func (a *AudioTap) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.frames)
}

// Frames is a copy of the frames so far, in arrival order.
func (a *AudioTap) Frames() []agentbridge.AudioFrame {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.frames)
}

// Arrivals is a copy of the frames so far and the time each arrived.
func (a *AudioTap) Arrivals() ([]agentbridge.AudioFrame, []time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.frames), slices.Clone(a.at)
}

// Wait waits until at least n frames have arrived, failing the test after
// timeout or at a message that is not a frame, and returns the frames.
func (a *AudioTap) Wait(t testing.TB, n int, timeout time.Duration) []agentbridge.AudioFrame {
	t.Helper()
	Poll(t, timeout, fmt.Sprintf("%d frames on %s", n, a.subject), func() bool { return a.err() != nil || a.Len() >= n })
	if err := a.err(); err != nil {
		t.Fatalf("%v", err)
	}
	return a.Frames()
}
