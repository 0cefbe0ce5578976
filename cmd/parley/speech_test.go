package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/cmd/internal/assistant"
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
// growing, and returns it. A reply plays as one frame every 20 ms; it has
// ended when more than half a second of audio came and then nothing for
// spokenGap. The gap is in time, not in polls: a poll comes every 10 ms,
// and on a busy machine a pause of a few polls between two frames is a
// scheduling hiccup, not the end (the wait used to stop there, and a
// reply of 137 frames was cut at 29).
func waitSpoken(t *testing.T, call *signalingtest.VoiceClient, from int) [][]byte {
	t.Helper()
	const spokenGap = 1500 * time.Millisecond
	last, since := -1, time.Now()
	agenttest.Poll(t, 30*time.Second, "the spoken reply", func() bool {
		n := len(call.Heard())
		if n != last {
			last, since = n, time.Now()
		}
		return n > from+25 && time.Since(since) >= spokenGap
	})
	return call.Heard()[from:]
}

// TestVoiceTurnsWithSpeechPipeline: the demo echo agent, which works in
// text only, holds a voice call through the speech pipeline. The visitor
// speaks (flite's voice, through a real pion peer): the agent receives a
// user_message via voice with the words, the visitor's widget sees what
// was heard, and the reply is spoken back: pocketsphinx hears it in the
// audio the visitor's peer received. Then the visitor switches to chat, back
// to voice, and to chat again while a reply is being spoken: one
// conversation, its transcript complete and in order.
func TestVoiceTurnsWithSpeechPipeline(t *testing.T) {
	ps, f := signalingtest.RequireSpeech(t)
	e := startEnv(t, withSpeech)
	s, ws, call := e.voiceSession()

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
	// The caption of the sentence being spoken, timed to when it plays.
	caption, _ := ws.Until("caption")
	startsIn, _ := caption["starts_in_ms"].(float64)
	dur, _ := caption["duration_ms"].(float64)
	if caption.Str("message_id") != reply.Str("message_id") || caption.Str("text") != reply.Str("body") ||
		startsIn < -500 || startsIn > 2000 || dur < 1000 || dur > 5000 {
		t.Fatalf("caption %v of reply %v", caption, reply)
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
	call.HangUp(s.Token)
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
	// Back to chat mid-reply: the visitor hangs up while the answer is
	// being spoken. Hanging up is not talking over it: the reply stays
	// whole in the transcript, and the chat goes on.
	agenttest.Poll(t, 30*time.Second, "the second reply playing", func() bool { return len(call2.Heard()) >= 10 })
	call2.HangUp(s.Token)
	ws.Until("mode")
	ws.Until("agent_state")
	ws.Send(map[string]any{"type": "message", "body": "still there?", "client_message_id": "c-2"})
	signalingtest.ExpectReply(t, ws, "c-2", "echo: still there?")

	h := e.History(s)
	got := signalingtest.Transcript(h)
	wantTr := []string{
		"visitor: " + heard.Str("body"), "agent: " + reply.Str("body"),
		"visitor: and in chat?", "agent: echo: and in chat?",
		"visitor: " + heard2.Str("body"), "agent: " + reply2.Str("body"),
		"visitor: still there?", "agent: echo: still there?",
	}
	if !slices.Equal(got, wantTr) {
		t.Fatalf("transcript:\n%q\nwant\n%q", got, wantTr)
	}
	var vias []string
	for _, m := range h {
		vias = append(vias, m["via"].(string))
		if m["interrupted"] == true {
			t.Fatalf("a reply interrupted: %v", m)
		}
	}
	if want := []string{"voice", "voice", "chat", "chat", "voice", "voice", "chat", "chat"}; !slices.Equal(vias, want) {
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
	s, ws, call := e.voiceSession()
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

// longReply is a reply of several sentences, about 12 s spoken.
const longReply = "Our store opens at nine in the morning. It closes at six in the evening. " +
	"On Saturdays we open at ten and close at four. We are closed on Sundays and public holidays. " +
	"You can also order online at any time of the day or night."

// TestBargeInOnSpokenReply: the pipeline speaks a long reply of a text
// agent; a cough over it (100 ms, under barge_in_min_ms) changes nothing;
// the visitor then talks over it: playout stops at once, the interrupt
// carries how much was heard, in ms and in words, and the history shows
// the reply as interrupted with the words heard, the text written kept
// aside.
func TestBargeInOnSpokenReply(t *testing.T) {
	_, f := signalingtest.RequireSpeech(t)
	e := startEnv(t, withSpeech, noEcho)
	e.startAgent(func(ctx context.Context, c *agentbridge.Conversation) error {
		return signalingtest.EachEvent(ctx, c, func(ev agentbridge.Event) error {
			if ev.Type == agentbridge.EventUserMessage {
				return c.SendText(ctx, ev.MessageID, longReply)
			}
			return nil
		})
	})
	s, ws, call := e.voiceSession()
	ws.Send(map[string]any{"type": "message", "body": "when are you open?", "client_message_id": "c-1"})
	done, _ := ws.Until("done")
	replyID := done.Str("message_id")

	agenttest.Poll(t, 30*time.Second, "1.5 s of the reply spoken", func() bool { return len(call.Heard()) >= 75 })
	call.Send(signalingtest.Tone(t, 1, 5, 25, 12000)) // a cough, then quiet
	agenttest.Poll(t, 30*time.Second, "3 s of the reply spoken", func() bool { return len(call.Heard()) >= 150 })

	// Talk over it; the visitor's speech stays on until the interrupt
	// comes back.
	talk := append(signalingtest.Say(t, f, "hello can you hear me"), signalingtest.Quiet(t, 50)...)
	talkAt, heardAtTalk := time.Now(), len(call.Heard())
	go call.Send(talk)
	interrupt, before := ws.Until("interrupt")
	atInterrupt := len(call.Heard())
	t.Logf("talking for %v, agent packets %d at the start, %d at the interrupt", time.Since(talkAt), heardAtTalk, atInterrupt)

	for _, fr := range before {
		if fr.Str("type") == "interrupt" {
			t.Fatalf("the cough interrupted: %v", fr)
		}
	}
	heardText, _ := interrupt["heard_text"].(string)
	heardMS, _ := interrupt["heard_ms"].(float64)
	if interrupt.Str("message_id") != replyID || heardMS < 3000 || heardMS > 12000 {
		t.Fatalf("interrupt %v: want reply %s, heard 3..12 s", interrupt, replyID)
	}
	// What the visitor's peer received is what the interrupt says was
	// heard, give or take the packets in flight.
	if d := int(heardMS)/20 - atInterrupt; d < -5 || d > 5 {
		t.Fatalf("heard_ms %.0f, but the visitor received %d frames (%d ms)", heardMS, atInterrupt, 20*atInterrupt)
	}
	if heardText == "" || !strings.HasPrefix(longReply, heardText) || len(heardText) >= len(longReply) {
		t.Fatalf("heard_text %q: want a beginning of the reply", heardText)
	}
	t.Logf("barge-in after %.0f ms of the reply: heard %q", heardMS, heardText)

	// The visitor's speech becomes a turn; by then the cut reply has long
	// stopped playing (its later sentences were never queued).
	heard, _ := ws.Until("message")
	after := len(call.Heard()) - atInterrupt
	if heard.Str("via") != "voice" {
		t.Fatalf("the visitor's turn %v", heard)
	}
	if after > 25 {
		t.Fatalf("%d agent packets arrived after the interrupt before the next turn: the cut reply kept playing", after)
	}
	h := e.History(s)
	var reply map[string]any
	for _, m := range h {
		if m["id"] == replyID {
			reply = m
		}
	}
	if reply == nil || reply["interrupted"] != true || reply["body"] != heardText || reply["written"] != longReply {
		t.Fatalf("the interrupted reply in history: %v", reply)
	}
}

// TestAssistantOnACall: the assistant agent (text only) on a voice call
// through the speech pipeline. Its reply is spoken; the visitor cuts in;
// the model's next request carries what the visitor heard of that reply,
// not the whole text, and the words the visitor said, as heard. A voice
// turn the pipeline could not make out is answered without asking the
// model.
func TestAssistantOnACall(t *testing.T) {
	_, f := signalingtest.RequireSpeech(t)
	e := startEnv(t, withSpeech, noEcho)
	ep := newChatEndpoint(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) {
		sse(w, true, longReply)
	})
	e.startAssistant(ep, 5*time.Second, &syncBuffer{})
	s, ws, call := e.voiceSession()
	ws.Send(map[string]any{"type": "message", "body": "when are you open?", "client_message_id": "c-1"})
	ws.Until("done")
	agenttest.Poll(t, 30*time.Second, "2 s of the reply spoken", func() bool { return len(call.Heard()) >= 100 })
	go call.Send(append(signalingtest.Say(t, f, "hello can you hear me"), signalingtest.Quiet(t, 50)...))
	interrupt, _ := ws.Until("interrupt")
	heardText, _ := interrupt["heard_text"].(string)
	heard, _ := ws.Until("message")
	if heardText == "" || heard.Str("via") != "voice" || heard.Str("body") == "" {
		t.Fatalf("interrupt %v, turn %v", interrupt, heard)
	}
	agenttest.Poll(t, 30*time.Second, "the model asked about the spoken turn", func() bool { return len(ep.requests()) == 2 })
	got := roles(ep.requests()[1].Messages)
	want := []string{"system: Be brief.", "user: when are you open?", "assistant: " + heardText, "user: " + heard.Str("body")}
	if !slices.Equal(got, want) {
		t.Fatalf("the model's context:\n%q\nwant\n%q", got, want)
	}

	v, ok := e.app.broker.Voice(s.ID)
	if !ok {
		t.Fatal("no voice leg")
	}
	id, err := v.Heard(t.Context(), broker.VoiceTurn{Unheard: broker.UnheardTimeout, Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	for {
		fr, _ := ws.Until("done")
		if fr.Str("reply_to") == id {
			if fr.Str("body") != assistant.NotHeard {
				t.Fatalf("the unheard turn was answered %q", fr.Str("body"))
			}
			break
		}
	}
	if n := len(ep.requests()); n != 2 {
		t.Fatalf("%d requests to the model: the unheard turn reached it", n)
	}
}

// TestDemoAssistant: with an assistant endpoint configured, the
// in-process demo agent is the assistant, not the echo.
func TestDemoAssistant(t *testing.T) {
	ep := newChatEndpoint(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) {
		sse(w, true, "We open at nine.")
	})
	e := startEnv(t, func(c *configs.Config) {
		c.EchoAgent.Assistant = configs.AssistantConfig{BaseURL: ep.URL + "/v1", Model: "demo-model"}
	})
	e.chatSessionReply("d-1", "when are you open?", "We open at nine.")
	if r := ep.requests(); len(r) != 1 || r[0].Model != "demo-model" {
		t.Fatalf("requests %+v", r)
	}
	if !strings.Contains(e.logs.String(), `"msg":"demo agent: the assistant"`) {
		t.Fatal("the start did not say the demo agent is the assistant")
	}
}

// TestServeWithoutSpeechTools: on a machine without the offline speech
// engines, `parley serve` still starts and says that voice runs without
// speech (and what installs it); with them it names the pipeline.
func TestServeWithoutSpeechTools(t *testing.T) {
	p := startProcEnv(t, []string{"PATH=" + t.TempDir()}, "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:-1", "--log-format", "json")
	p.line(readyLine)
	// stderr is its own pipe: what was logged before the ready line on
	// stdout may still be on its way.
	agenttest.Poll(t, 10*time.Second, "the start-up log up to ready", func() bool {
		return strings.Contains(p.stderr.String(), `"msg":"parley ready"`)
	})
	logs := p.stderr.String()
	for _, want := range []string{"voice runs without speech-to-text", "voice runs without text-to-speech", "make speech-tools"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("no %q in the start-up log:\n%s", want, tail(logs, 3000))
		}
	}
	if strings.Contains(logs, `"msg":"speech pipeline"`) {
		t.Fatalf("a speech pipeline without engines:\n%s", tail(logs, 3000))
	}

	signalingtest.RequireSpeech(t)
	p = startProc(t, "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1", "--log-format", "json")
	p.line(readyLine)
	agenttest.Poll(t, 10*time.Second, "the start-up log up to ready", func() bool {
		return strings.Contains(p.stderr.String(), `"msg":"parley ready"`)
	})
	if logs := p.stderr.String(); !strings.Contains(logs, `"msg":"speech pipeline","agent":"echo","stt":"pocketsphinx","tts":"flite"`) {
		t.Fatalf("the start-up log does not name the demo's speech pipeline:\n%s", tail(logs, 3000))
	}
}
