package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/media/speech"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// e2ePhrases are what the visitor says, one call each: pocketsphinx hears
// flite's slt voice say them exactly (TestFliteToPocketsphinx). cut: the
// reply ("You said: …") is long enough for the next loop of the
// microphone to talk over it for longer than barge_in_min_ms, every time:
// a phrase of ~2 s leaves a reply that plays on ~1 s into the next one;
// "tell me a joke" leaves 0–300 ms, so its cut comes only now and then.
var e2ePhrases = []struct {
	phrase string
	cut    bool
}{
	{"what are your opening hours", true},
	{"hello can you hear me", true},
	{"where is my order", false},
	{"tell me a joke", false},
}

// e2eMaxWER is the word error rate allowed between a phrase and what the
// speech pipeline heard of it through Chromium (Chrome's Opus at 48 kHz,
// decoded and resampled to 16 kHz by Parley): one word in four, the bound
// of the pion tests (speech_test.go). Over all the phrases of a run it is
// e2eMaxCorpusWER. Measured here (9 runs): 0.00 for the first three
// phrases every time; "tell me a joke" heard as "tell me a job" (0.25) in
// 8 of 9 runs, exactly once; 1 word wrong in 18 (0.06) over a run.
const (
	e2eMaxWER       = 0.25
	e2eMaxCorpusWER = 0.12
)

// e2eMinEnergy is how much the page's inbound-rtp totalAudioEnergy must
// rise once the page has the reply's text: the reply being spoken. Before
// the first reply Parley sends the page no audio (the energy is 0); a
// whole reply ("You said: what are your opening hours.", ~2.5 s) adds
// ~0.2, its first 20–40 ms ~0.003.
const e2eMinEnergy = 0.001

// spokenWAV writes phrase spoken by flite (voice slt) as a 48 kHz WAV, with
// 1 s of silence before and e2eTrailingSilence after, so that each time
// Chromium's fake microphone loops it the VAD hears one utterance and its
// end.
//
// The next loop must talk over the reply (barge-in) whatever the speech
// pipeline's speed. The reply starts E after the utterance ends (VAD
// hangover, STT, TTS: 1.26–2.28 s measured through Chromium), lasts R
// ("You said: hello can you hear me." ~2.0 s, the shortest) and the next
// utterance starts e2eTrailingSilence + 1 s after the end: it begins while
// the reply plays if E <= silence + 1 s, and overlaps it by the VAD's
// 300 ms if E + R >= silence + 1.3 s. 1.6 s leaves ~0.3 s on both sides of
// the measured range; 2 s missed the cut when recognition was fast (the
// reply was all played before the next loop began).
const e2eTrailingSilence = 1600 * time.Millisecond

