package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// dispatcher hands conversations to agent workers: request/reply on the
// agent's dispatch subject (a queue group), retried with backoff until a
// worker accepts. One loop runs per conversation being dispatched. A loop
// waiting between attempts wakes at once when a worker of its agent
// appears (the registry's onAppear).
//
// Lock order: dispatcher.mu and dispatcher.wakeMu are leaves (never held
// together, nothing called under them); registry.mu is never held while
// the dispatcher runs.
type dispatcher struct {
	b *Broker

	mu      sync.Mutex
	running map[string]bool // conversation id → a loop is running
	// unavailable: conversation id → why its last attempt failed
	// (ErrAgentUnavailable or ErrConversationLimit).
	unavailable map[string]error
	// again: conversation id → ensure was called while its loop ran. The
	// loop's outcome may predate that call (it read a conversation with no
	// session left, or its worker took the dispatch just before the
	// conversation was released), so the loop runs once more before it
	// ends.
	again map[string]bool

	wakeMu sync.Mutex
	wake   map[string]chan struct{} // agent → closed when a worker of it appears
}

func newDispatcher(b *Broker) *dispatcher {
	return &dispatcher{b: b, running: make(map[string]bool), unavailable: make(map[string]error),
		again: make(map[string]bool), wake: make(map[string]chan struct{})}
}

// dispatchBackoffMin is the first wait between dispatch attempts; it
// doubles up to agents.dispatch_retry_max.
const dispatchBackoffMin = 100 * time.Millisecond

// wakeOn returns a channel closed when a worker of agent next appears.
func (d *dispatcher) wakeOn(agent string) <-chan struct{} {
	d.wakeMu.Lock()
	defer d.wakeMu.Unlock()
	ch := d.wake[agent]
	if ch == nil {
		ch = make(chan struct{})
		d.wake[agent] = ch
	}
	return ch
}

