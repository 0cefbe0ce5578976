package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// Voice in the widget: a call from Chromium, what the speech pipeline
// reports on a call, and a page that blocks the microphone. (Subtests of
// TestWidget, widget_test.go.)

func testWidgetVoice(t *testing.T, s *site) {
	e := s.e
	b := s.chatTab(t, "/")
	sess := b.session()
	if sess.VoicePath == "" {
		t.Fatalf("session without voice_path: %+v", sess)
	}
	tap := e.tapAudio(e.app.broker.Subjects().InAudio(siteAgent, sess.ConversationID))
	b.mustEval(`Parley._debug.audioConstraints = {echoCancellation: false, noiseSuppression: false, autoGainControl: false}; true`, nil)
	b.click("button.mic")
	clicked := time.Now()
	agenttest.Poll(t, 15*time.Second, "the first mic frame on NATS", func() bool { return len(tap.Frames()) > 0 })
	t.Logf("click → first mic frame on NATS: %v", time.Since(clicked).Round(time.Millisecond))
	b.waitJS(10*time.Second, "the call to connect", widgetJS+`.call === "connected" && `+widgetJS+`.mode === "voice"
		&& !`+sq(".callbar")+`.hidden && `+sq("button.mic")+`.getAttribute("aria-pressed") === "true"`)
	waited := b.waitJS(10*time.Second, "the echo in the page (inbound-rtp packetsReceived > 0)",
		`(async () => { const s = await `+statsJS+`; return s && s.packetsReceived > 0; })()`)
	var st inboundAudio
	b.mustEval(statsJS, &st)
	t.Logf("page inbound-rtp %v after connecting: %+v", waited.Round(time.Millisecond), st)
	// Trickle ICE: the offer went first, the candidates after it in
	// PATCHes, a=end-of-candidates last.
	var trickle struct {
		Patches, Candidates int
		End                 bool
	}
	b.waitJS(5*time.Second, "a=end-of-candidates", widgetJS+`.trickle.end`)
	b.mustEval(widgetJS+`.trickle`, &trickle)
	patched := regexp.MustCompile(`"method":"PATCH","path":"/v1/sessions/` + sess.SessionID + `/webrtc/leg_[^"]+","status":204`)
	if trickle.Patches == 0 || trickle.Candidates == 0 || !patched.MatchString(e.logs.String()) {
		t.Fatalf("trickle ICE: page %+v; server saw a 204 PATCH: %v", trickle, patched.MatchString(e.logs.String()))
	}
	t.Logf("trickle ICE: %+v", trickle)
	// Live captions: what the agent heard, and its answer.
	b.waitJS(10*time.Second, "a transcript and its caption", voiceLinesJS+` > 0
		&& `+sq(".cap-agent")+`.textContent.startsWith("echo: utterance 1 (")`)
	b.viewportShot("widget-voice.png")

	// One tap back to text: the same conversation goes on.
	b.backToText(e, sess.SessionID, "Parley._debug.pc()")
	var spoken int
	b.mustEval(voiceLinesJS, &spoken)
	b.typeMessage("typed between the calls")
	b.waitJS(10*time.Second, "the echo of the typed message", hasLine("agent", "echo: typed between the calls"))
	// And voice again.
	b.click("button.mic")
	b.waitJS(15*time.Second, "the second call", widgetJS+`.call === "connected"`)
	b.waitJS(10*time.Second, "a transcript in the second call", fmt.Sprintf("%s > %d", voiceLinesJS, spoken))
	b.click(".totext")
	b.waitJS(10*time.Second, "the second switch to text", widgetJS+`.call === "ended" && `+widgetJS+`.mode === "chat"`)

	// One transcript: the history has every turn, in the order the
	// widget showed them, voice turns before and after the typed one.
	var hist []string
	agenttest.Poll(t, 10*time.Second, "the widget and the history to agree", func() bool {
		hist = signalingtest.Transcript(e.History(session{ID: sess.SessionID, Token: b.token()}))
		return strings.Join(hist, "|") == strings.Join(b.lines(), "|")
	})
	typed := -1
	for i, l := range hist {
		if l == "visitor: typed between the calls" {
			typed = i
		}
	}
	if typed < 2 || typed > len(hist)-3 || !strings.HasPrefix(hist[0], "visitor: utterance 1 (") ||
		!strings.HasPrefix(hist[len(hist)-1], "agent: echo: utterance ") {
		t.Fatalf("history (%d turns): %q", len(hist), hist)
	}
	t.Logf("one conversation, %d turns: %d before the typed one, %d after", len(hist), typed, len(hist)-typed-1)
}

func testWidgetMicBlocked(t *testing.T, s *site) {
	e := s.e
	b := s.chatTab(t, "/blocked") // Permissions-Policy: microphone=()
	b.click("button.mic")
	b.waitJS(5*time.Second, "the diagnosis", widgetJS+`.micError === "policy" && `+widgetJS+`.call === "failed"
		&& `+hasLine("mic-error", "Mic access is blocked. You can still ask questions by typing below.")+`
		&& Parley._debug.shadow().activeElement === `+sq("textarea"))
	if !b.consoleHas("[parley:mic] Microphone blocked by this page's Permissions-Policy header") {
		t.Fatal("no [parley:mic] console line")
	}
	sess := b.session()
	if _, ok := e.app.broker.Voice(sess.SessionID); ok {
		t.Fatal("a voice leg despite the blocked microphone")
	}
	// Text goes on.
	b.typeMessage("typing instead")
	b.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: typing instead"))
	b.viewportShot("widget-mic-blocked.png")
}