func spokenWAV(t *testing.T, f *speech.Flite, phrase string) (path string, dur time.Duration) {
	t.Helper()
	a, err := f.Synthesize(context.Background(), phrase)
	if err != nil {
		t.Fatalf("flite %q: %v", phrase, err)
	}
	if a, err = a.Resample(48000); err != nil {
		t.Fatal(err)
	}
	samples := make([]int16, 0, 3*48000+len(a.Samples))
	samples = append(samples, make([]int16, 48000)...)
	samples = append(samples, a.Samples...)
	samples = append(samples, make([]int16, int(e2eTrailingSilence.Seconds()*48000))...)
	out := speech.Audio{Rate: 48000, Samples: samples}
	path = filepath.Join(t.TempDir(), "visitor.wav")
	if err := os.WriteFile(path, out.WAV(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, out.Duration()
}

// seenJS records, in the page, every message the widget reports
// (Parley.on("message")) and, for the agent's, the page's inbound audio
// energy when it came (0 before the first packet: no inbound-rtp yet) and
// how long after that the energy rose by min: its speech reached the page.
const seenJS = `(() => {
	window.seen = [];
	const energy = async () => {
		const pc = Parley._debug.pc();
		if (!pc) return -1;
		let e = 0;
		(await pc.getStats()).forEach((x) => { if (x.type === "inbound-rtp" && x.kind === "audio") e = x.totalAudioEnergy || 0; });
		return e;
	};
	Parley.on("message", async (m) => {
		const rec = {...m, at: performance.now(), energy: null, rose: null};
		seen.push(rec);
		if (m.role !== "agent") return;
		rec.energy = await energy();
		for (const end = rec.at + 20000; performance.now() < end;) {
			const e = await energy();
			if (e < 0) return;
			if (e > rec.energy + %g) { rec.rose = performance.now() - rec.at; rec.energyThen = e; return; }
			await new Promise((r) => setTimeout(r, 20));
		}
	});
	return true;
})()`

// seenMessage is one message the page's widget reported.
type seenMessage struct {
	Role, Body, Via, ID string
	At                  float64
	Energy, EnergyThen  *float64
	Rose                *float64
}

// TestWidgetSpeechE2E: the whole voice path with real speech. flite speaks
// a phrase into the WAV file Chromium's fake microphone plays; the demo
// page's widget calls Parley (pion), whose speech pipeline (VAD,
// pocketsphinx) turns it into a user_message via voice for the echo agent,
// which works in text only; its reply "You said: …" is spoken by flite
// back into the page. The log has the turn (within e2eMaxWER of the
// phrase), the page shows the spoken turn (marked as said in the call) and
// the reply, and the reply's audio reaches the page: inbound-rtp energy
// rises after the reply was written. The microphone loops the file, so
// more turns follow, and may talk over the replies (barge-in): the page
// shows a reply cut so as the words heard, and so does the history after a
// reload, with each voice turn once.
func TestWidgetSpeechE2E(t *testing.T) {
	requireChromium(t)
	_, f := signalingtest.RequireSpeech(t)
	var errs, words float64
	for _, p := range e2ePhrases {
		t.Run(strings.ReplaceAll(p.phrase, " ", "_"), func(t *testing.T) {
			wer := speechE2E(t, f, p.phrase, p.cut)
			n := float64(len(strings.Fields(p.phrase)))
			errs, words = errs+wer*n, words+n
		})
	}
	if words > 0 {
		t.Logf("word error rate over the phrases: %.0f of %.0f words (%.2f; bound %.2f)", errs, words, errs/words, e2eMaxCorpusWER)
		if errs/words > e2eMaxCorpusWER {
			t.Fatalf("%.0f of %.0f words heard wrong: WER %.2f > %.2f", errs, words, errs/words, e2eMaxCorpusWER)
		}
	}
}

// speechE2E is one call of TestWidgetSpeechE2E, in a Chromium whose
// microphone says phrase; mustCut: wait for a reply cut by the next loop.
// It returns the word error rate of the turn checked.
func speechE2E(t *testing.T, f *speech.Flite, phrase string, mustCut bool) float64 {
	wav, loop := spokenWAV(t, f, phrase)
	e := startEnv(t, voiceConfig, withSpeech)
	b := newBrowser(t, fakeMic(wav))
	b.openDemo(e)
	s := b.session()
	b.mustEval(fmt.Sprintf(seenJS, e2eMinEnergy), nil)
	// The fake microphone unprocessed: no echo to cancel, and noise
	// suppression and gain control lower and change synthetic speech
	// (MEASURED.md: ~3.6× quieter).
	b.mustEval(`Parley._debug.audioConstraints = {echoCancellation: false, noiseSuppression: false, autoGainControl: false}; true`, nil)
	b.click(".mic")
	clicked := time.Now()
	b.waitJS(15*time.Second, "the call", widgetJS+`.call === "connected"`)
	t.Logf("click → call connected %v; the microphone loops %v of audio", time.Since(clicked).Round(time.Millisecond), loop)

	// (i) The log: a voice turn, as a user_message via voice. The first
	// whole one: the file plays from getUserMedia on, and on a slow start
	// the call carries audio only from the middle of the first phrase.
	var turn *agentbridge.Event
	for n := 1; turn == nil; n++ {
		if n > 3 {
			t.Fatal("no whole voice turn in the first three")
		}
		d := b.waitJS(45*time.Second, fmt.Sprintf("voice turn %d in the page", n),
			fmt.Sprintf(`seen.filter((m) => m.role === "visitor" && m.via === "voice").length >= %d`, n))
		t.Logf("voice turn %d in the page %v later", n, d.Round(time.Millisecond))
		turn = wholeTurn(t, e, s, n)
	}

	// Its reply, in the page and in the log.
	b.waitJS(30*time.Second, "the reply to the turn in the page", fmt.Sprintf(`(() => {
		const i = seen.findIndex((m) => m.id === %q);
		return i >= 0 && seen.slice(i + 1).some((m) => m.role === "agent" && m.energy !== null); })()`, turn.MessageID))
	var answered *agentbridge.Event
	for _, ev := range readLog(t, e, s) {
		if ev.Type == agentbridge.EventTextDone && ev.ReplyTo == turn.MessageID {
			answered = &ev
		}
	}
	var seen []seenMessage
	b.mustEval(`seen`, &seen)
	var seenTurn, reply seenMessage
	for _, m := range seen {
		switch {
		case m.ID == turn.MessageID:
			seenTurn = m
		case answered != nil && m.ID == answered.MessageID:
			reply = m
		}
	}
	if turn.Via != agentbridge.ModeVoice || turn.Reason != "" || seenTurn.Body != turn.Text || seenTurn.Via != "voice" {
		t.Fatalf("the voice turn %+v reached the page as %+v", turn, seenTurn)
	}
	wer := speech.WordErrorRate(phrase, turn.Text)
	t.Logf("said %q, heard %q (WER %.2f, engine %s)", phrase, turn.Text, wer, turn.Engine)
	if wer > e2eMaxWER {
		t.Fatalf("heard %q for %q: WER %.2f > %.2f", turn.Text, phrase, wer, e2eMaxWER)
	}
	wantReply := "You said: " + strings.TrimRight(turn.Text, ".!? ") + "."
	if answered == nil || answered.Text != wantReply || reply.Body != wantReply || reply.Energy == nil {
		t.Fatalf("reply in the page %+v, in the log %+v; want %q to %s", reply, answered, wantReply, turn.MessageID)
	}

	// (ii) The page shows the spoken turn, marked as said in the call, and
	// the reply (whole, or cut where the next loop of the microphone
	// talked over it).
	b.waitJS(5*time.Second, "the spoken turn and the reply on screen", fmt.Sprintf(`(() => {
		const root = Parley._debug.shadow();
		const v = root.querySelector(".log .msg.visitor.voice[data-id='%s']");
		const a = root.querySelector(".log .msg.agent[data-id='%s']");
		return v && v.querySelector(".body").textContent === %q && v.querySelector("svg.via").getAttribute("aria-label") === "said in the voice call"
			&& a && (a.querySelector(".body").textContent === %q || a.classList.contains("interrupted")); })()`,
		turn.MessageID, reply.ID, turn.Text, wantReply))

	// The call bar's caption is the sentence being spoken (a caption
	// frame, timed to the audio), once Parley speaks it.
	b.waitJS(20*time.Second, "the reply as the call's caption", fmt.Sprintf(
		`Parley._debug.shadow().querySelector(".callbar .cap-agent").textContent === %q`, wantReply))

	// (iii) The spoken reply reaches the page: its inbound audio energy
	// rises after the reply was written.
	b.waitJS(20*time.Second, "the spoken reply's energy in the page", fmt.Sprintf(
		`seen.some((m) => m.id === %q && m.rose !== null)`, reply.ID))
	b.mustEval(`seen`, &seen)
	for _, m := range seen {
		if m.ID == reply.ID {
			reply = m
		}
	}
	t.Logf("inbound totalAudioEnergy %.4f when the page got the reply, %.4f %.0f ms later (bound: a rise of %g)",
		*reply.Energy, *reply.EnergyThen, *reply.Rose, e2eMinEnergy)

	// The next loop of the microphone talks over a reply (barge-in): the
	// page shows the words of it heard, trailing off. Then hang up.
	if mustCut {
		cut := b.waitJS(30*time.Second, "a later turn talking over a reply", widgetJS+`.interrupted.length > 0`)
		t.Logf("a reply cut %v later", cut.Round(time.Millisecond))
	}
	b.viewportShot("widget-speech-e2e-" + strings.ReplaceAll(phrase, " ", "-") + ".png")
	b.click(".totext")
	b.waitJS(10*time.Second, "the call to end", widgetJS+`.call === "ended"`)
	checkCutReplies(t, b, e, s, "during the call", mustCut)

	// After a reload the history shows the same: each voice turn once,
	// marked as spoken, and the cut replies as what was heard.
	b.must("reload", chromedp.Reload())
	b.waitJS(15*time.Second, "the chat to reconnect after the reload", `window.Parley && Parley._debug.state().chat === "connected"`)
	after := b.resumedFrom(s)
	spoken := 0
	for _, m := range e.History(session{ID: after.SessionID, Token: b.token()}) {
		if m["role"] == "visitor" && m["via"] == "voice" && m["body"] != "" {
			spoken++
		}
	}
	b.waitJS(5*time.Second, fmt.Sprintf("%d voice turns from the history", spoken), fmt.Sprintf("%s === %d", voiceLinesJS, spoken))
	checkCutReplies(t, b, e, after, "after the reload", mustCut)
	t.Logf("%d voice turns in %v of call", spoken, time.Since(clicked).Round(time.Millisecond))
	logTurnTimings(t, e)
	return wer
}

// readLog is the conversation's log.
func readLog(t *testing.T, e *env, s demoSession) []agentbridge.Event {
	t.Helper()
	events, err := e.app.broker.ReadLog(context.Background(), s.ConversationID, 0)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// wholeTurn is the log's n-th voice turn (from 1) if it is a whole
// utterance: its speech began at least 300 ms after the voice leg was
// connected (the onset of a phrase the call carried only from its middle
// is when the audio began).
func wholeTurn(t *testing.T, e *env, s demoSession, n int) *agentbridge.Event {
	t.Helper()
	var connected time.Time
	for _, ev := range readLog(t, e, s) {
		switch {
		case ev.Type == agentbridge.EventMediaState && ev.State == "connected" && connected.IsZero():
			connected = ev.TS
		case ev.Type == agentbridge.EventUserMessage && ev.Via == agentbridge.ModeVoice:
			if n--; n > 0 {
				continue
			}
			if connected.IsZero() || ev.At == nil {
				t.Fatalf("voice turn %+v: no onset, or no media_state connected before it", ev)
			}
			if lead := ev.At.Sub(connected); lead < 300*time.Millisecond {
				t.Logf("voice turn %q began %v after the leg connected: part of a phrase, skipped", ev.Text, lead)
				return nil
			}
			return &ev
		}
	}
	t.Fatal("the page showed a voice turn the log does not have")
	return nil
}

// checkCutReplies checks that every reply the log says the visitor cut
// while Parley spoke it (an interrupt with heard_text) shows on the page as
// the words heard, trailing off, "(interrupted)" for screen readers only;
// with some, there must be one.
func checkCutReplies(t *testing.T, b *browser, e *env, s demoSession, when string, some bool) {
	t.Helper()
	cuts := 0
	for _, ev := range readLog(t, e, s) {
		if ev.Type != agentbridge.EventInterrupt || ev.HeardText == nil || ev.MessageID == "" {
			continue
		}
		cuts++
		heard := strings.TrimRight(*ev.HeardText, " ,;:")
		want := ""
		if heard != "" {
			want = heard + "…"
			if strings.ContainsAny(heard[len(heard)-1:], ".!?") {
				want = heard + " …"
			}
		}
		b.waitJS(5*time.Second, fmt.Sprintf("the cut reply %s as heard (%q) %s", ev.MessageID, want, when), fmt.Sprintf(`(() => {
			const a = Parley._debug.shadow().querySelector(".log .msg.agent.interrupted[data-id='%s']");
			return a && a.querySelector(".body").textContent === %q && a.querySelector(".cut").textContent === "(interrupted)"
				&& a.querySelector(".cut").classList.contains("sr") === %v; })()`, ev.MessageID, want, want != ""))
	}
	if some && cuts == 0 {
		t.Fatalf("%s: no interrupt with heard_text in the log", when)
	}
	t.Logf("%s: %d replies cut by a later turn, shown as heard", when, cuts)
}

// turnTimingRe picks the stage timings out of the speech pipeline's debug
// line for a voice turn.
var turnTimingRe = regexp.MustCompile(`"msg":"speech: voice turn timing"[^\n]*`)

// logTurnTimings logs where the time of each voice turn so far went.
func logTurnTimings(t *testing.T, e *env) {
	t.Helper()
	for _, l := range turnTimingRe.FindAllString(e.logs.String(), -1) {
		t.Logf("turn timing: %s", l)
	}
}
