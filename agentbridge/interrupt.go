package agentbridge

import (
	"context"
	"sync"
)

// ReasonBargeIn marks an interrupt (and the reply it cut) caused by the
// visitor speaking over the agent's audio.
const ReasonBargeIn = "barge_in"

// openReplies are a conversation's replies in progress, so that an
// interrupt reaches the one it names while its handler is still writing
// it (the handler may be busy streaming and not reading Events). The
// feed goroutine interrupts; handlers add and remove. A reply its handler
// never finishes stays until the conversation goes.
type openReplies struct {
	mu sync.Mutex
	m  map[string]*Reply
}

func (o *openReplies) add(r *Reply) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[string]*Reply)
	}
	o.m[r.id] = r
}

func (o *openReplies) remove(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.m, id)
}

// interrupt cuts the open reply id, or every open reply when id is empty
// (the broker names none when the agent spoke audio without text).
func (o *openReplies) interrupt(id string) {
	o.mu.Lock()
	var cut []*Reply
	for rid, r := range o.m {
		if id == "" || rid == id {
			cut = append(cut, r)
		}
	}
	o.mu.Unlock()
	for _, r := range cut {
		r.cut()
	}
}

// onInterrupt is the feed's handling of an interrupt event, before the
// event is queued on Events: the reply it names stops at once.
func (c *Conversation) onInterrupt(ev Event) {
	c.replies.interrupt(ev.MessageID)
}

// Interrupted is closed when the broker interrupted the reply: the visitor
// spoke over it (barge-in; the interrupt event also arrives on Events,
// with heard_ms). The broker has already closed the reply in the log as
// interrupted; Write then fails with ErrInterrupted, and Done records it
// as interrupted. A handler streaming a reply (from a model, say) selects
// on it to stop generating.
func (r *Reply) Interrupted() <-chan struct{} { return r.interrupted }

// cut marks the reply interrupted; it is idempotent.
func (r *Reply) cut() { r.cutOnce.Do(func() { close(r.interrupted) }) }

// isInterrupted reports whether the broker interrupted the reply.
func (r *Reply) isInterrupted() bool {
	select {
	case <-r.interrupted:
		return true
	default:
		return false
	}
}

// finishInterrupted completes a reply the broker interrupted: the text_done
// is marked interrupted (reason barge_in) whatever the handler asked. It
// carries the same idempotency key as the broker's own, so it is stored
// once.
func (r *Reply) finishInterrupted(ctx context.Context) error {
	return r.finish(ctx, true, ReasonBargeIn)
}
