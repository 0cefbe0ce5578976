package main

import (
	"testing"
	"time"

	"github.com/parley-rtc/parley/broker"
)

// testWidgetSpeech: on a call, the visitor's voice activity and a barge-in
// (reported to the broker as the media leg reports them) show in the
// widget: "Hearing you…" on the call bar while the visitor speaks, and the
// reply being spoken marked "(interrupted)".
func testWidgetSpeech(t *testing.T, s *site) {
	b := s.tab(t, "/")
	b.openChat()
	sess := b.session()
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
	b.viewportShot("widget-speech.png")
	b.click(".totext")
	b.waitJS(10*time.Second, "the call ended", widgetJS+`.call === "ended" && `+widgetJS+`.hearing === false`)
}