// workerAppeared wakes the loops waiting for a worker of agent (called by
// the registry, outside its lock).
func (d *dispatcher) workerAppeared(agent string) {
	d.wakeMu.Lock()
	ch := d.wake[agent]
	delete(d.wake, agent)
	d.wakeMu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// ensure makes sure a live worker of agent (the conversation's) holds cid,
// starting a dispatch loop if none does. It returns why the conversation
// is known to have no agent right now (ErrAgentUnavailable or
// ErrConversationLimit: a dispatch attempt already failed), or nil. A
// conversation whose worker is gone (and the sweep has not noticed yet)
// goes through the lost-worker path first.
func (d *dispatcher) ensure(cid, agent string) error {
	if _, ok := d.b.registry.holder(cid, agent); ok {
		return nil
	}
	if lost, ok := d.b.registry.takeLost(cid, agent); ok {
		d.b.goroutine(func() { d.lost(lost, true) })
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running[cid] {
		d.again[cid] = true
		return d.unavailable[cid]
	}
	if d.b.goroutine(func() { d.run(cid) }) {
		d.running[cid] = true
	}
	return nil
}

// busy reports whether a dispatch loop of cid runs on this broker.
func (d *dispatcher) busy(cid string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running[cid]
}

// run runs cid's dispatch loop, once more for every ensure that came while
// it ran.
func (d *dispatcher) run(cid string) {
	for {
		d.loop(cid, time.Now())
		d.mu.Lock()
		again := d.again[cid] && d.b.ctx.Err() == nil
		delete(d.again, cid)
		if !again {
			delete(d.running, cid)
			delete(d.unavailable, cid)
		}
		d.mu.Unlock()
		if !again {
			return
		}
	}
}

func (d *dispatcher) loop(cid string, start time.Time) {
	b := d.b
	log := b.log.With("conversation_id", cid)
	backoff := dispatchBackoffMin
	agent := ""
	var wake <-chan struct{}
	// asked: a request of this loop went out and may have been accepted
	// without the record saying so (no reply in time, or the record's
	// update failed). The worker then appends at that request's epoch, so
	// the loop asks again (a worker takes a repeated dispatch as a no-op)
	// until the record has it, rather than trust the registry.
	asked := false
	for attempt := 1; ; attempt++ {
		if agent != "" {
			// Taken before the attempt: a worker appearing while it runs
			// still wakes the wait below.
			wake = d.wakeOn(agent)
		}
		reply, conv, head, err := d.attempt(cid, &asked)
		switch {
		case err == nil && head == 0:
			// Held already (a dispatch of another loop or broker, which
			// this loop found rather than made): nothing was dispatched,
			// so nothing is counted, but legs waiting are told who holds it.
			log.Debug("conversation held already", "worker_id", reply.WorkerID, "epoch", conv.Epoch)
			d.notify(Notice{Kind: NoticeAgentAssigned, ConversationID: cid, Agent: conv.Agent,
				WorkerID: reply.WorkerID, Epoch: conv.Epoch, Attempt: attempt})
			return
		case err == nil:
			b.obs().Dispatched(conv.Agent, time.Since(start))
			log.Debug("conversation dispatched", "worker_id", reply.WorkerID, "epoch", conv.Epoch, "attempt", attempt)
			d.notify(Notice{Kind: NoticeAgentAssigned, ConversationID: cid, Agent: conv.Agent,
				WorkerID: reply.WorkerID, Epoch: conv.Epoch, HeadSeq: head, Attempt: attempt})
			return
		case errors.Is(err, ErrUnknownConversation), errors.Is(err, ErrClosed), b.ctx.Err() != nil:
			return
		case errors.Is(err, errStaleDispatch):
			// The last session ended while the request was out: the worker
			// lets the conversation go. A session that came since has
			// called ensure, which runs the loop again.
			log.Debug("dispatch outdated by the conversation's release", "worker_id", reply.WorkerID)
			return
		}
		if conv.ActiveSessions == 0 && conv.ID != "" {
			log.Info("stopping dispatch: no visitor session left", "err", err)
			return
		}
		if agent == "" && conv.Agent != "" {
			agent = conv.Agent
			wake = d.wakeOn(agent)
		}
		why, code := ErrAgentUnavailable, ""
		if errors.Is(err, ErrConversationLimit) {
			why, code = ErrConversationLimit, NoticeCodeConversationLimit
		}
		d.mu.Lock()
		news := d.unavailable[cid] != why
		d.unavailable[cid] = why
		d.mu.Unlock()
		if news {
			if why == ErrConversationLimit {
				// Logged (rate limited, per widget) by the admission.
				log.Debug("conversation waits for its widget's conversation limit", "agent", conv.Agent, "err", err)
			} else {
				log.Warn("no agent worker accepted the conversation; retrying", "agent", conv.Agent, "err", err)
			}
			d.notify(Notice{Kind: NoticeAgentUnavailable, Code: code, ConversationID: cid, Agent: conv.Agent, Attempt: attempt})
		}
		timer := time.NewTimer(backoff)
		select {
		case <-b.ctx.Done():
			timer.Stop()
			return
		case <-wake:
			// A worker of the agent appeared: try it now, and start the
			// backoff over (its dispatch subscription may still be on its
			// way through a cluster).
			timer.Stop()
			log.Debug("agent worker appeared; dispatching at once", "agent", agent)
			backoff = dispatchBackoffMin
			continue
		case <-timer.C:
		}
		backoff = min(backoff*2, b.cfg.Agents.DispatchRetryMax)
	}
}

// attempt sends one dispatch request and records the assignment. head is
// the log head the accepted request carried (0 when the conversation was
// found held already). Until *asked (set when a request goes out), a live
// holder that the registry knows and the record names stands for a
// dispatch.
func (d *dispatcher) attempt(cid string, asked *bool) (reply agentbridge.DispatchReply, conv Conversation, head uint64, err error) {
	b := d.b
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Agents.DispatchTimeout)
	defer cancel()
	conv, err = b.Conversation(ctx, cid)
	if err != nil {
		return reply, conv, 0, err
	}
	if w, ok := b.registry.owner(cid, conv.Agent); ok && !*asked && conv.WorkerID == w {
		// Someone (another broker) dispatched it meanwhile. The registry
		// alone is not enough: it learns holders from heartbeats, and a
		// worker that accepted a request whose acceptance was never
		// recorded appends at an epoch the record does not have.
		reply.Accepted, reply.WorkerID = true, w
		return reply, conv, 0, nil
	}
	if conv.EngagedAt == nil {
		// The first dispatch: a session resuming the conversation from now
		// on dispatches it again (what its visitor sent is answered).
		if conv, err = b.updateConversation(ctx, cid, func(c *Conversation) error {
			if c.EngagedAt == nil {
				now := time.Now().UTC()
				c.EngagedAt = &now
			}
			return nil
		}); err != nil {
			return reply, conv, 0, err
		}
	}
	done, err := b.admission.admit(conv)
	if err != nil {
		return reply, conv, 0, err
	}
	defer done()
	info, err := b.stream.Info(ctx)
	if err != nil {
		return reply, conv, 0, fmt.Errorf("%w: stream info: %w", ErrStore, err)
	}
	req := agentbridge.DispatchRequest{
		V: agentbridge.Version, ConversationID: cid, Agent: conv.Agent, Widget: conv.Widget,
		SessionID: conv.SessionID, Language: conv.Language, Visitor: conv.Visitor,
		Mode: conv.Mode, ResumeFromSeq: conv.FirstSeq, HeadSeq: info.State.LastSeq, LastSeq: b.lw.known(cid),
		Epoch: conv.Epoch + 1, Broker: b.id, TS: time.Now().UTC(),
	}
	data, _ := json.Marshal(req)
	*asked = true
	msg, err := b.nc.RequestWithContext(ctx, b.subj.Dispatch(conv.Agent), data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return reply, conv, 0, fmt.Errorf("%w: no worker of agent %q is running", ErrAgentUnavailable, conv.Agent)
	case err != nil:
		return reply, conv, 0, fmt.Errorf("%w: %w", ErrAgentUnavailable, err)
	}
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return reply, conv, 0, fmt.Errorf("%w: bad dispatch reply: %w", ErrAgentUnavailable, err)
	}
	if !reply.Accepted {
		return reply, conv, 0, fmt.Errorf("%w: worker %s declined: %s", ErrAgentUnavailable, reply.WorkerID, reply.Reason)
	}
	if !agentbridge.ValidToken(reply.WorkerID) {
		return reply, conv, 0, fmt.Errorf("%w: worker id %.40q is not a subject token", ErrAgentUnavailable, reply.WorkerID)
	}
	head = req.HeadSeq
	lost, ok, err := b.registry.assign(cid, conv.Agent, reply.WorkerID, reply.HeartbeatSeq, req.Epoch, req.HeadSeq)
	if err != nil {
		return reply, conv, 0, err
	}
	if ok {
		// The assignment replaced was a dead worker's that neither the
		// sweep nor a visitor's action had handled yet.
		d.lost(lost, false)
	}
	prev := conv.WorkerID
	conv, err = b.updateConversation(ctx, cid, func(c *Conversation) error {
		if c.WorkerID != reply.WorkerID {
			// A new owner: its appends are fenced from this epoch on.
			c.OwnerEpoch = req.Epoch
		}
		c.WorkerID, c.Epoch, c.AssignedAt = reply.WorkerID, max(c.Epoch, req.Epoch), time.Now().UTC()
		return nil
	})
	if err != nil {
		return reply, conv, 0, err
	}
	b.agents.holders.set(conv)
	if prev != "" && prev != reply.WorkerID {
		// A new owner: fence the old one off in the log (its late writes
		// are ignored by every reader, and it stops when it sees this).
		if _, err := b.appendInbound(ctx, agentbridge.Event{Type: agentbridge.EventAgentAssigned,
			ConversationID: cid, WorkerID: reply.WorkerID, Epoch: req.Epoch}, "", conv.Agent); err != nil {
			return reply, conv, head, err
		}
	}
	return reply, conv, head, nil
}

