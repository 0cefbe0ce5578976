package agenttest

import (
	"context"

	"github.com/parley-rtc/parley/agentbridge"
)

// Echo is an agentbridge.Handler that answers every visitor message with
// "echo: " and its text, sent whole, until the conversation ends. It is
// the chat half of Parley's demo echo agent (`parley agent echo`), which
// also streams its replies in chunks, echoes audio, transcribes utterances
// and reports its state: a test that needs those runs that agent.
func Echo(ctx context.Context, c *agentbridge.Conversation) error {
	return Answer("echo: ")(ctx, c)
}

// Answer returns an agentbridge.Handler that answers every visitor message
// with prefix and its text, sent whole, until the conversation ends.
func Answer(prefix string) agentbridge.Handler {
	return func(ctx context.Context, c *agentbridge.Conversation) error {
		for ev := range c.Events() {
			if ev.Type != agentbridge.EventUserMessage {
				continue
			}
			if err := c.SendText(ctx, ev.MessageID, prefix+ev.Text); err != nil {
				return err
			}
		}
		return nil
	}
}
