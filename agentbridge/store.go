package agentbridge

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Storing an event that carries a Nats-Msg-Id can be repeated safely:
// JetStream keeps it once. PublishIdempotent tries such a store in attempts
// of StoreAttemptTimeout within StoreBudget (or the caller's deadline), so
// a PubAck lost with a stream leader that went away costs one attempt, not
// JetStream's whole 5 s timeout.
const (
	StoreAttemptTimeout = time.Second
	StoreBudget         = 5 * time.Second
	storeRetryPause     = 50 * time.Millisecond
)

// PublishIdempotent stores data on subject with the message id msgID
// (required), retrying an attempt that timed out or found no stream leader
// until ctx's deadline (at most StoreBudget). When an earlier attempt had
// in fact been stored, the PubAck is a duplicate of it. Retries are logged
// to log.
func PublishIdempotent(ctx context.Context, js jetstream.JetStream, log *slog.Logger, subject string, data []byte, msgID string, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	opts = append(opts, jetstream.WithMsgID(msgID))
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, StoreBudget)
		defer cancel()
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, StoreAttemptTimeout)
		ack, err := js.Publish(actx, subject, data, opts...)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("event stored after a retry", "subject", subject, "attempts", attempt, "took", time.Since(start))
			}
			return ack, nil
		}
		if ctx.Err() != nil || !retryableStore(err) {
			return nil, err
		}
		log.Warn("storing an event timed out; retrying", "subject", subject, "attempt", attempt, "err", err)
		t := time.NewTimer(storeRetryPause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
	}
}

// retryableStore reports whether a failed store may succeed when repeated
// (JetStream was electing a leader, or the PubAck was lost).
func retryableStore(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}
