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
// a PubAck lost with a stream leader that went away, a stalled node or a
// busy machine costs one short attempt, not JetStream's whole 5 s timeout,
// and does not fail the visitor's request.
const (
	// StoreAttemptTimeout bounds one attempt.
	StoreAttemptTimeout = time.Second
	// StoreBudget bounds a store and its retries when the caller's context
	// has no deadline.
	StoreBudget = 10 * time.Second
	// storeBackoffMin and storeBackoffMax bound the pause between attempts.
	storeBackoffMin = 50 * time.Millisecond
	storeBackoffMax = time.Second
)

// PublishIdempotent stores data on subject with the message id msgID
// (required), retrying an attempt that failed transiently (see
// RetryableStoreError) with backoff until ctx's deadline (at most
// StoreBudget). When an earlier attempt had in fact been stored, the
// PubAck is a duplicate of it. Retries are logged to log.
func PublishIdempotent(ctx context.Context, js jetstream.JetStream, log *slog.Logger, subject string, data []byte, msgID string, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return PublishIdempotentCounted(ctx, js, log, nil, subject, data, msgID, opts...)
}

// PublishIdempotentCounted is PublishIdempotent that also calls onRetry
// (when not nil; it must not block) before each retry, for counters.
func PublishIdempotentCounted(ctx context.Context, js jetstream.JetStream, log *slog.Logger, onRetry func(), subject string, data []byte, msgID string, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	opts = append(opts, jetstream.WithMsgID(msgID))
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, StoreBudget)
		defer cancel()
	}
	start := time.Now()
	backoff := storeBackoffMin
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, StoreAttemptTimeout)
		ack, err := js.Publish(actx, subject, data, opts...)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("event stored after a retry", "subject", subject, "attempts", attempt,
					"took", time.Since(start).Round(time.Millisecond))
			}
			return ack, nil
		}
		if ctx.Err() != nil || !RetryableStoreError(err) {
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

// JetStream error codes of a store that is out of space: insufficient
// resources, memory or storage limits exceeded.
const (
	jsErrInsufficientResources = 10023
	jsErrMemoryLimit           = 10028
	jsErrStorageLimit          = 10047
)

// StoreFullError reports whether JetStream refused a write for lack of
// space.
func StoreFullError(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jsErrInsufficientResources, jsErrMemoryLimit, jsErrStorageLimit:
			return true
		}
	}
	return false
}

// RetryableStoreError reports whether a failed store may succeed when
// repeated: a timeout (the caller's or one attempt's), no responder (the
// stream has no leader right now), a connection being re-established, or
// JetStream answering 503. A full store is not: waiting frees no space,
// and the visitor should hear it at once.
func RetryableStoreError(err error) bool {
	var api *jetstream.APIError
	switch {
	case StoreFullError(err):
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
