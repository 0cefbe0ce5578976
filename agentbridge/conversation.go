package agentbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	// starts a fresh Conversation.
	released atomic.Bool
	// feedCtx bounds event delivery; stop cancels it.
	feedCtx context.Context
	stop    context.CancelFunc
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
	c.epoch.Store(req.Epoch)
	c.headSeq.Store(req.HeadSeq)
	return c
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

// Publish writes an agent event to the conversation log and returns its log
// position once stored. The envelope fields are filled in.
func (c *Conversation) Publish(ctx context.Context, ev Event) (uint64, error) {
	data, msgID := c.encode(&ev)
	var ack *jetstream.PubAck
	var err error
	if msgID != "" {
		// Repeatable: a PubAck lost with the stream leader costs ~1 s,
		// not the whole JetStream timeout.
		ack, err = PublishIdempotent(ctx, c.w.js, c.log, c.w.subj.OutEvent(c.ID()), data, msgID)
	} else {
		ack, err = c.w.js.Publish(ctx, c.w.subj.OutEvent(c.ID()), data)
	}
	if err != nil {
		return 0, fmt.Errorf("agentbridge: publish %s: %w", ev.Type, err)
	}
	return ack.Sequence, nil
}

// publishAsync writes an event without waiting for the store; errors are
// logged by the worker's async error handler.
func (c *Conversation) publishAsync(ev Event) {
	data, msgID := c.encode(&ev)
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := c.w.js.PublishAsync(c.w.subj.OutEvent(c.ID()), data, opts...); err != nil {
		c.log.Warn("async publish failed", "type", ev.Type, "err", err)
	}
}

// encode fills in the envelope and returns the event's JSON and its
// message id ("" when it has none: storing it twice would keep two).
func (c *Conversation) encode(ev *Event) ([]byte, string) {
	ev.V = Version
	ev.ConversationID = c.ID()
	ev.Seq = 0
	ev.TS = time.Now().UTC()
	ev.WorkerID = c.w.id
	ev.Epoch = c.Epoch()
	data, _ := json.Marshal(ev) // Event has only marshalable fields
	switch {
	case ev.Type == EventTextDelta && ev.MessageID != "":
		return data, ev.MessageID + "/" + strconv.Itoa(ev.Index)
	case ev.Type == EventTextDone && ev.MessageID != "":
		return data, ev.MessageID + "/done"
	}
	return data, ""
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
// end) with data marshalled as JSON.
func (c *Conversation) SendAction(ctx context.Context, action string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("agentbridge: action data: %w", err)
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

// SendAudio sends one audio frame to the visitor. Audio is not durable.
func (c *Conversation) SendAudio(f AudioFrame) error {
	if f.Codec == "" {
		f.Codec = CodecOpus
	}
	return c.w.nc.PublishMsg(f.Msg(c.w.subj.OutAudio(c.w.opts.Agent, c.ID())))
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
}

// NewReply starts a reply to the visitor message replyTo.
func (c *Conversation) NewReply(replyTo string) *Reply {
	return &Reply{c: c, id: "msg_" + nuid.Next(), replyTo: replyTo}
}

// ID returns the reply's message id.
func (r *Reply) ID() string { return r.id }

// Write streams delta as the next chunk of the reply.
func (r *Reply) Write(ctx context.Context, delta string) error {
	if r.done {
		return ErrReplyDone
	}
	if delta == "" {
		return nil
	}
	_, err := r.c.Publish(ctx, Event{Type: EventTextDelta, MessageID: r.id, ReplyTo: r.replyTo, Index: r.index, Text: delta})
	if err != nil {
		return err
	}
	r.index++
	r.text.WriteString(delta)
	return nil
}

// Done completes the reply with its full text.
func (r *Reply) Done(ctx context.Context) error {
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

// replay reads the log from ResumeFromSeq up to HeadSeq into history and
// pending; it returns the first live event read past HeadSeq, if any.
func (c *Conversation) replay(ctx context.Context, it *Feed, initialPending uint64) (*Event, error) {
	if initialPending == 0 {
		return nil, nil
	}
	var all []Event
	var live *Event
	for {
		msg, err := it.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("agentbridge: replay: %w", err)
		}
		ev, meta, err := DecodeLogMsg(msg)
		if err != nil {
			c.log.Warn("skipping undecodable log entry", "err", err)
			if meta != nil && meta.NumPending == 0 {
				break
			}
			continue
		}
		if c.req.HeadSeq > 0 && ev.Seq > c.req.HeadSeq {
			live = &ev
			break
		}
		all = append(all, ev)
		if meta.NumPending == 0 {
			break
		}
	}
	c.history, c.pending = splitPending(all)
	return live, nil
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

// feed delivers pending and live inbound events until stopped, idle or
// released, then closes Events.
func (c *Conversation) feed(it *Feed, first *Event) {
	defer close(c.events)
	defer c.released.Store(true)
	ctx := c.feedCtx
	deliver := func(ev Event) bool {
		if ev.Type == EventAgentAssigned {
			// Another worker took the conversation under a newer epoch:
			// this one has lost it (it was thought dead) and stops.
			if ev.WorkerID != c.w.id && ev.Epoch > c.Epoch() {
				c.log.Warn("conversation taken over by another worker; releasing it",
					"new_worker", ev.WorkerID, "epoch", ev.Epoch, "own_epoch", c.Epoch())
				return false
			}
			return true
		}
		if !ev.IsInbound() {
			return true
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
		return !(ev.Type == EventSessionEnded && ev.Idle && ev.Seq > c.headSeq.Load())
	}
	for _, ev := range c.pending {
		if !deliver(ev) {
			return
		}
	}
	if first != nil && !deliver(*first) {
		return
	}
	for {
		nctx, cancel := ctx, context.CancelFunc(func() {})
		if idle := c.w.opts.IdleTimeout; idle > 0 {
			nctx, cancel = context.WithTimeout(ctx, idle)
		}
		msg, err := it.Next(nctx)
		cancel()
		if err != nil {
			switch {
			case ctx.Err() != nil, errors.Is(err, jetstream.ErrMsgIteratorClosed):
			case errors.Is(err, context.DeadlineExceeded):
				c.log.Info("conversation idle, releasing it", "idle_timeout", c.w.opts.IdleTimeout)
			default:
				c.log.Warn("conversation feed ended", "err", err)
			}
			return
		}
		ev, _, err := DecodeLogMsg(msg)
		if err != nil {
			c.log.Warn("skipping undecodable log entry", "err", err)
			continue
		}
		if !deliver(ev) {
			return
		}
	}
}

// DecodeLogMsg decodes an entry of a conversation log read from JetStream
// and stamps its log position (Seq) from the message metadata.
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
