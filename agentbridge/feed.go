package agentbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// DefaultFeedHeartbeat is the idle heartbeat of a live log feed: the server
// sends one whenever the feed's consumer has had nothing to deliver for
// this long, and two missed heartbeats mark the consumer as lost.
//
// nats.go's ordered consumer uses 5 s, so a consumer lost with its NATS node
// (or a stream leader change) went unnoticed for 10 s, and its recreation
// then backed off from 1 s and could wait 10 s per attempt: replies stalled
// for 10–17 s after the conversation stream lost its leader.
const DefaultFeedHeartbeat = 500 * time.Millisecond

// Feed recovery: attempts to create the replacement consumer are bounded
// by feedCreateTimeout each and spaced from feedRetryMin, doubling up to
// feedRetryMax.
const (
	feedCreateTimeout = 2 * time.Second
	feedRetryMin      = 50 * time.Millisecond
	feedRetryMax      = time.Second
)

// errFeedGap marks a consumer that skipped a delivery.
var errFeedGap = errors.New("consumer delivery sequence gap")

// FeedOptions configure a Feed.
type FeedOptions struct {
	// StartSeq is the first log position to deliver; 0 with DeliverNew
	// false delivers from the start of the log.
	StartSeq uint64
	// DeliverNew delivers only events appended after the feed is opened.
	DeliverNew bool
	// Heartbeat is the consumer's idle heartbeat (default
	// DefaultFeedHeartbeat; 500 ms to 30 s). A lost consumer is noticed
	// after two missed heartbeats and replaced.
	Heartbeat time.Duration
	// InactiveThreshold lets the server delete a consumer nobody pulls
	// from, for example the one of a feed that was replaced (default 30 s).
	InactiveThreshold time.Duration
	// Logger receives a WARN line when the feed stalls and an INFO line
	// when it resumes (default slog.Default()).
	Logger *slog.Logger
	// OnStall and OnResume, when set, are called (on the goroutine calling
	// Next) when the feed stalls and when it resumes, for counters. They
	// must not block.
	OnStall, OnResume func()
}

// Feed reads a filtered part of a JetStream stream in order, like nats.go's
// ordered consumer, and recovers on its own, quickly, when its consumer is
// lost: its node went away, the stream changed leader, the connection moved
// to another server. Every stall is logged at WARN and every recovery at
// INFO with its duration. Next is called from one goroutine; Stop from any.
// It is the broker's: agents read the log through the broker (ReadRequest)
// and need no JetStream.
type Feed struct {
	js     jetstream.JetStream
	stream string
	filter string
	opts   FeedOptions
	log    *slog.Logger
	prefix string
	done   chan struct{}

	// Owned by the goroutine calling Next.
	serial    int
	next      uint64 // stream position to resume from; 0 before the first delivery
	delivered uint64 // consumer sequence of the last delivery
	pending   uint64
	stalledAt time.Time
	stallErr  error

	mu     sync.Mutex
	it     jetstream.MessagesContext // nil while the consumer is being replaced
	closed bool
}

