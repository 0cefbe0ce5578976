package agentbridge_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// setRefuse and setMute install the broker end's append hooks.
func (b *brokerEnd) setRefuse(f func(a appendSeen) *agentbridge.ProtocolError) {
	b.mu.Lock()
	b.refuse = f
	b.mu.Unlock()
}

func (b *brokerEnd) setMute(f func(a appendSeen) bool) {
	b.mu.Lock()
	b.mute = f
	b.mu.Unlock()
}

// refuseFirst answers the first append of type typ with the error refuse
// returns (it may act first); every other append is accepted.
func (b *brokerEnd) refuseFirst(typ string, refuse func() *agentbridge.ProtocolError) {
	first := onFirst(func(a appendSeen) bool { return a.Sent.Type == typ })
	b.setRefuse(func(a appendSeen) *agentbridge.ProtocolError {
		if first(a) {
			return refuse()
		}
		return nil
	})
}

// onFirst returns a predicate true for the first append it sees that
// matches, once.
func onFirst(match func(a appendSeen) bool) func(a appendSeen) bool {
	var once sync.Once
	return func(a appendSeen) bool {
		hit := false
		if match(a) {
			once.Do(func() { hit = true })
		}
		return hit
	}
}

// count counts cid's stored events of type typ.
func (b *brokerEnd) count(cid, typ string) int {
	n := 0
	for _, ev := range b.events(cid) {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// storedOnce fails t unless cid's log holds exactly one event of each of
// the types.
func (b *brokerEnd) storedOnce(t testing.TB, cid string, types ...string) {
	t.Helper()
	for _, typ := range types {
		if n := b.count(cid, typ); n != 1 {
			t.Fatalf("%s: %d %s events stored, want 1: %+v", cid, n, typ, summarize(b.events(cid)))
		}
	}
}

// answerOnce runs f on the first visitor message and reports its error.
func answerOnce(f func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error) (*recorder, chan error) {
	errs := make(chan error, 1)
	rec := newRecorder()
	rec.onMessage = func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		errs <- f(ctx, c, ev)
		return nil
	}
	return rec, errs
}

// TestLostConversationEnds: a broker reply saying the worker no longer
// holds the conversation (its epoch is stale, or another worker holds it)
// ends the conversation: the error reaches the caller, Events closes, the
// worker releases it, later appends fail at once, and it is logged once.
func TestLostConversationEnds(t *testing.T) {
	t.Parallel()
	for _, code := range []string{agentbridge.CodeStaleEpoch, agentbridge.CodeNotHolder} {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			b := newBrokerEnd(t)
			cid := "conv_" + strings.ToLower(code)
			var logs agenttest.LogBuffer
			later := make(chan error, 1)
			got, taken := make(chan struct{}), make(chan struct{})
			rec, errs := answerOnce(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
				// The loss comes while the handler holds the message. (Had
				// it come first, the refused "thinking" state would end the
				// conversation before the message reached the handler:
				// right, but not what this test is about.)
				close(got)
				<-taken
				err := c.NewReply(ev.MessageID).Write(ctx, "too late")
				later <- c.SendText(ctx, ev.MessageID, "after the loss")
				return err
			})
			w, _ := b.run(agentbridge.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, rec,
				agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1})
			b.userMessage(cid, "msg_1", "hello?")
			recv(t, got, "the message")
			// Another dispatch took the conversation; this worker has not
			// heard of it.
			b.mu.Lock()
			if code == agentbridge.CodeStaleEpoch {
				b.convs[cid].epoch = 2
			} else {
				b.convs[cid].worker, b.convs[cid].epoch = "wrk_new", 2
			}
			b.mu.Unlock()
			close(taken)
			for _, ch := range []chan error{errs, later} {
				var pe *agentbridge.ProtocolError
				if err := recv(t, ch, "an append's result"); !errors.As(err, &pe) || pe.Code != code {
					t.Fatalf("append returned %v, want a %s ProtocolError", err, code)
				}
			}
			if err := recv(t, rec.done, "the handler to end"); err != nil {
				t.Fatalf("handler: %v", err)
			}
			agenttest.Poll(t, waitFor, "the release", func() bool { return len(w.Conversations()) == 0 })
			for {
				select {
				case a := <-b.appends:
					if a.Sent.Text == "after the loss" {
						t.Fatalf("an append was sent after the loss: %+v", a.Sent)
					}
					continue
				default:
				}
				break
			}
			if n := strings.Count(logs.String(), "no longer holds the conversation"); n != 1 {
				t.Fatalf("logged the loss %d times:\n%s", n, logs.String())
			}
			if b.count(cid, agentbridge.EventTextDelta) != 0 {
				t.Fatal("a refused delta was stored")
			}
		})
	}
}