// testWidgetSpeech: on a call, the visitor's voice activity and a barge-in
// (reported to the broker as the media leg reports them) show in the
// widget: "Hearing you…" on the call bar while the visitor speaks, and the
// reply being spoken marked "(interrupted)". Turns the speech pipeline
// heard (reported as it reports them) show as the visitor's, marked as
// said in the call; one it could not hear, as a note saying why; a reply
// cut while the broker spoke it, as the words heard. The history shows the
// same after a reload. (TestWidgetSpeechE2E does this with real speech.)
func testWidgetSpeech(t *testing.T, s *site) {
	b := s.chatTab(t, "/")
	sess := b.session()
	// A silent microphone: the agent's beep detector hears no turns of its
	// own, so the replies here are the test's.
	b.mustEval(`navigator.mediaDevices.getUserMedia = async () => new AudioContext().createMediaStreamDestination().stream; true`, nil)
	b.click("button.mic")
	b.waitJS(15*time.Second, "the call", widgetJS+`.call === "connected"`)
	v, ok := s.e.app.broker.Voice(sess.SessionID)
	if !ok {
		t.Fatal("no voice leg for the call")
	}
	b.typeMessage("during the call")
	b.waitJS(10*time.Second, "the reply", hasLine("agent", "echo: during the call"))

	v.Speech(broker.SpeechEvent{Kind: broker.SpeechStarted, At: time.Now(), Source: "decode"})
	b.waitJS(10*time.Second, "the hearing indicator", widgetJS+`.hearing === true && `+sq(".callbar")+
		`.dataset.hearing === "true" && `+sq(".callbar .state")+`.textContent.includes("Hearing you")`)
	v.Speech(broker.SpeechEvent{Kind: broker.SpeechBargeIn, At: time.Now(), Source: "decode", HeardMS: 500})
	b.waitJS(10*time.Second, "the reply marked interrupted", widgetJS+`.interrupted.length === 1 && `+
		sq(".msg.agent.interrupted .cut")+`.textContent === "(interrupted)"`)
	v.Speech(broker.SpeechEvent{Kind: broker.SpeechStopped, At: time.Now(), Source: "decode"})
	b.waitJS(10*time.Second, "the indicator off", widgetJS+`.hearing === false && `+sq(".callbar")+`.dataset.hearing === "false"`)
	var n int
	b.mustEval(`Parley._debug.shadow().querySelectorAll(".msg.agent.interrupted").length`, &n)
	if n != 1 {
		t.Fatalf("%d replies marked interrupted, want 1", n)
	}

	// A turn heard, and its reply cut while spoken after "echo: where".
	ctx := context.Background()
	heardID, err := v.Heard(ctx, broker.VoiceTurn{Text: "where is my order", Engine: "test", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	b.waitJS(10*time.Second, "the heard turn and its reply", fmt.Sprintf(`(() => {
		const v = Parley._debug.shadow().querySelector(".log .msg.visitor.voice[data-id='%s']");
		return v && v.querySelector(".body").textContent === "where is my order"
			&& v.querySelector("svg.via").getAttribute("aria-label") === "said in the voice call"; })()`, heardID)+
		" && "+hasLine("agent", "echo: where is my order"))
	heard := "echo: where"
	v.Speech(broker.SpeechEvent{Kind: broker.SpeechBargeIn, At: time.Now(), Source: "decode", HeardMS: 700, HeardText: &heard})
	b.waitJS(10*time.Second, "the reply cut to what was heard", widgetJS+`.interrupted.length === 2 && `+cutAsHeard("echo: where…"))
	// A turn not heard: a note saying why.
	if _, err := v.Heard(ctx, broker.VoiceTurn{Unheard: broker.UnheardDown, Engine: "test", Start: time.Now()}); err != nil {
		t.Fatal(err)
	}
	const downNote = "Sorry — we couldn't make out what you said (speech recognition is unavailable). You can type instead."
	b.waitJS(10*time.Second, "the note of the unheard turn", hasLine("note.unheard", downNote))
	b.viewportShot("widget-speech.png")
	b.click(".totext")
	b.waitJS(10*time.Second, "the call ended", widgetJS+`.call === "ended" && `+widgetJS+`.hearing === false`)

	// After a reload: the same, from the history.
	lines := b.lines()
	b.must("reload", chromedp.Reload())
	b.waitReady()
	b.waitJS(15*time.Second, "the chat to reconnect after the reload", widgetJS+`.chat === "connected"`)
	b.waitJS(10*time.Second, "the history", voiceLinesJS+` === 1 && `+cutAsHeard("echo: where…")+` && `+hasLine("note.unheard", downNote)+
		` && Parley._debug.shadow().querySelectorAll(".log .msg.agent.interrupted").length === 2`)
	if after := b.lines(); strings.Join(after, "|") != strings.Join(lines, "|") {
		t.Fatalf("after the reload the widget shows\n%q\nbefore it\n%q", after, lines)
	}
}

// cutAsHeard is JavaScript: whether the widget shows a reply cut while
// spoken as text, the words heard trailing off, with "(interrupted)" for
// screen readers only.
func cutAsHeard(text string) string {
	return fmt.Sprintf(`[...Parley._debug.shadow().querySelectorAll(".log .msg.agent.interrupted")].some((el) =>
		el.querySelector(".body").textContent === %q && el.querySelector(".cut.sr") && el.querySelector(".cut").textContent === "(interrupted)")`, text)
}