// OpenFeed creates the feed's first consumer within ctx.
func OpenFeed(ctx context.Context, js jetstream.JetStream, stream, filter string, opts FeedOptions) (*Feed, error) {
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultFeedHeartbeat
	}
	// nats.go accepts idle heartbeats of 500 ms to 30 s.
	opts.Heartbeat = min(max(opts.Heartbeat, 500*time.Millisecond), 30*time.Second)
	if opts.InactiveThreshold <= 0 {
		opts.InactiveThreshold = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &Feed{js: js, stream: stream, filter: filter, opts: opts, log: opts.Logger,
		prefix: nuid.Next(), done: make(chan struct{})}
	if err := f.open(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// Pending is how many matching events the log held after the start
// position when the feed was opened.
func (f *Feed) Pending() uint64 { return f.pending }

// Heartbeat is the feed's idle heartbeat.
func (f *Feed) Heartbeat() time.Duration { return f.opts.Heartbeat }

// open creates a consumer that starts where the feed is and pulls from it.
func (f *Feed) open(ctx context.Context) error {
	f.serial++
	cfg := jetstream.ConsumerConfig{
		Name:              fmt.Sprintf("%s_%d", f.prefix, f.serial),
		FilterSubject:     f.filter,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: f.opts.InactiveThreshold,
	}
	switch {
	case f.next > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.next
	case f.opts.DeliverNew:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case f.opts.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.opts.StartSeq
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	cons, err := f.js.CreateOrUpdateConsumer(ctx, f.stream, cfg)
	if err != nil {
		return fmt.Errorf("agentbridge: feed consumer: %w", err)
	}
	if f.next == 0 {
		// Only the first consumer's count is the feed's.
		if info := cons.CachedInfo(); info != nil {
			f.pending = info.NumPending
		}
	}
	if f.next == 0 && f.opts.DeliverNew {
		// Resume after the last event there was, not "new" again.
		if info := cons.CachedInfo(); info != nil {
			f.next = info.Delivered.Stream + 1
		}
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(f.opts.Heartbeat),
		jetstream.PullExpiry(max(jetstream.DefaultExpires, 2*f.opts.Heartbeat)))
	if err != nil {
		return fmt.Errorf("agentbridge: feed pull: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		it.Stop()
		return jetstream.ErrMsgIteratorClosed
	}
	f.it, f.delivered = it, 0
	return nil
}

// Next returns the next event's message. It waits through the loss of the
// consumer, replacing it, until ctx is done or Stop is called
// (jetstream.ErrMsgIteratorClosed).
func (f *Feed) Next(ctx context.Context) (jetstream.Msg, error) {
	for {
		f.mu.Lock()
		it, closed := f.it, f.closed
		f.mu.Unlock()
		if closed {
			return nil, jetstream.ErrMsgIteratorClosed
		}
		if it == nil {
			if err := f.recover(ctx); err != nil {
				return nil, err
			}
			continue
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil || f.isClosed() {
				return nil, err
			}
			f.lost(it, err)
			continue
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("agentbridge: feed: %w", err)
		}
		if meta.Sequence.Consumer != f.delivered+1 {
			f.lost(it, fmt.Errorf("%w: got %d after %d", errFeedGap, meta.Sequence.Consumer, f.delivered))
			continue
		}
		f.delivered = meta.Sequence.Consumer
		f.next = meta.Sequence.Stream + 1
		return msg, nil
	}
}

// lost drops a consumer that stopped delivering.
func (f *Feed) lost(it jetstream.MessagesContext, err error) {
	it.Stop()
	f.mu.Lock()
	if f.it == it {
		f.it = nil
	}
	f.mu.Unlock()
	if f.stalledAt.IsZero() {
		f.stalledAt, f.stallErr = time.Now(), err
		f.log.Warn("live feed stalled; replacing its consumer", "stream", f.stream, "filter", f.filter,
			"err", err, "heartbeat", f.opts.Heartbeat, "resume_seq", f.next)
		if f.opts.OnStall != nil {
			f.opts.OnStall()
		}
	}
}

// recover replaces the consumer, retrying quickly with short attempts,
// until it succeeds, ctx is done or the feed is stopped.
func (f *Feed) recover(ctx context.Context) error {
	wait := feedRetryMin
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, feedCreateTimeout)
		err := f.open(actx)
		cancel()
		if err == nil {
			// Missed heartbeats are noticed 2 heartbeats after the last
			// sign of life; that part of the stall precedes stalledAt.
			stalled := time.Since(f.stalledAt)
			if errors.Is(f.stallErr, jetstream.ErrNoHeartbeat) {
				stalled += 2 * f.opts.Heartbeat
			}
			f.log.Info("live feed resumed", "stream", f.stream, "filter", f.filter,
				"stalled_for", stalled, "recovery", time.Since(f.stalledAt),
				"attempts", attempt, "cause", f.stallErr, "resume_seq", f.next)
			f.stalledAt, f.stallErr = time.Time{}, nil
			if f.opts.OnResume != nil {
				f.opts.OnResume()
			}
			return nil
		}
		switch {
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrStreamNotFound):
			return err
		}
		f.log.Debug("live feed: consumer not replaced yet", "stream", f.stream, "filter", f.filter,
			"attempt", attempt, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-f.done:
			t.Stop()
			return jetstream.ErrMsgIteratorClosed
		}
		wait = min(2*wait, feedRetryMax)
	}
}

func (f *Feed) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Stop ends the feed; a blocked Next returns jetstream.ErrMsgIteratorClosed.
// It is idempotent.
func (f *Feed) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	close(f.done)
	if f.it != nil {
		f.it.Stop()
	}
}

// DecodeLogMsg decodes an entry of a conversation log read from JetStream
// and stamps its log position (Seq) from the message metadata. It is the
// broker's: agents read the log through the broker (ReadRequest).
func DecodeLogMsg(msg jetstream.Msg) (Event, *jetstream.MsgMetadata, error) {
	var ev Event
	meta, err := msg.Metadata()
	if err != nil {
		return ev, nil, err
	}
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		return ev, meta, err
	}
	ev.Seq = meta.Sequence.Stream
	return ev, meta, nil
}