// watchWorkers re-dispatches the conversations of workers that stop
// heartbeating or drain, when a visitor on this broker is attached to them.
// The next worker replays the log and answers what is unanswered.
func (d *dispatcher) watchWorkers() {
	b := d.b
	b.every(max(b.cfg.Agents.HeartbeatTimeout/4, 50*time.Millisecond), d.sweep)
}

// sweep hands the conversations the registry found lost or released to
// the dispatcher.
func (d *dispatcher) sweep() {
	lost, recheck := d.b.registry.sweep()
	for _, c := range recheck {
		// The worker let the conversation go about when a visitor acted on
		// it: dispatch it again if a visitor is still there (the next
		// worker replays the log and answers).
		d.ofAgent(c, func(conv Conversation) {
			if conv.ActiveSessions > 0 {
				d.b.log.Debug("conversation released as a visitor acted; dispatching it again",
					"conversation_id", c.cid, "worker_id", c.worker)
				d.ensure(c.cid, c.agent)
			}
		})
	}
	for _, l := range lost {
		if d.b.hubs.active(l.cid) {
			d.ofAgent(l, func(Conversation) { d.lost(l, true) })
		}
	}
}

// ofAgent reads c's conversation on a goroutine of the broker and calls fn
// with it if it is still the conversation of c's agent: the holding was
// learned from a heartbeat, and a worker of another agent may have claimed
// the conversation.
func (d *dispatcher) ofAgent(c lostConversation, fn func(Conversation)) {
	b := d.b
	b.goroutine(func() {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Agents.DispatchTimeout)
		conv, err := b.Conversation(ctx, c.cid)
		cancel()
		if err == nil && conv.Agent == c.agent {
			fn(conv)
		}
	})
}

