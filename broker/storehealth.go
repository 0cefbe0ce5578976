package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// How the broker watches its store. The write probe is what makes /readyz
// follow whether the broker can store (a full disk, a read-only file
// system, a lost R1 node); the check finds data the store lost.
const (
	storeProbeInterval = 5 * time.Second
	storeProbeTimeout  = 2 * time.Second
	storeCheckInterval = 30 * time.Second
	// bucketHealth holds one key the write probe overwrites; it never
	// grows (History 1) and holds no visitor data.
	bucketHealth = "health"
	probeKey     = "probe"
	probeBytes   = 16 << 10
)

// StoreStatus is the store's health as the broker last saw it.
type StoreStatus struct {
	// Writable is false when the most recent write (the probe's or a
	// visitor's) failed.
	Writable bool `json:"writable"`
	// WriteError is that failure.
	WriteError string `json:"write_error,omitempty"`
	// ProbedAt is when the write probe last ran.
	ProbedAt time.Time `json:"probed_at,omitzero"`
	// CheckedAt is when the streams and buckets were last checked for lost
	// data.
	CheckedAt time.Time `json:"checked_at,omitzero"`
	// Lost lists the streams and buckets that lost data.
	Lost []StoreLoss `json:"lost,omitempty"`
	// ReadTimeouts counts log reads that timed out (ErrStoreTimeout)
	// since start.
	ReadTimeouts uint64 `json:"read_timeouts"`
}

// Degraded reports whether the store lost data or failed reads.
func (s StoreStatus) Degraded() bool { return len(s.Lost) > 0 || s.ReadTimeouts > 0 }

// StoreLoss is data one stream or bucket lost.
type StoreLoss struct {
	// Store is the JetStream stream: the conversation log ("PARLEY_CONV"),
	// a KV bucket ("KV_parley_sessions") or an object store
	// ("OBJ_parley_uploads").
	Store string `json:"store"`
	// Msgs and Bytes are what was lost (Bytes when known).
	Msgs  uint64 `json:"lost_messages"`
	Bytes uint64 `json:"lost_bytes"`
	// Reason says how the loss was found.
	Reason string `json:"reason"`
	// DetectedAt is when it was first found.
	DetectedAt time.Time `json:"detected_at"`
}

// storeHealth is the broker's view of its store. Its methods are safe for
// concurrent use; wrote is on the publish path and only takes a mutex.
type storeHealth struct {
	mu        sync.Mutex
	lastErr   error // of the most recent write, probe or real
	probedAt  time.Time
	checkedAt time.Time
	lost      map[string]StoreLoss
	// unreadable: events of a conversation the log claims but did not
	// deliver, by conversation (at most maxUnreadable entries).
	unreadable map[string]uint64
	timeouts   atomic.Uint64
}

const maxUnreadable = 10_000

func newStoreHealth() *storeHealth {
	return &storeHealth{lost: make(map[string]StoreLoss), unreadable: make(map[string]uint64)}
}

// wrote records the outcome of a real write. A caller giving up is not the
// store's fault.
func (h *storeHealth) wrote(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	h.mu.Lock()
	h.lastErr = err
	h.mu.Unlock()
}

func (h *storeHealth) probed(err error) {
	h.mu.Lock()
	h.lastErr = err
	h.probedAt = time.Now()
	h.mu.Unlock()
}

// readTimedOut records a log read of conversation cid that stalled with
// left events claimed but not delivered.
func (h *storeHealth) readTimedOut(cid string, left uint64) {
	h.timeouts.Add(1)
	h.mu.Lock()
	if _, ok := h.unreadable[cid]; ok || len(h.unreadable) < maxUnreadable {
		h.unreadable[cid] = max(left, 1)
	}
	h.mu.Unlock()
}

// writeErr is the last write's failure, nil if it succeeded.
func (h *storeHealth) writeErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastErr
}

func (h *storeHealth) status(logStream string) StoreStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := StoreStatus{Writable: h.lastErr == nil, ProbedAt: h.probedAt, CheckedAt: h.checkedAt,
		ReadTimeouts: h.timeouts.Load()}
	if h.lastErr != nil {
		s.WriteError = h.lastErr.Error()
	}
	var unreadable uint64
	for _, n := range h.unreadable {
		unreadable += n
	}
	for _, l := range h.lost {
		if l.Store == logStream && unreadable > 0 {
			l.Msgs += unreadable
			l.Reason += fmt.Sprintf("; %d events of %d conversations could not be read", unreadable, len(h.unreadable))
		}
		s.Lost = append(s.Lost, l)
	}
	if _, ok := h.lost[logStream]; !ok && unreadable > 0 {
		s.Lost = append(s.Lost, StoreLoss{Store: logStream, Msgs: unreadable, DetectedAt: h.checkedAt,
			Reason: fmt.Sprintf("%d events of %d conversations could not be read", unreadable, len(h.unreadable))})
	}
	sortLosses(s.Lost)
	return s
}

