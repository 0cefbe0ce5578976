package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// logWriter is the one writer of the conversation log: every append, the
// broker's own events and the agents' events it validated, goes through
// it. Appends of one conversation are serialised within the broker and
// chained across brokers: each is published with the conversation's last
// seq L as JetStream's expected last subject sequence (over both of the
// conversation's log subjects) and carries prev_seq = L in its body. When
// another writer appended in between, JetStream refuses with "wrong last
// sequence: N" and the append is retried with L = N. So every stored event
// names its predecessor, and readers of live events (which travel on core
// NATS and may be lost or reordered) can tell a gap.
//
// After the store, the event (with seq and prev_seq) is published on core
// NATS on the conversation's agent namespace (Subjects.ConvEvent), where
// the agent's workers and every broker's hub receive it.
//
// Lock order: logWriter.mu is a leaf; convLog.mu is taken without
// logWriter.mu held and is held across the store (it serialises the
// conversation's appends).
type logWriter struct {
	b *Broker

	mu    sync.Mutex
	convs map[string]*convLog
}

// convLog is what the writer knows of one conversation.
type convLog struct {
	refs int // appends using it (guarded by logWriter.mu)

	mu   sync.Mutex
	last uint64 // the conversation's last seq, as last learned
	// seen mirrors last for readers that must not wait for an append in
	// progress (known).
	seen  atomic.Uint64
	agent string // the conversation's agent ("" until looked up)
}

// maxConvLogs bounds the conversations the writer remembers; idle ones
// beyond it are forgotten (their last seq is learned again from
// JetStream's refusal, their agent from the conversation record).
const maxConvLogs = 16384

// maxChainRetries bounds the "wrong last sequence" retries of one append
// (each means another writer appended to the conversation in between).
const maxChainRetries = 100

func newLogWriter(b *Broker) *logWriter {
	return &logWriter{b: b, convs: make(map[string]*convLog)}
}

func (w *logWriter) acquire(cid string) *convLog {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.convs[cid]
	if c == nil {
		if len(w.convs) >= maxConvLogs {
			for id, o := range w.convs {
				if o.refs == 0 {
					delete(w.convs, id)
				}
				if len(w.convs) < maxConvLogs*3/4 {
					break
				}
			}
		}
		c = &convLog{}
		w.convs[cid] = c
	}
	c.refs++
	return c
}

func (w *logWriter) release(c *convLog) {
	w.mu.Lock()
	c.refs--
	w.mu.Unlock()
}

// known is the last seq of cid this writer stored or learned (0: none).
func (w *logWriter) known(cid string) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c := w.convs[cid]; c != nil {
		return c.seen.Load()
	}
	return 0
}

// forget drops what the writer knows of cid (its log was purged).
func (w *logWriter) forget(cid string) {
	w.mu.Lock()
	if c := w.convs[cid]; c != nil && c.refs == 0 {
		delete(w.convs, cid)
	}
	w.mu.Unlock()
}

// stored is the result of an append: the event as the log holds it (with
// Seq and PrevSeq) and whether it was stored before (same msg id).
type stored struct {
	Event     agentbridge.Event
	Duplicate bool
}