// TestCodedErrorsSurfaced: a refused append returns the broker's coded
// error at once (no retry) and the conversation goes on.
func TestCodedErrorsSurfaced(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_codes"
	type result struct {
		what string
		err  error
	}
	results := make(chan result, 8)
	rec, errs := answerOnce(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		// (A long delta is split by Reply.Write; a transcript is not.)
		_, err := c.SendTranscript(ctx, strings.Repeat("x", agentbridge.DefaultMaxReplyBytes+1), true)
		results <- result{"oversized transcript", err}
		results <- result{"unknown action", c.SendAction(ctx, "fly", map[string]int{"to": 1})}
		results <- result{"unknown state", c.SetState(ctx, "dancing", "")}
		return c.SendText(ctx, ev.MessageID, "still here")
	})
	b.startWorker(agentbridge.Options{}, rec.handle)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
	b.userMessage(cid, "msg_1", "hi")
	for _, want := range []string{agentbridge.CodeTooLarge, agentbridge.CodeBadEvent, agentbridge.CodeBadEvent} {
		r := recv(t, results, "a refused append")
		var pe *agentbridge.ProtocolError
		if !errors.As(r.err, &pe) || pe.Code != want || pe.Retryable() {
			t.Fatalf("%s: %v, want %s", r.what, r.err, want)
		}
	}
	if err := recv(t, errs, "the answer"); err != nil {
		t.Fatalf("after refusals the conversation cannot answer: %v", err)
	}
	var fly int
	for len(b.appends) > 0 {
		if a := <-b.appends; a.Sent.Action == "fly" {
			fly++
		}
	}
	if fly != 1 {
		t.Fatalf("a refused action was sent %d times", fly)
	}
	b.storedOnce(t, cid, agentbridge.EventTextDone)
}

// TestAppendRetriedWithSameKey: a retryable refusal (the store was
// unavailable) is retried with the same idempotency key until stored.
func TestAppendRetriedWithSameKey(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_retry"
	b.refuseFirst(agentbridge.EventTextDelta, func() *agentbridge.ProtocolError {
		return &agentbridge.ProtocolError{Code: agentbridge.CodeStoreUnavailable, Message: "try again"}
	})
	rec, errs := answerOnce(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		return c.SendText(ctx, ev.MessageID, "stored anyway")
	})
	w := b.startWorker(agentbridge.Options{}, rec.handle)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
	b.userMessage(cid, "msg_1", "hi")
	if err := recv(t, errs, "the answer"); err != nil {
		t.Fatalf("SendText: %v", err)
	}
	var keys []string
	for len(keys) < 2 {
		if a := b.nextAppend(w.ID()); a.Sent.Type == agentbridge.EventTextDelta {
			keys = append(keys, a.MsgID)
		}
	}
	if keys[0] == "" || keys[0] != keys[1] || !strings.HasSuffix(keys[0], "/0") {
		t.Fatalf("delta sent with keys %q, want the same <message_id>/0 twice", keys)
	}
	b.storedOnce(t, cid, agentbridge.EventTextDelta)
}

