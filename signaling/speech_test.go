package signaling_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestSpeechAndInterruptFrames: on a live voice call, the visitor's voice
// activity and a barge-in (reported to the broker as the media leg
// reports them) reach the visitor's WebSocket as speech and interrupt
// frames; the reply the agent was streaming ends with one done frame
// marked interrupted, the agent's handler sees Reply.Interrupted, and the
// history shows the reply interrupted.
func TestSpeechAndInterruptFrames(t *testing.T) {
	// The agent here is this test's, under the demo's agent name, whose
	// barge-in is off by default (the demo echo agent echoes the visitor).
	e := startEnv(t, noEcho, func(c *configs.Config) { c.Agents.BargeIn = map[string]string{} })
	interrupted := make(chan error, 1)
	nc := e.agentConn("echo")
	signalingtest.StartWorker(t, nc, "echo",
		func(ctx context.Context, c *agentbridge.Conversation) error {
			return signalingtest.EachEvent(ctx, c, func(ev agentbridge.Event) error {
				if ev.Type != agentbridge.EventUserMessage {
					return nil
				}
				if ev.Text != "when are you open?" {
					return c.SendText(ctx, ev.MessageID, "echo: "+ev.Text)
				}
				// Speaks on until the visitor cuts in.
				r, cut, err := signalingtest.SpeakUntilCut(ctx, c, ev.MessageID, "Our opening hours are ")
				if err != nil || !cut {
					return err
				}
				interrupted <- r.Write(ctx, "nine to five.")
				// An agent outside the SDK might stream on regardless.
				if _, err := c.Publish(ctx, agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: r.ID(),
					ReplyTo: ev.MessageID, Index: 1, Text: "nine to five."}); err != nil {
					return err
				}
				return r.Done(ctx)
			})
		})

	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	call := e.NewVoiceClient(s)
	call.WaitConnected()
	ws.Send(map[string]any{"type": "message", "body": "when are you open?", "client_message_id": "m-1"})
	chunk, _ := ws.Until("chunk")
	replyID := chunk.Str("message_id")

	v, ok := e.b.Voice(s.ID)
	if !ok {
		t.Fatal("no voice leg")
	}
	if set := v.Settings(); !set.BargeIn || set.ThresholdDBov != -45 || set.BargeInMin != 300*time.Millisecond {
		t.Fatalf("demo widget voice settings = %+v", set)
	}
	now := time.Now()
	v.Speech(broker.SpeechEvent{Kind: broker.SpeechStarted, At: now, Source: "audio_level", LevelDBov: -30})
	v.Speech(broker.SpeechEvent{Kind: broker.SpeechBargeIn, At: now.Add(300 * time.Millisecond), Source: "audio_level", HeardMS: 640})
	v.Speech(broker.SpeechEvent{Kind: broker.SpeechStopped, At: now.Add(time.Second), Source: "audio_level"})

	// The frames of interest, in log order; the rest (media_state, mode,
	// agent_state) are skipped.
	var got []string
	var interrupt, done frame
	for len(got) < 4 {
		f := ws.Next()
		switch f.Str("type") {
		case "speech":
			if f.Str("leg_id") != v.ID() {
				t.Fatalf("speech frame of another leg: %v", f)
			}
			got = append(got, "speech "+f.Str("state"))
		case "interrupt":
			interrupt = f
			got = append(got, "interrupt")
		case "done":
			done = f
			got = append(got, "done")
		case "chunk":
			t.Fatalf("a chunk after the interrupt: %v", f)
		}
	}
	want := []string{"speech started", "interrupt", "done", "speech stopped"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frames %q, want %q", got, want)
		}
	}
	if interrupt.Str("message_id") != replyID || interrupt["heard_ms"] != float64(640) || interrupt.Str("reason") != "barge_in" {
		t.Fatalf("interrupt frame = %v", interrupt)
	}
	if done.Str("message_id") != replyID || done["interrupted"] != true || done.Str("body") != "Our opening hours are " {
		t.Fatalf("done frame = %v", done)
	}
	select {
	case err := <-interrupted:
		if err == nil {
			t.Fatal("the agent's write after the interrupt was sent")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the agent's handler never saw the interrupt")
	}
	// The late delta is stored but never shown: up to the answer of the
	// next message, no frame of the interrupted reply comes.
	ws.Send(map[string]any{"type": "message", "body": "thanks", "client_message_id": "m-2"})
	for {
		f := ws.Next()
		if f.Str("message_id") == replyID {
			t.Fatalf("a frame of the interrupted reply after its done: %v", f)
		}
		if f.Str("type") == "done" {
			if f.Str("body") != "echo: thanks" {
				t.Fatalf("done = %v", f)
			}
			break
		}
	}
	msgs := e.History(s)
	if len(msgs) != 4 {
		t.Fatalf("history = %v", msgs)
	}
	if cut := msgs[1]; cut["id"] != replyID || cut["interrupted"] != true || cut["body"] != "Our opening hours are " {
		t.Fatalf("history = %v", msgs)
	}
}

// TestVoiceActivityOfACall: a real call (pion client, Opus) speaks two
// bursts of tone with a pause longer than the hangover between them. The
// leg's voice activity detection (from decoded audio: the client's offer
// has no RFC 6464 extension) brackets each burst with speech frames on the
// visitor's socket and user_speech_started/stopped events in the log, in
// order and paired.
func TestVoiceActivityOfACall(t *testing.T) {
	e := startEnv(t, noEcho)
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	call := e.NewVoiceClient(s)
	call.WaitConnected()
	call.Send(signalingtest.Speech(t, 2, 400, 800))

	var states []string
	for len(states) < 4 {
		f := ws.Next()
		if f.Str("type") == "speech" {
			states = append(states, f.Str("state"))
		}
	}
	if want := []string{"started", "stopped", "started", "stopped"}; !slices.Equal(states, want) {
		t.Fatalf("speech frames %q, want %q", states, want)
	}
	var logged []string
	for _, ev := range e.readLog(s.ConversationID) {
		switch ev.Type {
		case agentbridge.EventUserSpeechStarted, agentbridge.EventUserSpeechStopped:
			if ev.Source != "decode" || ev.At == nil {
				t.Errorf("%s: source %q, at %v; want decode and a time", ev.Type, ev.Source, ev.At)
			}
			logged = append(logged, ev.Type)
		}
	}
	want := []string{agentbridge.EventUserSpeechStarted, agentbridge.EventUserSpeechStopped,
		agentbridge.EventUserSpeechStarted, agentbridge.EventUserSpeechStopped}
	if !slices.Equal(logged, want) {
		t.Fatalf("logged %q, want %q", logged, want)
	}
	mfs := e.Scrape()
	for _, kind := range []string{"started", "stopped"} {
		if n, _ := signalingtest.MetricValue(mfs, "parley_voice_speech_events_total", "kind", kind, "source", "decode"); n != 2 {
			t.Errorf("parley_voice_speech_events_total{kind=%q,source=decode} = %v, want 2", kind, n)
		}
	}
}
