package agentbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A worker's requests to the broker (appends and reads) are retried when
// they may succeed unchanged: no broker answered (no responders, or no reply
// within AppendAttemptTimeout) or the broker answered with a retryable code
// (ProtocolError.Retryable). An append is repeated with the same
// idempotency key, so the broker stores it once.
const (
	// AppendAttemptTimeout bounds one attempt of a request.
	AppendAttemptTimeout = time.Second
	// AppendBudget bounds a request and its retries (or the caller's
	// deadline, whichever comes first).
	AppendBudget = 5 * time.Second
	// DefaultGapGrace is Options.GapGrace's default.
	DefaultGapGrace = 20 * time.Millisecond

	retryBackoffMin = 20 * time.Millisecond
	retryBackoffMax = 500 * time.Millisecond
)

// errNoReply marks an attempt nobody answered in time.
var errNoReply = errors.New("no reply from a broker")

// replyMux receives the replies to a worker's requests on one wildcard
// subscription under the agent's inbox, so that a request can be sent (in
// order with the conversation's other requests) and waited for apart: a
// pipelined request does not hold up the next one.
type replyMux struct {
	nc     *nats.Conn
	prefix string // "<inbox>." ; a request's reply subject is prefix + token

	mu      sync.Mutex
	next    uint64
	waiting map[string]chan *nats.Msg
	sub     *nats.Subscription
}

func (r *replyMux) init(nc *nats.Conn) {
	r.nc = nc
	r.prefix = nc.NewInbox() + "."
	r.waiting = make(map[string]chan *nats.Msg)
}

// start subscribes to the replies.
func (r *replyMux) start() error {
	sub, err := r.nc.Subscribe(r.prefix+"*", r.onReply)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.sub = sub
	r.mu.Unlock()
	return nil
}

