// Package echo is Parley's demo agent, small enough to read as an example
// of the SDK: it answers every visitor message with "echo: <text>" (one
// the visitor spoke, through Parley's speech pipeline, with "You said:
// <text>."), streamed in three chunks, sends every audio frame back
// unchanged and
// acknowledges mode changes with its state. `parley agent echo` runs it
// with an utterance detector on top (transcripts of what it hears), and
// tests run it as a real agent.
package echo

import (
	"context"
	"strings"
	"unicode/utf8"

	"github.com/parley-rtc/parley/agentbridge"
)

// Chunks is how many chunks a reply is streamed in.
const Chunks = 3

// Agent is the echo agent; its zero value is ready. The hooks extend it.
type Agent struct {
	// OnAudio, if set, sees every audio frame after it was sent back.
	OnAudio func(ctx context.Context, c *agentbridge.Conversation, f agentbridge.AudioFrame) error
	// OnMessage, if set, answers a visitor message instead of the echo.
	OnMessage func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error
}

// Run is an agentbridge.Handler: it serves c until the conversation ends.
func (a Agent) Run(ctx context.Context, c *agentbridge.Conversation) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-c.Audio():
			_ = c.SendAudio(f) // audio is best effort
			if a.OnAudio != nil {
				if err := a.OnAudio(ctx, c, f); err != nil {
					return err
				}
			}
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			if err := a.handle(ctx, c, ev); err != nil {
				return err
			}
		}
	}
}

func (a Agent) handle(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
	switch ev.Type {
	case agentbridge.EventUserMessage:
		if a.OnMessage != nil {
			return a.OnMessage(ctx, c, ev)
		}
		if ev.Via == agentbridge.ModeVoice {
			return Spoken(ctx, c, ev)
		}
		return Reply(ctx, c, ev.MessageID, ev.Text)
	case agentbridge.EventModeChanged:
		state := agentbridge.StateIdle
		if ev.Mode == agentbridge.ModeVoice {
			state = agentbridge.StateListening
		}
		return c.SetState(ctx, state, "")
	}
	return nil
}

// Reply streams "echo: <text>" in Chunks chunks as the reply to replyTo.
func Reply(ctx context.Context, c *agentbridge.Conversation, replyTo, text string) error {
	r := c.NewReply(replyTo)
	for _, part := range Split("echo: "+text, Chunks) {
		if err := r.Write(ctx, part); err != nil {
			return err
		}
	}
	return r.Done(ctx)
}

// Spoken answers a voice turn (a user_message via voice, which Parley's
// speech pipeline heard and will speak the answer of): "You said: <text>.",
// or, for a turn the pipeline could not transcribe (no text, a reason),
// that it was not caught.
func Spoken(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
	if strings.TrimSpace(ev.Text) == "" {
		return c.SendText(ctx, ev.MessageID, "Sorry, I didn't catch that.")
	}
	r := c.NewReply(ev.MessageID)
	text := "You said: " + strings.TrimRight(ev.Text, ".!? ") + "."
	for _, part := range Split(text, Chunks) {
		if err := r.Write(ctx, part); err != nil {
			return err
		}
	}
	return r.Done(ctx)
}

// Split cuts s into at most n parts of similar length on rune boundaries.
func Split(s string, n int) []string {
	runes := utf8.RuneCountInString(s)
	size := max((runes+n-1)/n, 1)
	parts := make([]string, 0, n)
	for len(s) > 0 {
		i, count := 0, 0
		for i < len(s) && count < size {
			_, w := utf8.DecodeRuneInString(s[i:])
			i += w
			count++
		}
		parts = append(parts, s[:i])
		s = s[i:]
	}
	return parts
}
