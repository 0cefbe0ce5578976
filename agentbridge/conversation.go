package agentbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Conversation is one conversation a worker owns, as its handler sees it:
// the dispatch, the replayed history, a stream of live events and audio, and
// methods to answer.
type Conversation struct {
	w       *Worker
	req     DispatchRequest
	log     *slog.Logger
	epoch   atomic.Uint64
	history []Event
	pending []Event // unanswered visitor messages found while replaying

	events chan Event
	audio  chan AudioFrame

	audioDropped atomic.Uint64
	// headSeq is the highest HeadSeq of the dispatches of this conversation
	// the worker accepted: a release (session_ended idle) written before
	// it is out of date.
	headSeq atomic.Uint64
	// released is set once event delivery has ended; a new dispatch then
	// starts a fresh Conversation. It is set under the worker's mu, where
	// admit reads it and raises headSeq: a dispatch either finds the
	// conversation released or moves the release decision past it.
	released atomic.Bool
	// dispatchedAt is when a dispatch last admitted the conversation
	// (unix ns): the broker has something for it, so it is not idle.
	dispatchedAt atomic.Int64
	// feedCtx bounds event delivery; stop cancels it.
	feedCtx context.Context
	stop    context.CancelFunc

	// sendMu orders the conversation's append requests on the wire.
	sendMu        sync.Mutex
	appendSubject string // AppendTo the dispatching broker, or Append
	// appends counts pipelined appends still waiting for their reply.
	appends sync.WaitGroup
	// lost is the broker's refusal that told this worker it no longer
	// holds the conversation (STALE_EPOCH, NOT_HOLDER).
	lost     atomic.Pointer[ProtocolError]
	loseOnce sync.Once // logs the loss before lost is set

	// replies are the replies in progress (interrupt stops them).
	replies openReplies
}

// newConversation builds a conversation whose event feed lives within ctx.
func newConversation(ctx context.Context, w *Worker, req DispatchRequest) *Conversation {
	c := &Conversation{
		w:      w,
		req:    req,
		log:    w.log.With("conversation_id", req.ConversationID),
		events: make(chan Event, 64),
		audio:  make(chan AudioFrame, 50),
	}
	c.feedCtx, c.stop = context.WithCancel(ctx)
	c.appendSubject = w.subj.Append(w.opts.Agent)
	if ValidToken(req.Broker) {
		c.appendSubject = w.subj.AppendTo(w.opts.Agent, req.Broker)
	}
	c.epoch.Store(req.Epoch)
	c.headSeq.Store(req.HeadSeq)
	c.dispatchedAt.Store(time.Now().UnixNano())
	return c
}

// releaseIf releases the conversation if it is still live and cond holds,
// deciding under the worker's lock so that no dispatch is admitted for a
// conversation in the middle of letting it go. It reports whether the
// conversation is released.
func (c *Conversation) releaseIf(cond func() bool) bool {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if c.released.Load() {
		return true
	}
	if !cond() {
		return false
	}
	c.released.Store(true)
	return true
}

// ID returns the conversation id.
func (c *Conversation) ID() string { return c.req.ConversationID }

// Dispatch returns the dispatch request the worker accepted.
func (c *Conversation) Dispatch() DispatchRequest { return c.req }

// Epoch returns the dispatch epoch this worker owns the conversation under.
func (c *Conversation) Epoch() uint64 { return c.epoch.Load() }

// History returns the conversation's log up to the dispatch, replayed from
// ResumeFromSeq: the full context. Visitor messages that were not answered
// yet are not part of it; they arrive first on Events.
func (c *Conversation) History() []Event { return c.history }

// Events delivers live broker events (user_message, mode_changed, ...) in log
// order. It is closed when the conversation is released: the last visitor
// session ended, it was idle too long, or the worker is draining.
func (c *Conversation) Events() <-chan Event { return c.events }

// Audio delivers the visitor's audio frames. Frames are dropped, and
// counted, when the handler does not keep up.
func (c *Conversation) Audio() <-chan AudioFrame { return c.audio }

// AudioDropped is the number of incoming audio frames dropped so far (the
// worker's total is in Worker.Stats).
func (c *Conversation) AudioDropped() uint64 { return c.audioDropped.Load() }

// Logger returns a logger that carries the conversation id.
func (c *Conversation) Logger() *slog.Logger { return c.log }

