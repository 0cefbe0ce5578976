package agentbridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// feedStream makes a stream FEED on feed.> with n messages on feed.a.
func feedStream(t *testing.T, n int) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(connect(t, runJetStream(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FEED", Subjects: []string{"feed.>"}}); err != nil {
		t.Fatal(err)
	}
	feedPublish(t, js, 1, n)
	return js
}

func feedPublish(t *testing.T, js jetstream.JetStream, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := js.Publish(context.Background(), "feed.a", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		// Other subjects are filtered out.
		if _, err := js.Publish(context.Background(), "feed.b", []byte("other")); err != nil {
			t.Fatal(err)
		}
	}
}

// deleteConsumers removes every consumer of FEED, as losing the node that
// held them would.
func deleteConsumers(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, err := js.Stream(ctx, "FEED")
	if err != nil {
		t.Fatal(err)
	}
	names := s.ConsumerNames(ctx)
	n := 0
	for name := range names.Name() {
		if err := s.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no consumer to delete")
	}
}

func feedNext(t *testing.T, f *agentbridge.Feed) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	msg, err := f.Next(ctx)
	if err != nil {
		t.Fatalf("next: %v", err)
	}
	return string(msg.Data())
}

// TestFeedReplacesLostConsumer: when the feed's consumer disappears, the
// feed replaces it and goes on right after the last message it delivered:
// nothing lost, nothing twice. The stall and the recovery are logged.
func TestFeedReplacesLostConsumer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      agentbridge.FeedOptions
		published int      // before the feed opens
		before    []string // read before the consumer is lost
	}{
		{"from the start", agentbridge.FeedOptions{}, 3, []string{"1", "2", "3"}},
		{"from a position", agentbridge.FeedOptions{StartSeq: 3}, 3, []string{"2", "3"}}, // stream seq 3 is feed.a "2"
		{"new only, nothing delivered yet", agentbridge.FeedOptions{DeliverNew: true}, 3, nil},
		{"new only", agentbridge.FeedOptions{DeliverNew: true}, 3, []string{"4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := feedStream(t, tc.published)
			logs := &lockedBuffer{}
			tc.opts.Heartbeat = 500 * time.Millisecond
			tc.opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			var stalls, resumes atomic.Int64
			tc.opts.OnStall = func() { stalls.Add(1) }
			tc.opts.OnResume = func() { resumes.Add(1) }
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			f, err := agentbridge.OpenFeed(ctx, js, "FEED", "feed.a", tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Stop()
			next := tc.published + 1
			if tc.opts.DeliverNew && len(tc.before) > 0 {
				feedPublish(t, js, next, next)
				next++
			}
			for _, want := range tc.before {
				if got := feedNext(t, f); got != want {
					t.Fatalf("before the loss: got %s, want %s", got, want)
				}
			}
			deleteConsumers(t, js)
			feedPublish(t, js, next, next+1)
			for _, want := range []string{fmt.Sprint(next), fmt.Sprint(next + 1)} {
				if got := feedNext(t, f); got != want {
					t.Fatalf("after the loss: got %s, want %s\nlogs: %s", got, want, logs)
				}
			}
			if l := logs.String(); !strings.Contains(l, `"level":"WARN","msg":"live feed stalled`) ||
				!strings.Contains(l, `"level":"INFO","msg":"live feed resumed`) {
				t.Fatalf("stall and recovery not logged:\n%s", l)
			}
			if s, r := stalls.Load(), resumes.Load(); s != 1 || r != 1 {
				t.Fatalf("OnStall called %d times, OnResume %d; want 1 each", s, r)
			}
		})
	}
}

// TestFeedStop: Stop ends a Next that is waiting, and the feed stays
// stopped.
func TestFeedStop(t *testing.T) {
	js := feedStream(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	f, err := agentbridge.OpenFeed(ctx, js, "FEED", "feed.a", agentbridge.FeedOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if f.Pending() != 0 {
		t.Fatalf("pending %d on an empty stream", f.Pending())
	}
	errc := make(chan error, 1)
	go func() {
		_, err := f.Next(ctx)
		errc <- err
	}()
	f.Stop()
	if err := <-errc; !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		t.Fatalf("Next after Stop: %v", err)
	}
	f.Stop()
	if _, err := f.Next(ctx); !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		t.Fatalf("Next on a stopped feed: %v", err)
	}
}
