package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Rate limits across brokers: each broker refuses on its own token
// buckets first (no network), then counts the request in a fixed window
// shared by every broker in the <prefix>_ratelimits KV bucket, so N
// brokers behind a load balancer do not give N times the limit.

// rateWindowMax is the longest window counted across brokers (longer
// limits are enforced per broker only); the bucket forgets counters after
// twice that.
const rateWindowMax = time.Hour

// RateWindowMax is the longest window CountRate takes.
func RateWindowMax() time.Duration { return rateWindowMax }

// CountRate adds one request to the shared window of per that now falls
// in, for key (a limit kind, scope and id), and reports the count in the
// window including this request and when the window ends. Counting is a
// compare-and-set on one KV entry.
func (b *Broker) CountRate(ctx context.Context, key string, per time.Duration, now time.Time) (int, time.Time, error) {
	if per <= 0 || per > rateWindowMax {
		return 0, time.Time{}, fmt.Errorf("%w: rate window %s (shared windows are at most %s)", ErrValidation, per, rateWindowMax)
	}
	start := now.Truncate(per)
	k := key + "." + strconv.FormatInt(start.Unix(), 10)
	end := start.Add(per)
	for attempt := 0; attempt < 20; attempt++ {
		e, err := b.rateKV.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := b.rateKV.Create(ctx, k, binary.BigEndian.AppendUint64(nil, 1)); err == nil {
				return 1, end, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return 0, end, fmt.Errorf("%w: rate count: %w", ErrStore, err)
			}
			continue // someone else created it
		case err != nil:
			return 0, end, fmt.Errorf("%w: rate count: %w", ErrStore, err)
		}
		n := uint64(0)
		if v := e.Value(); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		n++
		if _, err := b.rateKV.Update(ctx, k, binary.BigEndian.AppendUint64(nil, n), e.Revision()); err == nil {
			return int(n), end, nil
		}
	}
	return 0, end, fmt.Errorf("%w: rate count: too much contention on %s", ErrStore, key)
}