// Publish sends an agent event to the broker, which checks and stores it
// in the conversation log, and returns its log position once stored. The
// envelope fields are filled in. A refusal is a *ProtocolError (use
// errors.As); STALE_EPOCH and NOT_HOLDER mean another worker holds the
// conversation now: it is released (Events closes) and later appends fail
// at once with the same error.
func (c *Conversation) Publish(ctx context.Context, ev Event) (uint64, error) {
	if pe := c.lost.Load(); pe != nil {
		return 0, fmt.Errorf("agentbridge: append %s: %w", ev.Type, pe)
	}
	a, p, err := c.sendAppend(ev, appendKey(&ev))
	return c.awaitAppend(ctx, a, p, err)
}

// publishAsync sends an event without waiting for its reply: the next
// request leaves at once behind it. Failures are logged.
func (c *Conversation) publishAsync(ev Event) {
	if c.lost.Load() != nil {
		return
	}
	a, p, err := c.sendAppend(ev, appendKey(&ev))
	c.appends.Add(1)
	go func() {
		defer c.appends.Done()
		if _, err := c.awaitAppend(c.w.ctx, a, p, err); err != nil && c.w.ctx.Err() == nil {
			c.log.Warn("async append failed", "type", ev.Type, "err", err)
		}
	}()
}

// appendKey is an append's idempotency key: the reply's message id and the
// chunk's index for text_delta, the message id and "done" for text_done,
// else a fresh id (so that a repeated append is stored once too).
func appendKey(ev *Event) string {
	switch {
	case ev.Type == EventTextDelta && ev.MessageID != "":
		return ev.MessageID + "/" + strconv.Itoa(ev.Index)
	case ev.Type == EventTextDone && ev.MessageID != "":
		return ev.MessageID + "/done"
	}
	return ev.Type + "/" + nuid.Next()
}

// SetState publishes an agent_state event (shown to the visitor as typing,
// speaking, listening, ...).
func (c *Conversation) SetState(ctx context.Context, state, replyTo string) error {
	_, err := c.Publish(ctx, Event{Type: EventAgentState, State: state, ReplyTo: replyTo})
	return err
}

// SendText answers replyTo with one complete text.
func (c *Conversation) SendText(ctx context.Context, replyTo, text string) error {
	r := c.NewReply(replyTo)
	if err := r.Write(ctx, text); err != nil {
		return err
	}
	return r.Done(ctx)
}

// SendAction publishes an action event (navigate, capture_request, handoff,
// end) with data marshalled as a JSON object (nil: none).
func (c *Conversation) SendAction(ctx context.Context, action string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("agentbridge: action data: %w", err)
	}
	if string(raw) == "null" {
		raw = nil // no data: an empty object
	}
	_, err = c.Publish(ctx, Event{Type: EventAction, Action: action, Data: raw})
	return err
}

// SendTranscript publishes what the agent recognised of the visitor's
// speech. A final transcript is a visitor turn of the conversation; its
// message id (returned) is what a reply to it refers to.
func (c *Conversation) SendTranscript(ctx context.Context, text string, final bool) (string, error) {
	id := "msg_" + nuid.Next()
	_, err := c.Publish(ctx, Event{Type: EventTranscript, MessageID: id, Text: text, Final: final, Via: ModeVoice})
	return id, err
}

// ClearAudio asks the broker to drop every agent audio frame still queued
// for the visitor (barge-in).
func (c *Conversation) ClearAudio(ctx context.Context) error {
	_, err := c.Publish(ctx, Event{Type: EventClearAudio})
	return err
}

// ReadUpload reads a file the visitor attached to a message of this
// conversation (an Attachment's UploadID), from the broker.
func (c *Conversation) ReadUpload(ctx context.Context, uploadID string) (File, error) {
	return ReadUpload(ctx, c.w.nc, c.w.subj, c.w.opts.Agent, c.ID(), uploadID)
}

// SendAudio sends one audio frame to the visitor. Audio is not durable.
func (c *Conversation) SendAudio(f AudioFrame) error {
	if f.Codec == "" {
		f.Codec = CodecOpus
	}
	m := f.Msg(c.w.subj.OutAudio(c.w.opts.Agent, c.ID()))
	m.Header.Set(HeaderWorker, c.w.id)
	return c.w.nc.PublishMsg(m)
}

