package signalingtest

import (
	"context"

	"github.com/parley-rtc/parley/agentbridge"
)

// Pieces of the test agents that tests run with StartWorker.

// EachEvent is the loop of a test agent's handler: it calls fn with each
// live event of c, in order, until the events end or ctx is done (then it
// returns nil, also when ctx ends while fn runs) or fn returns an error,
// which it returns.
func EachEvent(ctx context.Context, c *agentbridge.Conversation, fn func(agentbridge.Event) error) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			if err := fn(ev); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

// OnMessages is a test agent's handler that calls fn with each visitor
// message of the conversation, in order, skipping the other events, until
// the events end (then it returns nil) or fn returns an error, which it
// returns.
func OnMessages(fn func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error) agentbridge.Handler {
	return func(ctx context.Context, c *agentbridge.Conversation) error {
		for ev := range c.Events() {
			if ev.Type != agentbridge.EventUserMessage {
				continue
			}
			if err := fn(ctx, c, ev); err != nil {
				return err
			}
		}
		return nil
	}
}

// SpeakUntilCut starts a reply to replyTo with text and holds it open
// until the visitor cuts in (a barge-in): it returns the reply and true
// then, and false when ctx ends first.
func SpeakUntilCut(ctx context.Context, c *agentbridge.Conversation, replyTo, text string) (*agentbridge.Reply, bool, error) {
	r := c.NewReply(replyTo)
	if err := r.Write(ctx, text); err != nil {
		return nil, false, err
	}
	select {
	case <-r.Interrupted():
		return r, true, nil
	case <-ctx.Done():
		return r, false, nil
	}
}
