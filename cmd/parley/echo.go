package main

import (
	"context"
	"unicode/utf8"

	"github.com/parley-rtc/parley/agentbridge"
)

// echoChunks is how many chunks the echo agent streams a reply in.
const echoChunks = 3

// echoAgent answers every visitor message with "echo: <text>", streamed in
// a few chunks, sends every audio frame back unchanged, and acknowledges
// mode changes with its state.
func echoAgent(ctx context.Context, c *agentbridge.Conversation) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-c.Audio():
			_ = c.SendAudio(f) // audio is best effort
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			switch ev.Type {
			case agentbridge.EventUserMessage:
				r := c.NewReply(ev.MessageID)
				for _, part := range split("echo: "+ev.Text, echoChunks) {
					if err := r.Write(ctx, part); err != nil {
						return err
					}
				}
				if err := r.Done(ctx); err != nil {
					return err
				}
			case agentbridge.EventModeChanged:
				state := agentbridge.StateIdle
				if ev.Mode == agentbridge.ModeVoice {
					state = agentbridge.StateListening
				}
				if err := c.SetState(ctx, state, ""); err != nil {
					return err
				}
			}
		}
	}
}

// split cuts s into at most n parts of similar length on rune boundaries.
func split(s string, n int) []string {
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