// Reply streams one agent message as text_delta events closed by text_done.
// It is not safe for concurrent use.
type Reply struct {
	c       *Conversation
	id      string
	replyTo string
	index   int
	text    strings.Builder
	done    bool

	// interrupted is closed when the broker interrupts the reply (from
	// the conversation's feed goroutine, hence the Once).
	interrupted chan struct{}
	cutOnce     sync.Once
}

// NewReply starts a reply to the visitor message replyTo. Until it is done
// it can be interrupted (Interrupted).
func (c *Conversation) NewReply(replyTo string) *Reply {
	r := &Reply{c: c, id: "msg_" + nuid.Next(), replyTo: replyTo, interrupted: make(chan struct{})}
	c.replies.add(r)
	return r
}

// ID returns the reply's message id.
func (r *Reply) ID() string { return r.id }

// Write streams delta as the next chunk of the reply. It fails with
// ErrInterrupted once the broker interrupted the reply (nothing more is
// sent: the visitor spoke over it).
func (r *Reply) Write(ctx context.Context, delta string) error {
	if r.done {
		return ErrReplyDone
	}
	if r.isInterrupted() {
		return ErrInterrupted
	}
	// The broker refuses deltas over its limit (agents.max_delta_bytes,
	// default DefaultMaxDeltaBytes): a longer one goes as several, cut at
	// character boundaries.
	for delta != "" {
		chunk := delta
		if len(chunk) > DefaultMaxDeltaBytes {
			cut := DefaultMaxDeltaBytes
			for cut > 0 && !utf8.RuneStart(chunk[cut]) {
				cut--
			}
			chunk = chunk[:cut]
		}
		_, err := r.c.Publish(ctx, Event{Type: EventTextDelta, MessageID: r.id, ReplyTo: r.replyTo, Index: r.index, Text: chunk})
		if err != nil {
			return err
		}
		r.index++
		r.text.WriteString(chunk)
		delta = delta[len(chunk):]
	}
	return nil
}

// Done completes the reply with its full text (as interrupted if the
// broker interrupted it).
func (r *Reply) Done(ctx context.Context) error {
	if r.isInterrupted() {
		return r.finishInterrupted(ctx)
	}
	return r.finish(ctx, false, "")
}

// Interrupt completes the reply as cut short, keeping what was said.
func (r *Reply) Interrupt(ctx context.Context, reason string) error {
	return r.finish(ctx, true, reason)
}

func (r *Reply) finish(ctx context.Context, interrupted bool, reason string) error {
	if r.done {
		return ErrReplyDone
	}
	_, err := r.c.Publish(ctx, Event{Type: EventTextDone, MessageID: r.id, ReplyTo: r.replyTo,
		Text: r.text.String(), Interrupted: interrupted, Reason: reason})
	if err == nil {
		r.done = true
		r.c.replies.remove(r.id)
	}
	return err
}

// onAudio is the core subscription callback for visitor audio.
func (c *Conversation) onAudio(m *nats.Msg) {
	f, err := ParseAudioFrame(m)
	if err != nil {
		c.log.Debug("dropping bad audio frame", "err", err)
		c.w.audioInvalid.Add(1)
		return
	}
	select {
	case c.audio <- f:
	default:
		c.audioDropped.Add(1)
		c.w.audioDropped.Add(1)
	}
}

// replay reads the log from ResumeFromSeq to its end: events up to HeadSeq
// become history and pending, later ones are returned to be delivered
// first, with the seq of the last event read.
func (c *Conversation) replay(ctx context.Context) (live []Event, last uint64, err error) {
	all, err := c.readAll(ctx, c.req.ResumeFromSeq)
	if err != nil {
		return nil, 0, fmt.Errorf("agentbridge: replay: %w", err)
	}
	// A read may end short of what the dispatching broker stored (served
	// by a NATS replica slightly behind): read on until it is reached.
	for wait := c.w.opts.GapGrace; len(all) == 0 && c.req.LastSeq >= max(c.req.ResumeFromSeq, 1) ||
		len(all) > 0 && all[len(all)-1].Seq < c.req.LastSeq; wait = min(2*wait, maxGapWait) {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, 0, fmt.Errorf("agentbridge: replay: log read ends before seq %d: %w", c.req.LastSeq, ctx.Err())
		case <-t.C:
		}
		from := c.req.ResumeFromSeq
		if len(all) > 0 {
			from = all[len(all)-1].Seq + 1
		}
		more, err := c.readAll(ctx, from)
		if err != nil {
			return nil, 0, fmt.Errorf("agentbridge: replay: %w", err)
		}
		all = append(all, more...)
	}
	var hist []Event
	for _, ev := range all {
		last = max(last, ev.Seq)
		switch {
		case ev.V != Version:
			c.w.skipped.Add(1)
			c.log.Debug("skipping an event of another protocol version", "v", ev.V, "seq", ev.Seq)
		case c.req.HeadSeq > 0 && ev.Seq > c.req.HeadSeq:
			live = append(live, ev)
		default:
			hist = append(hist, ev)
		}
	}
	c.history, c.pending = splitPending(hist)
	return live, last, nil
}