// TestUnansweredAppend: the broker stores an append but its reply is lost
// on the way.
func TestUnansweredAppend(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, cid, text string
		muted           string // the type of the first append left unanswered
		// waits: the durable Write returns only after the muted append was
		// repeated and confirmed; otherwise it must not wait for it at all.
		waits bool
		then  func(t *testing.T, b *brokerEnd, w *agentbridge.Worker)
	}{
		// A reply lost on the way costs one attempt: the append is repeated
		// with the same key, stored once, and the durable Write returns only
		// once the broker confirmed it.
		{name: "reply lost", cid: "conv_lost_reply", text: "once", muted: agentbridge.EventTextDelta, waits: true},
		// The SDK's "thinking" state is pipelined: the first chunk of the
		// answer leaves right behind it, in order, without waiting for its
		// reply.
		{name: "thinking pipelined", cid: "conv_pipeline", text: "fast", muted: agentbridge.EventAgentState,
			then: func(t *testing.T, b *brokerEnd, w *agentbridge.Worker) {
				if a := b.nextAppend(w.ID()); a.Sent.Type != agentbridge.EventAgentState {
					t.Fatalf("first append %+v, want the thinking state", a.Sent)
				}
				if a := b.nextAppend(w.ID()); a.Sent.Type != agentbridge.EventTextDelta {
					t.Fatalf("second append %+v, want the delta", a.Sent)
				}
				// The unanswered state is repeated (and, below, stored once).
				agenttest.Poll(t, waitFor, "the thinking state's retry", func() bool { return len(b.appends) > 0 })
				if a := b.nextAppend(w.ID()); a.Sent.Type != agentbridge.EventAgentState || a.MsgID == "" {
					t.Fatalf("third append %+v, want the state again with its key", a)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newBrokerEnd(t)
			b.setMute(onFirst(func(a appendSeen) bool { return a.Sent.Type == tt.muted }))
			took := make(chan time.Duration, 1)
			rec, errs := answerOnce(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
				start := time.Now()
				err := c.NewReply(ev.MessageID).Write(ctx, tt.text)
				took <- time.Since(start)
				return err
			})
			w := b.startWorker(agentbridge.Options{}, rec.handle)
			b.dispatch(agentbridge.DispatchRequest{ConversationID: tt.cid})
			b.userMessage(tt.cid, "msg_1", "hi")
			if err := recv(t, errs, "the write"); err != nil {
				t.Fatalf("Write: %v", err)
			}
			switch d := recv(t, took, "the time"); {
			case tt.waits && d < agentbridge.AppendAttemptTimeout:
				t.Fatalf("Write returned after %v, before the reply to a repeated append could come", d)
			case !tt.waits && d >= agentbridge.AppendAttemptTimeout:
				t.Fatalf("the first delta took %v: it waited for the %s append's reply", d, tt.muted)
			}
			if tt.then != nil {
				tt.then(t, b, w)
			}
			b.storedOnce(t, tt.cid, tt.muted)
		})
	}
}

// TestAppendSubjects: appends go to the dispatching broker; when it has
// gone (no responders) or the dispatch named none, to any broker.
func TestAppendSubjects(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	shared := b.subj.Append(testAgent)
	for _, tt := range []struct {
		cid, broker, want string
	}{
		{"conv_sticky", "", b.subj.AppendTo(testAgent, b.id)},
		{"conv_gone", "brk_gone", shared},
		{"conv_none", noBroker, shared},
	} {
		rec, errs := answerOnce(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
			return c.SendText(ctx, ev.MessageID, "answer")
		})
		w := b.startWorker(agentbridge.Options{}, rec.handle)
		b.dispatch(agentbridge.DispatchRequest{ConversationID: tt.cid, Broker: tt.broker})
		b.userMessage(tt.cid, "msg_1", "hi")
		if err := recv(t, errs, "the answer"); err != nil {
			t.Fatalf("%s: %v", tt.cid, err)
		}
		for range 3 { // thinking, delta, done
			if a := b.nextAppend(w.ID()); a.Subject != tt.want {
				t.Fatalf("%s: %s sent on %s, want %s", tt.cid, a.Sent.Type, a.Subject, tt.want)
			}
		}
		b.storedOnce(t, tt.cid, agentbridge.EventTextDone)
		w.Close()
	}
}