// StoreStatus returns the store's health: whether it can write and what
// data it lost.
func (b *Broker) StoreStatus() StoreStatus { return b.health.status(b.subj.StreamName()) }

// probeStore writes the probe key with a short timeout and records the
// outcome.
func (b *Broker) probeStore() error {
	ctx, cancel := context.WithTimeout(b.ctx, storeProbeTimeout)
	defer cancel()
	// The value spans new pages of the block file, so a file system with no
	// free pages refuses it (a tiny record could still fit in the last
	// page); History 1 keeps one copy.
	val := make([]byte, probeBytes)
	copy(val, time.Now().UTC().Format(time.RFC3339Nano))
	_, err := b.healthKV.Put(ctx, probeKey, val)
	if err == nil {
		// The conversation stream may live on other nodes than the probe
		// bucket (R1 on a cluster): without a leader it cannot store.
		if _, ierr := b.stream.Info(ctx); ierr != nil {
			err = fmt.Errorf("conversation stream %s: %w", b.subj.StreamName(), ierr)
		}
	}
	if b.ctx.Err() != nil {
		return nil // closing
	}
	if err != nil {
		if storeFullError(err) {
			err = fmt.Errorf("%w: write probe: %w", ErrStoreFull, err)
		} else {
			err = fmt.Errorf("write probe: %w", err)
		}
	}
	prev := b.health.writeErr()
	b.health.probed(err)
	switch {
	case err != nil && prev == nil:
		b.log.Error("store cannot write: readiness fails until a write succeeds", "err", err)
	case err == nil && prev != nil:
		b.log.Info("store writes again: ready", "previous_err", prev)
	}
	return err
}

// storeLoop probes the store every storeProbeInterval and checks it for
// lost data every storeCheckInterval, until Close.
func (b *Broker) storeLoop() {
	probe := time.NewTicker(storeProbeInterval)
	defer probe.Stop()
	check := time.NewTicker(storeCheckInterval)
	defer check.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-probe.C:
			_ = b.probeStore()
		case <-check.C:
			ctx, cancel := context.WithTimeout(b.ctx, storeCheckInterval/2)
			b.checkStore(ctx, false)
			cancel()
		}
	}
}

// checkStore checks every stream and bucket of the deployment for lost
// data, records and logs (at ERROR) what is new, and with an embedded
// server keeps the marks it compares against next time. clean is set by
// Close: nothing can change the store until the next start.
func (b *Broker) checkStore(ctx context.Context, clean bool) {
	reports, err := inspectStreams(ctx, b.js, b.subj, false)
	if err != nil {
		if b.ctx.Err() == nil || clean {
			b.log.Warn("store check failed", "err", err)
		}
		return
	}
	embedded := b.ns != nil
	if embedded {
		applyMarks(reports, loadMarks(b.cfg.DataDir), b.subj.StreamName())
	}
	now := time.Now().UTC()
	b.health.mu.Lock()
	b.health.checkedAt = now
	var fresh []StreamReport
	for _, r := range reports {
		if r.LostMsgs == 0 && r.LostBytes == 0 {
			continue
		}
		prev, had := b.health.lost[r.Name]
		if had && prev.Msgs >= r.LostMsgs {
			continue
		}
		l := StoreLoss{Store: r.Name, Msgs: r.LostMsgs, Bytes: r.LostBytes, Reason: strings.Join(r.Problems, "; "), DetectedAt: now}
		if had {
			l.DetectedAt = prev.DetectedAt
		}
		if r.LostSince.After(time.Time{}) && !had {
			l.DetectedAt = r.LostSince
		}
		b.health.lost[r.Name] = l
		fresh = append(fresh, r)
	}
	b.health.mu.Unlock()
	for _, r := range fresh {
		b.log.Error("store lost data: acknowledged messages are gone; run `parley check` and restore from backup if you have one",
			"store", r.Name, "lost_messages", r.LostMsgs, "lost_bytes", r.LostBytes, "messages", r.Msgs,
			"first_seq", r.FirstSeq, "last_seq", r.LastSeq, "deleted", r.Deleted, "problems", r.Problems)
	}
	if embedded {
		if err := saveMarks(b.cfg.DataDir, reports, clean); err != nil {
			b.log.Warn("store marks not saved", "err", err)
		}
	}
}

// missInLostStore logs at ERROR a record not found in a bucket known to
// have lost data: the visitor's "not found" may be that loss.
func (b *Broker) missInLostStore(bucket, idKey, id string) {
	store := "KV_" + b.subj.Bucket(bucket)
	b.health.mu.Lock()
	l, lost := b.health.lost[store]
	b.health.mu.Unlock()
	if lost {
		b.log.Error("record not found in a bucket that lost data: it may be one of the lost records",
			idKey, id, "store", store, "lost_messages", l.Msgs)
	}
}