// splitPending separates visitor messages that have no answer yet. Agent
// events fenced off by a later assignment, and the assignments themselves,
// are left out.
func splitPending(all []Event) (history, pending []Event) {
	var fence Fence
	kept := all[:0:0]
	for i := range all {
		if fence.Admit(&all[i]) && all[i].Type != EventAgentAssigned {
			kept = append(kept, all[i])
		}
	}
	all = kept
	answered := make(map[string]bool)
	for i := range all {
		ev := &all[i]
		if ev.Type == EventTextDone && ev.ReplyTo != "" && !(ev.Interrupted && ev.Reason == ReasonWorkerLost) {
			answered[ev.ReplyTo] = true
		}
	}
	for _, ev := range all {
		if ev.Type == EventUserMessage && !answered[ev.MessageID] {
			pending = append(pending, ev)
			continue
		}
		history = append(history, ev)
	}
	return history, pending
}

// ReasonWorkerLost marks a reply interrupted because its worker died; the
// visitor message it answered is handed to the next worker again.
const ReasonWorkerLost = "worker_lost"

// maxGapWait bounds the pause between refills of a gap the log could not
// fill yet.
const maxGapWait = time.Second

// feed delivers pending, replayed-live and live inbound events in log order
// until stopped, idle or released, then closes Events. Live events come
// from sub; last is the seq of the last event the replay read.
func (c *Conversation) feed(sub *nats.Subscription, live []Event, last uint64) {
	defer close(c.events)
	defer c.releaseIf(func() bool { return true })
	ctx := c.feedCtx
	w := c.w
	deliver := func(ev Event) bool {
		if ev.V != Version {
			w.skipped.Add(1)
			c.log.Debug("skipping an event of another protocol version", "v", ev.V, "seq", ev.Seq)
			return true
		}
		if ev.Type == EventAgentAssigned {
			// Another worker took the conversation under a newer epoch:
			// this one has lost it (it was thought dead) and stops.
			if ev.WorkerID != w.id && ev.Epoch > c.Epoch() {
				c.log.Warn("conversation taken over by another worker; releasing it",
					"new_worker", ev.WorkerID, "epoch", ev.Epoch, "own_epoch", c.Epoch())
				return false
			}
			return true
		}
		if !ev.IsInbound() {
			return true // agent events, ours included
		}
		if ev.Type == EventInterrupt {
			// Before queuing: the handler may be busy writing the reply.
			c.onInterrupt(ev)
		}
		if ev.Type == EventUserMessage {
			// Tell the visitor the message reached an agent (typing).
			c.publishAsync(Event{Type: EventAgentState, State: StateThinking, ReplyTo: ev.MessageID})
		}
		select {
		case c.events <- ev:
		case <-ctx.Done():
			return false
		}
		// The last visitor left: release, unless the conversation was
		// dispatched to us again after that (a new session).
		if ev.Type == EventSessionEnded && ev.Idle &&
			c.releaseIf(func() bool { return ev.Seq > c.headSeq.Load() }) {
			c.log.Debug("conversation released: the last session ended", "seq", ev.Seq)
			return false
		}
		return true
	}
	deliverAll := func(evs []Event) bool {
		for _, ev := range evs {
			if !deliver(ev) {
				return false
			}
		}
		return true
	}
	if !deliverAll(c.pending) || !deliverAll(live) {
		return
	}

	// With nothing read from ResumeFromSeq on, the conversation's last
	// event is unknown but before ResumeFromSeq: the first live event may
	// follow any event there, and a gap is read from ResumeFromSeq.
	loose := last == 0 && c.req.ResumeFromSeq > 0
	if loose {
		last = c.req.ResumeFromSeq - 1
	}
	seq := NewSequencer(last)
	grace := w.opts.GapGrace
	gapWait := grace
	var gapSince time.Time // when events were first held behind a gap
	refill := false        // read from seq.Last()+1 at once
	var dropped int
	lastActivity := time.Now()
	for {
		wait := time.Duration(-1)
		if idle := w.opts.IdleTimeout; idle > 0 {
			wait = max(idle-time.Since(lastActivity), 0)
		}
		if _, gap := seq.Gap(); gap || refill {
			g := max(gapWait-time.Since(gapSince), 0)
			if wait < 0 || g < wait {
				wait = g
			}
		}
		var msg *nats.Msg
		var err error
		if wait >= 0 {
			wctx, cancel := context.WithTimeout(ctx, wait)
			msg, err = sub.NextMsgWithContext(wctx)
			cancel()
		} else {
			msg, err = sub.NextMsgWithContext(ctx)
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return
		case errors.Is(err, nats.ErrSlowConsumer):
			// NATS dropped events while the handler was busy (said once,
			// then delivery goes on): read them back from the log now.
			if n, derr := sub.Dropped(); derr == nil {
				dropped = n
			}
			refill, gapSince = true, time.Now().Add(-gapWait)
			c.log.Debug("live events dropped while the handler was busy; reading them from the log", "dropped", dropped)
			continue
		case errors.Is(err, context.DeadlineExceeded):
			if _, gap := seq.Gap(); refill || gap && time.Since(gapSince) >= gapWait {
				ok, resolved := c.refill(seq, deliver)
				if !ok {
					return
				}
				refill = refill && !resolved
				if resolved {
					gapSince, gapWait = time.Time{}, grace
				} else {
					gapSince, gapWait = time.Now(), min(2*gapWait, maxGapWait)
				}
				continue
			}
			if idle := w.opts.IdleTimeout; idle > 0 && time.Since(lastActivity) >= idle {
				if !c.releaseIf(func() bool { return time.Since(time.Unix(0, c.dispatchedAt.Load())) >= idle }) {
					lastActivity = time.Unix(0, c.dispatchedAt.Load()) // dispatched again lately
					continue
				}
				c.log.Info("conversation idle, releasing it", "idle_timeout", idle)
				return
			}
			continue
		default:
			c.log.Warn("conversation feed ended", "err", err)
			return
		}
		lastActivity = time.Now()
		if n, err := sub.Dropped(); err == nil && n > dropped {
			// The subscription overflowed: events were lost, maybe the
			// last ones, which no later event would reveal.
			dropped, refill = n, true
			gapSince = time.Now().Add(-gapWait) // due now
		}
		var ev Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Seq == 0 {
			w.skipped.Add(1)
			c.log.Debug("skipping an undecodable live event", "err", err)
			continue
		}
		if loose && ev.Seq > seq.Last() {
			loose = false
			if ev.PrevSeq < seq.Last() {
				seq = NewSequencer(ev.PrevSeq)
			}
		}
		if ev.Seq <= seq.Last() {
			w.duplicates.Add(1)
			continue
		}
		if !deliverAll(seq.Push(ev)) {
			return
		}
		if _, gap := seq.Gap(); !gap {
			gapSince, gapWait = time.Time{}, grace
		} else if gapSince.IsZero() {
			gapSince = time.Now()
		}
	}
}

// refill reads the log after the last event delivered and delivers what
// it held back. ok is false when delivery must end; resolved when no gap
// remains.
func (c *Conversation) refill(seq *Sequencer, deliver func(Event) bool) (ok, resolved bool) {
	from, _ := seq.Gap()
	rctx, cancel := context.WithTimeout(c.feedCtx, c.w.opts.ReplayTimeout)
	evs, err := c.readAll(rctx, from)
	cancel()
	if c.feedCtx.Err() != nil {
		return false, false
	}
	if err != nil {
		c.log.Warn("reading a gap in the live events failed; will retry", "from_seq", from, "err", err)
		return true, false
	}
	c.w.refills.Add(1)
	c.log.Debug("live events refilled from the log", "from_seq", from, "events", len(evs))
	for _, ev := range seq.Fill(evs) {
		if !deliver(ev) {
			return false, false
		}
	}
	_, gap := seq.Gap()
	return true, !gap
}
