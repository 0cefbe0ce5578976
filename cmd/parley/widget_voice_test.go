package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// Voice in the widget: a call from Chromium, and a page that blocks the
// microphone. (Subtests of TestWidget, widget_test.go.)

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
