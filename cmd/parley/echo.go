package main

import (
	"context"
	"unicode/utf8"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/cmd/internal/utterance"
)

// echoChunks is how many chunks the echo agent streams a reply in.
const echoChunks = 3

// echoAgent answers every visitor message with "echo: <text>", streamed in
// a few chunks; sends every audio frame back unchanged and, for each
// utterance an energy detector finds, a transcript and an echo of it; and
// acknowledges mode changes with its state.
func echoAgent(ctx context.Context, c *agentbridge.Conversation) error {
	vad := utterance.NewDetector()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-c.Audio():
			_ = c.SendAudio(f) // audio is best effort
			if u, ok := vad.Push(f); ok {
				id, err := c.SendTranscript(ctx, u.String(), true)
				if err == nil {
					err = echo(ctx, c, id, u.String())
				}
				if err != nil {
					return err
				}
			}
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			switch ev.Type {
			case agentbridge.EventUserMessage:
				if err := echo(ctx, c, ev.MessageID, ev.Text); err != nil {
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

// echo streams "echo: <text>" as the reply to replyTo.
func echo(ctx context.Context, c *agentbridge.Conversation, replyTo, text string) error {
	r := c.NewReply(replyTo)
	for _, part := range split("echo: "+text, echoChunks) {
		if err := r.Write(ctx, part); err != nil {
			return err
		}
	}
	return r.Done(ctx)
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