// stop unsubscribes; replies still awaited are lost.
func (r *replyMux) stop() {
	r.mu.Lock()
	sub := r.sub
	r.sub = nil
	r.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

func (r *replyMux) onReply(m *nats.Msg) {
	token := strings.TrimPrefix(m.Subject, r.prefix)
	r.mu.Lock()
	ch := r.waiting[token]
	delete(r.waiting, token)
	r.mu.Unlock()
	if ch != nil {
		ch <- m // buffered: one reply per token
	}
}

// register returns a new reply subject and the channel its reply arrives on.
func (r *replyMux) register() (string, chan *nats.Msg) {
	ch := make(chan *nats.Msg, 1)
	r.mu.Lock()
	r.next++
	token := strconv.FormatUint(r.next, 36)
	r.waiting[token] = ch
	r.mu.Unlock()
	return r.prefix + token, ch
}

func (r *replyMux) forget(reply string) {
	r.mu.Lock()
	delete(r.waiting, strings.TrimPrefix(reply, r.prefix))
	r.mu.Unlock()
}

// pending is one attempt of a request, sent and waiting for its reply.
type pending struct {
	subject string
	reply   string
	ch      chan *nats.Msg
}

// send publishes msg as a request; the reply is awaited with wait.
func (r *replyMux) send(msg *nats.Msg) (*pending, error) {
	reply, ch := r.register()
	msg.Reply = reply
	if err := r.nc.PublishMsg(msg); err != nil {
		r.forget(reply)
		return nil, err
	}
	return &pending{subject: msg.Subject, reply: reply, ch: ch}, nil
}

// wait returns the attempt's reply, nats.ErrNoResponders, errNoReply after
// AppendAttemptTimeout, or ctx's error.
func (r *replyMux) wait(ctx context.Context, p *pending) (*nats.Msg, error) {
	t := time.NewTimer(AppendAttemptTimeout)
	defer t.Stop()
	select {
	case m := <-p.ch:
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		return m, nil
	case <-t.C:
		r.forget(p.reply)
		return nil, errNoReply
	case <-ctx.Done():
		r.forget(p.reply)
		return nil, ctx.Err()
	}
}

// retryable reports whether a failed attempt may succeed when repeated.
func retryable(err error) bool {
	var pe *ProtocolError
	switch {
	case errors.As(err, &pe):
		return pe.Retryable()
	case errors.Is(err, errNoReply), errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	}
	return false
}

// budget bounds ctx by AppendBudget.
func budget(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= AppendBudget {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, AppendBudget)
}

// backoff waits before the next attempt; false when ctx ended first.
func backoff(ctx context.Context, d *time.Duration) bool {
	t := time.NewTimer(*d)
	defer t.Stop()
	*d = min(2**d, retryBackoffMax)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// read sends one ReadRequest for the conversation, retrying within ctx
// when no broker answers or the answer is retryable.
func (c *Conversation) read(ctx context.Context, from uint64) (ReadReply, error) {
	data, _ := json.Marshal(ReadRequest{V: Version, ConversationID: c.ID(), FromSeq: from})
	wait := retryBackoffMin
	for {
		var rep ReadReply
		p, err := c.w.replies.send(&nats.Msg{Subject: c.w.subj.Read(c.w.opts.Agent), Data: data})
		if err == nil {
			var m *nats.Msg
			if m, err = c.w.replies.wait(ctx, p); err == nil {
				if err = json.Unmarshal(m.Data, &rep); err != nil {
					err = fmt.Errorf("agentbridge: read reply: %w", err)
				} else if rep.Error != nil {
					err = rep.Error
				}
			}
		}
		if err == nil {
			return rep, nil
		}
		if ctx.Err() != nil || !retryable(err) {
			return rep, fmt.Errorf("agentbridge: read from %d: %w", from, err)
		}
		c.log.Debug("reading the log failed; retrying", "from_seq", from, "err", err)
		if !backoff(ctx, &wait) {
			return rep, fmt.Errorf("agentbridge: read from %d: %w", from, err)
		}
	}
}

// readAll reads the log from from to its end.
func (c *Conversation) readAll(ctx context.Context, from uint64) ([]Event, error) {
	var all []Event
	for {
		rep, err := c.read(ctx, from)
		if err != nil {
			return all, err
		}
		all = append(all, rep.Events...)
		if !rep.More || len(rep.Events) == 0 {
			return all, nil
		}
		from = rep.Events[len(rep.Events)-1].Seq + 1
	}
}

// appendReq is one append request of a conversation.
type appendReq struct {
	ev    Event // envelope filled in
	key   string
	epoch uint64 // the epoch it was sent under
	data  []byte
}

// sendAppend stamps ev's envelope and sends it; requests of a conversation
// leave in the order of their sendAppend calls.
func (c *Conversation) sendAppend(ev Event, key string) (*appendReq, *pending, error) {
	a := &appendReq{ev: ev, key: key}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	p, err := c.sendLocked(a)
	return a, p, err
}

func (c *Conversation) sendLocked(a *appendReq) (*pending, error) {
	if a.data == nil || a.epoch != c.Epoch() {
		a.epoch = c.Epoch()
		ev := &a.ev
		ev.V = Version
		ev.ConversationID = c.ID()
		ev.Seq, ev.PrevSeq = 0, 0
		ev.TS = time.Now().UTC()
		ev.WorkerID = c.w.id
		ev.Epoch = a.epoch
		a.data, _ = json.Marshal(ev) // Event has only marshalable fields
	}
	msg := &nats.Msg{Subject: c.appendSubject, Data: a.data, Header: nats.Header{}}
	msg.Header.Set(HeaderMsgID, a.key)
	return c.w.replies.send(msg)
}

// awaitAppend waits for an append's reply, repeating the append (same key)
// while that may help, within ctx and AppendBudget.
func (c *Conversation) awaitAppend(ctx context.Context, a *appendReq, p *pending, sendErr error) (uint64, error) {
	ctx, cancel := budget(ctx)
	defer cancel()
	wait := retryBackoffMin
	err := sendErr
	for attempt := 1; ; attempt++ {
		if err == nil {
			var m *nats.Msg
			if m, err = c.w.replies.wait(ctx, p); err == nil {
				var rep AppendReply
				switch {
				case json.Unmarshal(m.Data, &rep) != nil:
					err = fmt.Errorf("agentbridge: bad append reply %.100q", m.Data)
				case rep.Error != nil:
					err = rep.Error
				default:
					if attempt > 1 {
						c.log.Info("event stored after a retry", "type", a.ev.Type, "attempts", attempt)
					}
					return rep.Seq, nil
				}
			}
		}
		var pe *ProtocolError
		lost := errors.As(err, &pe) && (pe.Code == CodeStaleEpoch || pe.Code == CodeNotHolder)
		redo := false
		switch {
		case lost && c.Epoch() > a.epoch:
			// Sent before a re-dispatch raised our epoch: send it again
			// under the new one.
			redo = true
		case lost:
			c.lose(pe)
			return 0, fmt.Errorf("agentbridge: append %s: %w", a.ev.Type, err)
		case errors.Is(err, nats.ErrNoResponders) && p != nil && c.fallBack(p.subject):
			redo = true // the dispatching broker has gone: any broker stores it
		}
		if !redo && (ctx.Err() != nil || !retryable(err)) {
			return 0, fmt.Errorf("agentbridge: append %s: %w", a.ev.Type, err)
		}
		if !redo {
			c.log.Warn("appending an event failed; retrying", "type", a.ev.Type, "attempt", attempt, "err", err)
			if !backoff(ctx, &wait) {
				return 0, fmt.Errorf("agentbridge: append %s: %w", a.ev.Type, err)
			}
		}
		c.sendMu.Lock()
		p, err = c.sendLocked(a)
		c.sendMu.Unlock()
	}
}

// fallBack moves the conversation's appends from the dispatching broker's
// subject to the shared one, if subject was the former. It reports
// whether the append should be sent again at once.
func (c *Conversation) fallBack(subject string) bool {
	shared := c.w.subj.Append(c.w.opts.Agent)
	if subject == shared {
		return false
	}
	c.sendMu.Lock()
	moved := c.appendSubject != shared
	c.appendSubject = shared
	c.sendMu.Unlock()
	if moved {
		c.log.Info("dispatching broker gone; appending through any broker", "broker", c.req.Broker)
	}
	return true
}

// lose ends the conversation after the broker said this worker no longer
// holds it.
// It logs the loss once, before any caller can see it (an append failing
// at once on c.lost): whoever gets the error finds it logged.
func (c *Conversation) lose(pe *ProtocolError) {
	c.loseOnce.Do(func() {
		c.log.Warn("the broker says this worker no longer holds the conversation; releasing it",
			"code", pe.Code, "epoch", c.Epoch(), "reason", pe.Message)
		c.lost.Store(pe)
	})
	c.stop()
}
