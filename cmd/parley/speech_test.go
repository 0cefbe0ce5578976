package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media/speech"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// withSpeech runs the agents' speech pipelines (the demo's default, which
// the test config turns off).
func withSpeech(c *configs.Config) { c.Speech.Enabled = true }

// speakTurn says phrase on call, then enough silence to end the
// utterance, and returns the reply the agent wrote to it (the WebSocket's
// done frame), after the visitor's own turn came back as heard.
func speakTurn(t *testing.T, ws *signalingtest.WSClient, call *signalingtest.VoiceClient, f *speech.Flite, phrase string) (heard, reply signalingtest.Frame) {
	t.Helper()
	frames := append(signalingtest.Quiet(t, 10), signalingtest.Say(t, f, phrase)...)
	go call.Send(append(frames, signalingtest.Quiet(t, 50)...)) // the socket is read meanwhile
	for {
		fr := ws.Next()
		switch fr.Str("type") {
		case "message":
			if fr.Str("via") == "voice" {
				heard = fr
			}
		case "done":
			if heard != nil && fr.Str("reply_to") == heard.Str("message_id") {
				return heard, fr
			}
		}
	}
}

// waitSpoken waits until the agent audio received since from stops
// growing, and returns it.
func waitSpoken(t *testing.T, call *signalingtest.VoiceClient, from int) [][]byte {
	t.Helper()
	last, still := -1, 0
	agenttest.Poll(t, 30*time.Second, "the spoken reply", func() bool {
		n := len(call.Heard())
		if n == last && n > from+25 {
			still++
		} else {
			still = 0
		}
		last = n
		return still >= 3 // 3 polls without a packet, after half a second of audio
	})
	return call.Heard()[from:]
}

// TestVoiceTurnsWithSpeechPipeline: the demo echo agent, which works in
// text only, holds a voice call through the speech pipeline. The visitor
// speaks (flite's voice, through a real pion peer): the agent receives a
// user_message via voice with the words, the visitor's widget sees what
// was heard, and the reply is spoken back: pocketsphinx hears it in the
// audio the visitor's peer received. Then the visitor switches to chat and
// back to voice: one conversation, its transcript complete and in order.
func TestVoiceTurnsWithSpeechPipeline(t *testing.T) {
	ps, f := signalingtest.RequireSpeech(t)
	e := startEnv(t, withSpeech)
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	call := e.NewVoiceClient(s)
	call.WaitConnected()

	// Word error bounds, measured: flite → Opus → pocketsphinx hears these
	// phrases exactly (TestFliteToPocketsphinx); one word in four may go
	// wrong across the call's codec, jitter and VAD trimming.
	const maxWER = 0.25
	heard, reply := speakTurn(t, ws, call, f, "what are your opening hours")
	if w := speech.WordErrorRate("what are your opening hours", heard.Str("body")); w > maxWER {
		t.Fatalf("heard %q (WER %.2f)", heard.Str("body"), w)
	}
	if body := reply.Str("body"); !strings.HasPrefix(body, "You said: ") {
		t.Fatalf("reply %q", body)
	}
	spoken := waitSpoken(t, call, 0)
	tr, err := ps.Transcribe(context.Background(), signalingtest.Decode(t, spoken))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ToLower(strings.Trim(reply.Str("body"), "."))
	want = strings.NewReplacer(":", "", ".", "").Replace(want)
	t.Logf("visitor said %q, heard %q; agent wrote %q, %d packets spoken, heard back %q",
		"what are your opening hours", heard.Str("body"), reply.Str("body"), len(spoken), tr.Text)
	if w := speech.WordErrorRate(want, tr.Text); w > maxWER {
		t.Fatalf("the spoken reply was heard as %q, want %q (WER %.2f)", tr.Text, want, w)
	}

	// Chat in the same conversation, with the call hung up.
	call.Close()
	ws.Until("mode")        // back to chat
	ws.Until("agent_state") // the echo agent says it is idle
	ws.Send(map[string]any{"type": "message", "body": "and in chat?", "client_message_id": "c-1"})
	signalingtest.ExpectReply(t, ws, "c-1", "echo: and in chat?")

	// Voice again.
	call2 := e.NewVoiceClient(s)
	call2.WaitConnected()
	heard2, reply2 := speakTurn(t, ws, call2, f, "where is my order")
	if w := speech.WordErrorRate("where is my order", heard2.Str("body")); w > maxWER {
		t.Fatalf("heard %q (WER %.2f)", heard2.Str("body"), w)
	}

	got := signalingtest.Transcript(e.History(s))
	wantTr := []string{
		"visitor: " + heard.Str("body"), "agent: " + reply.Str("body"),
		"visitor: and in chat?", "agent: echo: and in chat?",
		"visitor: " + heard2.Str("body"), "agent: " + reply2.Str("body"),
	}
	if !slices.Equal(got, wantTr) {
		t.Fatalf("transcript:\n%q\nwant\n%q", got, wantTr)
	}
	var vias []string
	for _, m := range e.History(s) {
		vias = append(vias, m["via"].(string))
	}
	if want := []string{"voice", "voice", "chat", "chat", "voice", "voice"}; !slices.Equal(vias, want) {
		t.Fatalf("vias %q, want %q", vias, want)
	}
}

// TestVoiceTurnUnheard: a speech-to-text provider that is down loses no
// turn: the utterance is logged as a voice turn without text, marked with
// why (speech_down), the visitor's widget is told, the agent still gets
// the turn and answers it, and the answer is spoken. The media path never
// waits for the provider.
func TestVoiceTurnUnheard(t *testing.T) {
	_, f := signalingtest.RequireSpeech(t)
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	e := startEnv(t, withSpeech, func(c *configs.Config) {
		c.Agents.Speech = map[string]configs.AgentSpeech{"echo": {STT: configs.SpeechOpenAI, TTS: configs.SpeechFlite}}
		c.Speech.OpenAI.BaseURL = url
	})
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	call := e.NewVoiceClient(s)
	call.WaitConnected()
	heard, reply := speakTurn(t, ws, call, f, "hello can you hear me")
	if heard.Str("body") != "" || heard.Str("reason") != "speech_down" {
		t.Fatalf("the unheard turn reached the widget as %v", heard)
	}
	if reply.Str("body") != "Sorry, I didn't catch that." {
		t.Fatalf("reply %q", reply.Str("body"))
	}
	if spoken := waitSpoken(t, call, 0); len(spoken) < 25 {
		t.Fatalf("%d packets of the answer spoken", len(spoken))
	}
	h := e.History(s)
	if len(h) != 2 || h[0]["unheard"] != "speech_down" || h[0]["via"] != "voice" || h[0]["body"] != "" {
		t.Fatalf("history %v", h)
	}
	if !strings.Contains(e.logs.String(), `"code":"down"`) {
		t.Fatalf("the provider failure was not logged with its code")
	}
}
