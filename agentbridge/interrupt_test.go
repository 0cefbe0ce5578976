package agentbridge_test

import (
	"context"
	"errors"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
)

// TestReplyInterruptedWhileStreaming: a handler busy streaming a reply
// (not reading Events) learns of the broker's interrupt through
// Reply.Interrupted; the reply's next Write fails with ErrInterrupted, its
// Done is sent as interrupted (barge_in) under the broker's idempotency
// key, another reply is not touched, and the interrupt event then arrives
// on Events with heard_ms.
func TestReplyInterruptedWhileStreaming(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_interrupt"

	ids := make(chan [2]string, 1)
	errs := make(chan error, 8)
	other := make(chan bool, 1)
	rec := newRecorder()
	rec.onMessage = func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		r := c.NewReply(ev.MessageID)
		r2 := c.NewReply(ev.MessageID)
		errs <- r.Write(ctx, "Our opening hours are ")
		ids <- [2]string{r.ID(), r2.ID()}
		select {
		case <-r.Interrupted():
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-r2.Interrupted():
			other <- true
		default:
			other <- false
		}
		errs <- r.Write(ctx, "nine to five")
		errs <- r.Done(ctx)
		return r2.Done(ctx)
	}
	w := b.startWorker(agentbridge.Options{WorkerID: "wrk_i"}, rec.handle)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 3})
	b.userMessage(cid, "msg_q", "when are you open?")

	if err := recv(t, errs, "the first delta"); err != nil {
		t.Fatal(err)
	}
	reply := recv(t, ids, "the reply ids")
	heard := int64(900)
	b.in(cid, agentbridge.Event{Type: agentbridge.EventInterrupt, MessageID: reply[0], ReplyTo: "msg_q",
		Reason: agentbridge.ReasonBargeIn, HeardMS: &heard})

	if recv(t, other, "the other reply checked") {
		t.Fatal("an interrupt naming one reply interrupted another")
	}
	if err := recv(t, errs, "the write after the interrupt"); !errors.Is(err, agentbridge.ErrInterrupted) {
		t.Fatalf("Write after interrupt = %v, want ErrInterrupted", err)
	}
	if err := recv(t, errs, "Done after the interrupt"); err != nil {
		t.Fatalf("Done after interrupt = %v", err)
	}
	var done *agentbridge.Event
	for done == nil {
		a := b.nextAppend(w.ID())
		if a.Sent.Type == agentbridge.EventTextDone && a.Sent.MessageID == reply[0] {
			if a.MsgID != reply[0]+"/done" {
				t.Errorf("interrupted text_done sent with key %q", a.MsgID)
			}
			done = &a.Sent
		}
		if a.Sent.Type == agentbridge.EventTextDelta && a.Sent.Text == "nine to five" {
			t.Fatal("a delta was sent after the interrupt")
		}
	}
	if !done.Interrupted || done.Reason != agentbridge.ReasonBargeIn || done.Text != "Our opening hours are " {
		t.Fatalf("text_done after interrupt = %+v", done)
	}
	rec.next(t, "msg_q")
	ev := recv(t, rec.events, "the interrupt event")
	if ev.Type != agentbridge.EventInterrupt || ev.MessageID != reply[0] || ev.HeardMS == nil || *ev.HeardMS != 900 {
		t.Fatalf("interrupt delivered as %+v", ev)
	}
}
