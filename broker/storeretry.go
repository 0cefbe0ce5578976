package broker

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Appending to the log is idempotent: every publish carries a Nats-Msg-Id
// (the caller's, or one made for that call), so a publish that timed out
// or found no JetStream responder (a leader election, a stalled node, a
// busy machine) is tried again within the caller's budget instead of
// failing the visitor's request. Each attempt has a deadline of its own,
// so one stuck attempt cannot use up the whole budget.
const (
	// storeBudget bounds a publish and its retries when the caller's
	// context has no deadline.
	storeBudget = 10 * time.Second
	// storeAttemptTimeout bounds one attempt.
	storeAttemptTimeout = 2 * time.Second
	// storeBackoffMin and storeBackoffMax bound the wait between attempts.
	storeBackoffMin = 50 * time.Millisecond
	storeBackoffMax = time.Second
)

// transientStoreError reports whether a failed publish may succeed if
// tried again: a timeout (the request's or one attempt's), no responder
// (the stream has no leader right now), a connection being re-established,
// or JetStream answering 503. A full store is not transient: waiting a
// few seconds frees no space, and the visitor should hear it at once.
func transientStoreError(err error) bool {
	var api *jetstream.APIError
	switch {
	case isStoreFull(err):
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

// publishRetry publishes data on subject with Nats-Msg-Id msgID, retrying
// transient failures with backoff until ctx (or storeBudget) ends. A
// retry that JetStream reports as a duplicate of this call's own earlier
// attempt (the same bytes at that sequence) is not a duplicate to the
// caller.
func (b *Broker) publishRetry(ctx context.Context, subject string, data []byte, msgID string) (*jetstream.PubAck, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, storeBudget)
		defer cancel()
	}
	start := time.Now()
	backoff := storeBackoffMin
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, storeAttemptTimeout)
		ack, err := b.js.Publish(actx, subject, data, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			if attempt > 1 {
				if ack.Duplicate {
					ack.Duplicate = !b.storedAs(ctx, ack.Sequence, data)
				}
				b.log.Info("stored after retrying", "subject", subject, "attempts", attempt,
					"took", time.Since(start).Round(time.Millisecond))
			}
			return ack, nil
		}
		if !transientStoreError(err) || ctx.Err() != nil {
			return nil, err
		}
		b.log.Warn("store attempt failed; retrying", "subject", subject, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		backoff = min(backoff*2, storeBackoffMax)
	}
}

// storedAs reports whether the log holds exactly data at seq.
func (b *Broker) storedAs(ctx context.Context, seq uint64, data []byte) bool {
	m, err := b.stream.GetMsg(ctx, seq)
	return err == nil && bytes.Equal(m.Data, data)
}