// lost handles a conversation whose worker went away (found by the sweep,
// by a visitor's action, or by a dispatch replacing the assignment): it
// logs it, tells the visitors (agent_lost: the widget shows
// "reconnecting"), closes the replies the worker had half streamed and,
// if redispatch, dispatches the conversation again. The registry hands
// each loss to exactly one caller.
func (d *dispatcher) lost(l lostConversation, redispatch bool) {
	d.b.log.Info("agent worker lost; dispatching the conversation again",
		"conversation_id", l.cid, "worker_id", l.worker)
	d.notify(Notice{Kind: NoticeAgentLost, ConversationID: l.cid, WorkerID: l.worker})
	d.interruptReplies(l.cid, l.worker)
	if redispatch {
		d.ensure(l.cid, l.agent)
	}
}

// interruptReplies closes the replies a lost worker had half streamed:
// a text_done marked interrupted (reason worker_lost) with what it said.
// The visitor message it answered counts as unanswered, so the next worker
// answers it again. The msg id is the one the worker's own text_done would
// have had (<cid>/<message_id>/done: the broker stores an append under
// "<cid>/" + its Nats-Msg-Id, and the SDK's is <message_id>/done), so a
// late one from the lost worker is a duplicate.
func (d *dispatcher) interruptReplies(cid, worker string) {
	b := d.b
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	events, err := b.ReadLog(ctx, cid, 0)
	if err != nil {
		b.log.Warn("cannot mark interrupted replies", "conversation_id", cid, "err", err)
		return
	}
	type partial struct {
		ev   agentbridge.Event
		text strings.Builder
	}
	open := map[string]*partial{}
	var order []string
	for _, ev := range events {
		switch {
		case ev.Type == agentbridge.EventTextDelta && ev.WorkerID == worker:
			p := open[ev.MessageID]
			if p == nil {
				p = &partial{ev: ev}
				open[ev.MessageID] = p
				order = append(order, ev.MessageID)
			}
			p.text.WriteString(ev.Text)
		case ev.Type == agentbridge.EventTextDone:
			delete(open, ev.MessageID)
		}
	}
	for _, id := range order {
		p, ok := open[id]
		if !ok {
			continue
		}
		done := agentbridge.Event{Type: agentbridge.EventTextDone, ConversationID: cid, MessageID: id,
			ReplyTo: p.ev.ReplyTo, Text: p.text.String(), Interrupted: true, Reason: agentbridge.ReasonWorkerLost,
			WorkerID: worker, Epoch: p.ev.Epoch}
		if _, err := b.publish(ctx, b.subj.OutEvent(cid), &done, cid+"/"+id+"/done"); err != nil {
			b.log.Warn("cannot mark an interrupted reply", "conversation_id", cid, "message_id", id, "err", err)
		}
	}
}

// notify tells every broker's live subscribers of cid.
func (d *dispatcher) notify(n Notice) {
	n.TS = time.Now().UTC()
	data, _ := json.Marshal(n)
	if err := d.b.nc.Publish(d.b.subj.Status(n.ConversationID), data); err != nil {
		d.b.log.Debug("status notice failed", "conversation_id", n.ConversationID, "err", err)
	}
}