// TestEverythingIsV2: every message the SDK sends carries "v":2.
func TestEverythingIsV2(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_v2"
	hbs := b.subscribe(b.subj.Heartbeat(testAgent))
	reads := b.subscribe(b.subj.Read(testAgent))
	rec, errs := answerOnce(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		_, err := c.SendTranscript(ctx, "t", true)
		return errors.Join(err, c.SendText(ctx, ev.MessageID, "a"), c.ClearAudio(ctx),
			c.SendAction(ctx, agentbridge.ActionEnd, nil))
	})
	w := b.startWorker(agentbridge.Options{}, rec.handle)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
	b.userMessage(cid, "msg_1", "hi")
	if err := recv(t, errs, "the answers"); err != nil {
		t.Fatal(err)
	}
	for _, what := range []string{"heartbeat", "read"} {
		ch := hbs
		if what == "read" {
			ch = reads
		}
		if m := recv(t, ch, "a "+what); !strings.Contains(string(m.Data), `"v":2`) {
			t.Errorf("%s without v 2: %s", what, m.Data)
		}
	}
	for range 6 { // thinking, transcript, delta, done, clear_audio, action
		if a := b.nextAppend(w.ID()); !strings.Contains(string(a.Raw), `"v":2`) || a.Sent.V != agentbridge.Version {
			t.Errorf("append without v 2: %s", a.Raw)
		}
	}
}

// TestAppendWaitsForABroker: while no broker answers appends (no
// responders), they are repeated until one does; the dispatching broker
// having gone, they go to any broker from then on.
func TestAppendWaitsForABroker(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_no_broker"
	rec, errs := answerOnce(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		return c.SendText(ctx, ev.MessageID, "answer")
	})
	w, _ := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid})
	b.pauseAppends()
	inMsgs := func() int64 {
		v, err := b.srv.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return v.InMsgs
	}
	before := inMsgs()
	b.userMessage(cid, "msg_1", "anyone there?")
	// The message, the thinking state and the first delta were sent to
	// nobody.
	agenttest.Poll(t, waitFor, "appends sent while no broker listens", func() bool { return inMsgs() >= before+3 })
	select {
	case err := <-errs:
		t.Fatalf("SendText returned %v while no broker could store it", err)
	default:
	}
	b.resumeAppends()
	if err := recv(t, errs, "the answer"); err != nil {
		t.Fatalf("SendText: %v", err)
	}
	shared := b.subj.Append(testAgent)
	for range 3 {
		if a := b.nextAppend(w.ID()); a.Subject != shared {
			t.Fatalf("%s sent on %s after the dispatching broker went, want %s", a.Sent.Type, a.Subject, shared)
		}
	}
	b.storedOnce(t, cid, agentbridge.EventTextDelta, agentbridge.EventTextDone)
}

// TestStaleAppendAfterRedispatchResent: an append refused as stale because
// the conversation was dispatched to this same worker again meanwhile (a
// newer epoch) is sent again under the new epoch; the conversation goes on.
func TestStaleAppendAfterRedispatchResent(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_redispatched"
	b.refuseFirst(agentbridge.EventTextDelta, func() *agentbridge.ProtocolError {
		// The broker re-dispatches the conversation to its worker at
		// epoch 2 before it answers this epoch-1 append.
		req := mustJSON(t, agentbridge.DispatchRequest{V: agentbridge.Version, ConversationID: cid, Agent: testAgent,
			Mode: agentbridge.ModeChat, Epoch: 2, Broker: b.id})
		if reply, err := b.request(testAgent, req); err != nil || !reply.Accepted {
			return &agentbridge.ProtocolError{Code: agentbridge.CodeBadEvent, Message: "re-dispatch failed"}
		}
		b.mu.Lock()
		b.convs[cid].epoch = 2
		b.mu.Unlock()
		return &agentbridge.ProtocolError{Code: agentbridge.CodeStaleEpoch, Message: "epoch 1 < 2"}
	})
	rec, errs := answerOnce(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		return c.SendText(ctx, ev.MessageID, "answer")
	})
	w, c := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1})
	b.userMessage(cid, "msg_1", "hi")
	if err := recv(t, errs, "the answer"); err != nil {
		t.Fatalf("SendText: %v", err)
	}
	if c.Epoch() != 2 {
		t.Fatalf("epoch %d", c.Epoch())
	}
	for _, ev := range b.events(cid) {
		if ev.Type == agentbridge.EventTextDelta && ev.Epoch != 2 {
			t.Fatalf("delta stored under epoch %d", ev.Epoch)
		}
	}
	b.storedOnce(t, cid, agentbridge.EventTextDelta, agentbridge.EventTextDone)
	// Still held, still delivering.
	b.userMessage(cid, "msg_2", "still there?")
	rec.next(t, "msg_1")
	rec.next(t, "msg_2")
	holds(t, w, cid)
}
