package main

import (
	"context"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/echo"
	"github.com/parley-rtc/parley/cmd/internal/utterance"
)

// echoAgent is the demo agent (agentbridge/echo) that also hears: for each
// utterance an energy detector finds in the visitor's audio, it sends a
// transcript and an echo of it.
func echoAgent(ctx context.Context, c *agentbridge.Conversation) error {
	return echo.Agent{OnAudio: transcriber()}.Run(ctx, c)
}

// transcriber returns an echo.Agent audio hook that transcribes each
// utterance ("utterance 1 (0.40 s)") and echoes the transcript.
func transcriber() func(context.Context, *agentbridge.Conversation, agentbridge.AudioFrame) error {
	vad := utterance.NewDetector()
	return func(ctx context.Context, c *agentbridge.Conversation, f agentbridge.AudioFrame) error {
		u, ok := vad.Push(f)
		if !ok {
			return nil
		}
		id, err := c.SendTranscript(ctx, u.String(), true)
		if err != nil {
			return err
		}
		return echo.Reply(ctx, c, id, u.String())
	}
}
