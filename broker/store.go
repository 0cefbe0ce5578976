package broker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Storing an event that carries a Nats-Msg-Id can be repeated safely:
// JetStream keeps it once. publishIdempotent tries such a store in attempts
// of storeAttemptTimeout within storeBudget (or the caller's deadline), so
// a PubAck lost with a stream leader that went away, a stalled node or a
// busy machine costs one short attempt, not JetStream's whole 5 s timeout,
// and does not fail the visitor's request.
const (
	// storeAttemptTimeout bounds one attempt.
	storeAttemptTimeout = time.Second
	// storeBudget bounds a store and its retries when the caller's context
	// has no deadline.
	storeBudget = 10 * time.Second
	// storeBackoffMin and storeBackoffMax bound the pause between attempts.
	storeBackoffMin = 50 * time.Millisecond
	storeBackoffMax = time.Second
)

// publishIdempotent stores data on subject with the message id msgID
// (required), retrying an attempt that failed transiently (see
// retryableStoreError) with backoff until ctx's deadline (at most
// storeBudget), and calls onRetry (when not nil; it must not block)
// before each retry, for counters. When an earlier attempt had in fact
// been stored, the PubAck is a duplicate of it. Retries are logged to log.
func publishIdempotent(ctx context.Context, js jetstream.JetStream, log *slog.Logger, onRetry func(), subject string, data []byte, msgID string, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	opts = append(opts, jetstream.WithMsgID(msgID))
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, storeBudget)
		defer cancel()
	}
	start := time.Now()
	backoff := storeBackoffMin
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, storeAttemptTimeout)
		ack, err := js.Publish(actx, subject, data, opts...)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("event stored after a retry", "subject", subject, "attempts", attempt,
					"took", time.Since(start).Round(time.Millisecond))
			}
			return ack, nil
		}
		if ctx.Err() != nil || !retryableStoreError(err) {
			return nil, err
		}
		log.Warn("storing an event failed; retrying", "subject", subject, "attempt", attempt, "err", err)
		if onRetry != nil {
			onRetry()
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
		backoff = min(backoff*2, storeBackoffMax)
	}
}

// storeFullError reports whether JetStream refused a write for lack of
// space: insufficient resources, memory or storage limits exceeded.
func storeFullError(err error) bool {
	switch apiCode(err) {
	case jsErrInsufficientResources, jsErrMemoryLimit, jsErrStorageLimit:
		return true
	}
	return false
}

// retryableStoreError reports whether a failed store may succeed when
// repeated: a timeout (the caller's or one attempt's), no responder (the
// stream has no leader right now), a connection being re-established, or
// JetStream answering 503. A full store is not: waiting frees no space,
// and the visitor should hear it at once.
func retryableStoreError(err error) bool {
	var api *jetstream.APIError
	switch {
	case storeFullError(err):
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	case errors.As(err, &api):
		return api.Code == 503
	}
	return false
}
