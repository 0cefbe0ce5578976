package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/broker"
)

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