// append stores ev on subject (one of cid's log subjects) with JetStream
// msg id msgID (required) and publishes the stored event on the agent's
// conversation subject. agent is the conversation's agent if the caller
// knows it ("" looks it up). ev.V, Seq, PrevSeq and TS are set here.
func (w *logWriter) append(ctx context.Context, subject string, ev *agentbridge.Event, msgID, agent string) (stored, error) {
	b := w.b
	cid := ev.ConversationID
	c := w.acquire(cid)
	defer w.release(c)
	c.mu.Lock()
	defer c.mu.Unlock()
	if agent != "" {
		c.agent = agent
	}
	ev.V = agentbridge.Version
	ev.Seq = 0
	ev.TS = time.Now().UTC()
	chain := b.subj.Events(cid)
	last := c.last
	var (
		ack *jetstream.PubAck
		err error
	)
	for attempt := 0; ; attempt++ {
		ev.PrevSeq = last
		data, merr := json.Marshal(ev)
		if merr != nil {
			return stored{}, fmt.Errorf("broker: encode event: %w", merr)
		}
		ack, err = publishIdempotent(ctx, b.js, b.log, b.obs().StoreRetry, subject, data, msgID,
			jetstream.WithExpectLastSequenceForSubject(last, chain))
		if err == nil {
			break
		}
		n, wrong := wrongLastSeq(err)
		if !wrong || attempt >= maxChainRetries || ctx.Err() != nil {
			break
		}
		if n < 0 {
			// The replicated variant (10164) does not say where the
			// conversation is: another append is in flight. Ask the log.
			got, gerr := w.lastSeq(ctx, cid)
			if gerr != nil {
				err = gerr
				break
			}
			n = int64(got)
			if uint64(n) == last {
				pause(ctx, time.Duration(attempt+1)*5*time.Millisecond)
			}
		}
		last = uint64(n)
	}
	b.health.wrote(err)
	if err != nil {
		if storeFullError(err) {
			return stored{}, fmt.Errorf("%w: append %s: %w", ErrStoreFull, ev.Type, err)
		}
		return stored{}, fmt.Errorf("%w: append %s: %w", ErrStore, ev.Type, err)
	}
	out := stored{Event: *ev, Duplicate: ack.Duplicate}
	out.Event.Seq = ack.Sequence
	if ack.Duplicate {
		// Stored before (a retried append): the log's copy is the event,
		// and last is unchanged (JetStream checked it, or will refuse the
		// next append if it was not).
		c.last = last
		c.seen.Store(last)
		orig, gerr := b.stream.GetMsg(ctx, ack.Sequence)
		if gerr != nil {
			return out, fmt.Errorf("%w: read duplicate: %w", ErrStore, gerr)
		}
		var first agentbridge.Event
		if uerr := json.Unmarshal(orig.Data, &first); uerr != nil {
			return out, fmt.Errorf("%w: decode duplicate: %w", ErrStore, uerr)
		}
		first.Seq = ack.Sequence
		out.Event = first
	} else {
		c.last = ack.Sequence
		c.seen.Store(ack.Sequence)
	}
	w.notifyLocked(ctx, c, &out.Event)
	return out, nil
}

// notifyLocked publishes a stored event on the conversation's agent
// subject (core NATS). Called with c.mu held, so one broker's
// notifications of a conversation go out in log order.
func (w *logWriter) notifyLocked(ctx context.Context, c *convLog, ev *agentbridge.Event) {
	b := w.b
	if c.agent == "" {
		// The record as stored, also while the conversation is being
		// deleted (its session_ended events still go out live).
		conv, err := load[Conversation](ctx, b.conversations, ev.ConversationID, "conv_", ErrUnknownConversation)
		if err != nil {
			b.log.Debug("stored event not published live: no conversation record",
				"conversation_id", ev.ConversationID, "seq", ev.Seq, "err", err)
			return
		}
		c.agent = conv.Agent
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if err := b.nc.Publish(b.subj.ConvEvent(c.agent, ev.ConversationID), data); err != nil {
		b.log.Debug("stored event not published live", "conversation_id", ev.ConversationID, "seq", ev.Seq, "err", err)
	}
}

// lastSeq asks the log for the seq of cid's last event (0: none), within
// one store attempt.
func (w *logWriter) lastSeq(ctx context.Context, cid string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, storeAttemptTimeout)
	defer cancel()
	seq, _, err := w.b.lastStored(ctx, cid)
	return seq, err
}

// JetStream error codes of a failed expected-last-sequence check.
const (
	jsErrWrongLastSeq         = 10071 // "wrong last sequence: N"
	jsErrWrongLastSeqReplicas = 10164 // "wrong last sequence" (replicated, N unknown)
)

// wrongLastSeq reports whether err is JetStream refusing an append because
// the conversation's last seq is not the one expected, and the actual one
// (-1 when the error does not say).
func wrongLastSeq(err error) (int64, bool) {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return 0, false
	}
	switch api.ErrorCode {
	case jsErrWrongLastSeq:
		_, num, ok := strings.Cut(api.Description, ":")
		if !ok {
			return -1, true
		}
		n, perr := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
		if perr != nil {
			return -1, true
		}
		return int64(n), true
	case jsErrWrongLastSeqReplicas:
		return -1, true
	}
	return 0, false
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
