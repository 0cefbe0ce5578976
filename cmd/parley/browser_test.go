package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// The demo page (signaling/static/demo.html, which embeds the widget of
// signaling/static/widget.js) in headless Chromium against an in-process
// Parley: the browser path that pion clients can't stand in for
// (getUserMedia, Chrome's Opus, autoplay, sessionStorage). Chromium flags
// and expectations are those of /work/shared/MEASURED.md. These tests run
// serially: one call ≈ 15 % of two cores.

// chromiumPath is Debian's chromium, as `make browser` installs it.
const chromiumPath = "/usr/bin/chromium"

// requireChromium skips the test, loudly, when Chromium is missing; with
// PARLEY_REQUIRE_BROWSER=1 (CI) it fails instead.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return
	}
	skipMissing(t, chromiumPath+" is missing: the browser path is NOT tested.",
		"Install it with `make browser` (Debian package chromium).")
}

// skipMissing skips t, loudly (a banner on stderr, what and then how, each
// on a line), for a missing piece of the browser path; with
// PARLEY_REQUIRE_BROWSER=1 (CI) it fails t instead.
func skipMissing(t *testing.T, what, how string) {
	t.Helper()
	msg := fmt.Sprintf("\n%[1]s\n!!! %[2]s: %[3]s\n!!! %[4]s\n%[1]s", strings.Repeat("!", 72), t.Name(), what, how)
	fmt.Fprintln(os.Stderr, msg)
	if os.Getenv("PARLEY_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "\n(PARLEY_REQUIRE_BROWSER=1: failing instead of skipping)")
	}
	t.Skip(msg)
}

// browser is one headless Chromium with one tab.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab's

	mu      sync.Mutex
	console []string // console lines, exceptions and chromedp errors
}

// newBrowser starts Chromium with a fresh profile; it is closed when the
// test ends (before the env, which was started first). extra are more
// flags for this browser only (fakeMic).
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium-profile")),
	}
	opts = append(opts, extra...)
	b := &browser{t: t}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithErrorf(b.logf("chromedp error")))
	b.ctx = ctx
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.console) > 0 {
			t.Logf("browser console:\n  %s", strings.Join(b.console, "\n  "))
		}
	})
	chromedp.ListenTarget(ctx, b.listen)
	start := time.Now()
	// The first Run starts the browser, which lives as long as that Run's
	// context: b.ctx itself, not one with a timeout (the allocator gives up
	// on a browser that doesn't start within 20 s).
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	t.Logf("chromium up in %v", time.Since(start).Round(time.Millisecond))
	return b
}

// fakeMic makes Chromium's fake microphone play the WAV file at path, in
// a loop, instead of its beeps.
func fakeMic(path string) chromedp.ExecAllocatorOption {
	return chromedp.Flag("use-file-for-fake-audio-capture", path)
}

// listen records the tab's console lines and exceptions.
func (b *browser) listen(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		args := make([]string, 0, len(ev.Args))
		for _, a := range ev.Args {
			if a.Value != nil {
				var s string
				if json.Unmarshal(a.Value, &s) == nil {
					args = append(args, s)
					continue
				}
				args = append(args, string(a.Value))
				continue
			}
			args = append(args, a.Description)
		}
		b.logf("console."+string(ev.Type))("%s", strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		b.logf("exception")("%s", ev.ExceptionDetails.Error())
	}
}

// newTab opens another tab in b's browser for t (its own sessionStorage;
// localStorage and cookies are the browser's); it is closed when t ends.
func (b *browser) newTab(t *testing.T) *browser {
	t.Helper()
	tab := &browser{t: t}
	ctx, cancel := chromedp.NewContext(b.ctx)
	tab.ctx = ctx
	chromedp.ListenTarget(ctx, tab.listen)
	t.Cleanup(func() {
		cancel() // closes the tab
		tab.mu.Lock()
		defer tab.mu.Unlock()
		if len(tab.console) > 0 {
			t.Logf("tab console:\n  %s", strings.Join(tab.console, "\n  "))
		}
	})
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	return tab
}

// logf returns a printf that records a line under kind. It never calls
// t.Logf: events can arrive after the test has ended.
func (b *browser) logf(kind string) func(string, ...any) {
	return func(format string, args ...any) {
		line := time.Now().Format("15:04:05.000 ") + kind + ": " + fmt.Sprintf(format, args...)
		b.mu.Lock()
		b.console = append(b.console, line)
		b.mu.Unlock()
	}
}

// run runs actions in the tab within timeout.
func (b *browser) run(timeout time.Duration, actions ...chromedp.Action) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Run(ctx, actions...)
}

// must runs actions and fails the test on error.
func (b *browser) must(what string, actions ...chromedp.Action) {
	b.t.Helper()
	if err := b.run(30*time.Second, actions...); err != nil {
		b.t.Fatalf("%s: %v%s", what, err, b.pageState())
	}
}

// eval evaluates expr (awaiting a promise) into res.
func (b *browser) eval(expr string, res any) error {
	return b.run(10*time.Second, chromedp.Evaluate(expr, res, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	}))
}

// mustEval evaluates expr into res and fails the test on error.
func (b *browser) mustEval(expr string, res any) {
	b.t.Helper()
	if err := b.eval(expr, res); err != nil {
		b.t.Fatalf("evaluate %s: %v%s", expr, err, b.pageState())
	}
}

// waitJS polls the JavaScript expression cond (may return a promise) until
// it is true, and returns how long that took; on timeout it fails with the
// widget page's state.
func (b *browser) waitJS(timeout time.Duration, what, cond string) time.Duration {
	b.t.Helper()
	return b.waitJSOr(timeout, what, cond, b.pageState)
}

// waitJSOr is waitJS that describes the page with state on timeout.
func (b *browser) waitJSOr(timeout time.Duration, what, cond string, state func() string) time.Duration {
	b.t.Helper()
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		var ok bool
		// Resolved first: Boolean of a promise is true at once, which
		// made async conditions pass without being checked.
		if lastErr = b.eval("Promise.resolve("+cond+").then(Boolean)", &ok); lastErr == nil && ok {
			return time.Since(start)
		}
		select {
		case <-deadline.C:
			b.t.Fatalf("timed out after %v waiting for %s (last error: %v)%s", timeout, what, lastErr, state())
		case <-tick.C:
		}
	}
}

// pageState describes the page for a failure message: the widget's state
// and the lines of its conversation.
func (b *browser) pageState() string {
	var s string
	err := b.eval(`JSON.stringify({url: location.href, widget: window.Parley && Parley._debug && Parley._debug.state(),
		pc: window.Parley && Parley._debug && Parley._debug.pc() && Parley._debug.pc().connectionState,
		log: window.Parley && Parley._debug && Parley._debug.shadow() ?
			[...Parley._debug.shadow().querySelectorAll(".log > *")].map(e => e.className + ": " + e.textContent) : null})`, &s)
	if err != nil {
		return "\npage state: " + err.Error()
	}
	return "\npage state: " + s
}

// screenshot saves a PNG of the whole page as name under t.TempDir(), and
// copies it to $PARLEY_ARTIFACTS when that is set.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	var png []byte
	b.must("screenshot", chromedp.FullScreenshot(&png, 100))
	saveArtifact(b.t, name, png)
}

// viewportShot saves a PNG of what is in the viewport (where the widget
// floats), like screenshot.
func (b *browser) viewportShot(name string) {
	b.t.Helper()
	// The widget's opening animation (finite ones: not the typing dots)
	// must be over.
	b.waitJS(5*time.Second, "the widget's animations to end", `!window.Parley || !Parley._debug || !Parley._debug.shadow() ||
		Parley._debug.shadow().getAnimations().every((a) => a.playState !== "running" || a.effect.getTiming().iterations === Infinity)`)
	var png []byte
	b.must("screenshot", chromedp.CaptureScreenshot(&png))
	saveArtifact(b.t, name, png)
}

func saveArtifact(t *testing.T, name string, png []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
	if dir := os.Getenv("PARLEY_ARTIFACTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot copied to %s", dst)
	}
}

// sq is JavaScript for the first element matching sel in the widget's
// shadow DOM (or null).
func sq(sel string) string {
	return fmt.Sprintf(`(window.Parley && Parley._debug.shadow() && Parley._debug.shadow().querySelector(%q))`, sel)
}

// widgetJS is JavaScript for the widget's state (Parley._debug.state()).
const widgetJS = `Parley._debug.state()`

// click clicks the element of the widget's shadow DOM matching sel with a
// real (trusted) mouse click at its centre, once it is visible.
func (b *browser) click(sel string) {
	b.t.Helper()
	b.waitJS(10*time.Second, sel+" to be visible", sq(sel)+` && `+sq(sel)+`.getClientRects().length > 0 && !`+sq(sel)+`.disabled`)
	b.clickAt(sq(sel))
}

// clickAt clicks the element that the JavaScript expression el returns,
// with the mouse at its centre once it has stopped moving (a message
// arriving or a smooth scroll can shift it between measuring and clicking).
func (b *browser) clickAt(el string) {
	b.t.Helper()
	var pt struct{ X, Y float64 }
	b.mustEval(`(async () => { const el = `+el+`; el.scrollIntoView({block: "nearest"});
		const tick = () => new Promise((r) => setTimeout(r, 20));
		let last = "", same = 0;
		for (const end = Date.now() + 2000; same < 3 && Date.now() < end;) {
			await tick();
			const r = el.getBoundingClientRect(), now = [r.left, r.top, r.width, r.height].join();
			same = now === last ? same + 1 : 0; last = now;
		}
		const r = el.getBoundingClientRect(); return {X: r.left + r.width / 2, Y: r.top + r.height / 2}; })()`, &pt)
	b.must("click "+el, chromedp.MouseClickXY(pt.X, pt.Y))
}

// typeMessage types text into the widget's message box and presses Enter.
func (b *browser) typeMessage(text string) {
	b.t.Helper()
	b.waitJS(10*time.Second, "the message box", sq("textarea")+` && !`+sq("textarea")+`.disabled`)
	b.mustEval(sq("textarea")+`.focus(); true`, nil)
	b.must("type "+text, chromedp.KeyEvent(text), chromedp.KeyEvent("\r"))
	b.waitJS(5*time.Second, "Enter to send and empty the message box", sq("textarea")+`.value === ""`)
}

// hasLine is JavaScript: whether the widget shows a message line of class
// cls (visitor, agent, note …) whose text is text.
func hasLine(cls, text string) string {
	return fmt.Sprintf(`[...Parley._debug.shadow().querySelectorAll(".log .%s")].some((el) => (el.querySelector(".body") || el).textContent === %q)`,
		cls, text)
}

// openDemo opens the env's demo page on localhost (a secure context, so
// getUserMedia exists), opens the widget and waits for its WebSocket.
func (b *browser) openDemo(e *env) {
	b.t.Helper()
	_, port, ok := strings.Cut(e.app.server.Addr(), ":")
	if !ok {
		b.t.Fatalf("server address %q", e.app.server.Addr())
	}
	b.must("open the demo", chromedp.EmulateViewport(900, 900), chromedp.Navigate("http://localhost:"+port+"/"))
	b.waitJS(15*time.Second, "the widget", `window.Parley && Parley._debug && `+widgetJS+`.ready`)
	b.click(".launcher")
	d := b.waitJS(15*time.Second, "the chat to connect", widgetJS+`.chat === "connected"`)
	b.t.Logf("demo page connected in %v", d.Round(time.Millisecond))
}

// demoSession is the part of the page's POST /v1/sessions response a test
// needs.
type demoSession struct {
	SessionID      string `json:"session_id"`
	ConversationID string `json:"conversation_id"`
	VoicePath      string `json:"voice_path"`
	Resumed        bool   `json:"resumed"`
}

func (b *browser) session() demoSession {
	b.t.Helper()
	var s demoSession
	b.mustEval(`Parley._debug.session()`, &s)
	if s.SessionID == "" || s.ConversationID == "" {
		b.t.Fatalf("page session = %+v", s)
	}
	return s
}

// resumedFrom checks that the page's session after a reload resumed
// before: the same conversation in a new session. It returns the new one.
func (b *browser) resumedFrom(before demoSession) demoSession {
	b.t.Helper()
	after := b.session()
	if !after.Resumed || after.ConversationID != before.ConversationID || after.SessionID == before.SessionID {
		b.t.Fatalf("after the reload: %+v, before: %+v", after, before)
	}
	return after
}

// resumeToken is the resume token the widget of key keeps in the page's
// sessionStorage, or "".
func (b *browser) resumeToken(key string) string {
	b.t.Helper()
	var tok string
	b.mustEval(`sessionStorage.getItem("parley.resume.`+key+`") || ""`, &tok)
	return tok
}

// inboundAudio is the page's inbound-rtp audio report.
type inboundAudio struct {
	PacketsReceived  int64   `json:"packetsReceived"`
	PacketsLost      int64   `json:"packetsLost"`
	Jitter           float64 `json:"jitter"`
	TotalAudioEnergy float64 `json:"totalAudioEnergy"`
	PacketsSent      int64   `json:"packetsSent"` // from outbound-rtp
}

const statsJS = `(async () => {
	const pc = window.Parley._debug.pc();
	if (!pc) return null;
	const out = {packetsReceived: 0, packetsLost: 0, jitter: 0, totalAudioEnergy: 0, packetsSent: 0};
	(await pc.getStats()).forEach((r) => {
		if (r.kind !== "audio") return;
		if (r.type === "inbound-rtp") Object.assign(out, {packetsReceived: r.packetsReceived || 0,
			packetsLost: r.packetsLost || 0, jitter: r.jitter || 0, totalAudioEnergy: r.totalAudioEnergy || 0});
		if (r.type === "outbound-rtp") out.packetsSent = r.packetsSent || 0;
	});
	return out;
})()`

// voiceLinesJS counts the transcripts the widget shows as visitor voice
// lines.
const voiceLinesJS = `Parley._debug.shadow().querySelectorAll(".log .msg.visitor.voice").length`

// TestBrowserVoice: the widget's mic button on the demo page in Chromium. The fake mic's
// Opus reaches the agent's NATS subject at 50 frames/s, the echo comes back
// into the page (getStats), transcripts and captions show, an ICE restart
// over PATCH keeps the call, and pressing the mic again returns the page and
// the broker to chat; after a reload the history shows the voice turns, and a switch to
// chat by the server ends a second call in the page.
func TestBrowserVoice(t *testing.T) {
	requireChromium(t)
	e := startEnv(t, voiceConfig)
	b := newBrowser(t)
	b.openDemo(e)
	s := b.session()
	if s.VoicePath != "/v1/sessions/"+s.SessionID+"/webrtc" {
		t.Fatalf("voice_path = %q", s.VoicePath)
	}
	tap := e.tapAudio(e.app.broker.Subjects().InAudio("echo", s.ConversationID))

	// The fake mic (a short beep about once a second) unprocessed, so the
	// echo agent's energy detector hears its own level. Processing lowers a
	// tone ~3.6× (MEASURED.md); with it on the beeps were still detected.
	b.mustEval(`Parley._debug.audioConstraints = {echoCancellation: false, noiseSuppression: false, autoGainControl: false}; true`, nil)
	var pressed string
	b.click(".mic")
	clicked := time.Now()
	b.mustEval(sq(".mic")+`.getAttribute("aria-pressed")`, &pressed)
	if pressed != "true" {
		t.Fatalf("Talk aria-pressed = %q after the click", pressed)
	}

	// Mic frames on NATS: ~50/s, Opus, in order.
	agenttest.Poll(t, 15*time.Second, "the first mic frame on NATS", func() bool { return len(tap.Frames()) > 0 })
	t.Logf("click → first mic frame on NATS: %v", time.Since(clicked).Round(time.Millisecond))
	first := tap.Frames()[0]
	if first.CapturedAt.IsZero() {
		t.Fatalf("first frame without Parley-Captured-At: %+v", first)
	}
	// Count by the media clock (Opus: 48 000 per second, 960 per frame):
	// the frames of the first 2 s of audio, however late a loaded machine
	// delivers them. At 50 frames/s that is 100; allow 10 % loss.
	windowEnd := first.Timestamp + 2*48000
	agenttest.Poll(t, 15*time.Second, "2 s of mic audio", func() bool {
		f := tap.Frames()
		return f[len(f)-1].Timestamp >= windowEnd
	})
	frames := tap.Frames()
	inWindow := 0
	for i, f := range frames {
		if f.Codec != agentbridge.CodecOpus || len(f.Payload) == 0 {
			t.Fatalf("frame %d: codec %q, %d bytes", i, f.Codec, len(f.Payload))
		}
		if i > 0 && f.Seq <= frames[i-1].Seq {
			t.Fatalf("frame %d: Parley-Seq %d after %d", i, f.Seq, frames[i-1].Seq)
		}
		if f.Timestamp < windowEnd {
			inWindow++
		}
	}
	arrival := frames[inWindow-1].CapturedAt.Sub(first.CapturedAt)
	t.Logf("mic frames in the first 2 s of audio: %d (%.1f/s), arrived over %v; seq %d…%d over %d frames",
		inWindow, float64(inWindow)/2, arrival.Round(time.Millisecond), frames[0].Seq, frames[len(frames)-1].Seq, len(frames))
	if inWindow < 90 {
		t.Fatalf("only %d mic frames in the first 2 s of audio, want ≥ 90 (50/s, at most 10 %% lost)", inWindow)
	}

	// The echo plays back in the page.
	b.waitJS(10*time.Second, "the call to be connected", widgetJS+`.call === "connected"`)
	var st inboundAudio
	waited := b.waitJS(10*time.Second, "echoed audio in the page (inbound-rtp packetsReceived > 0)",
		`(async () => { const s = await `+statsJS+`; return s && s.packetsReceived > 0; })()`)
	b.mustEval(statsJS, &st)
	t.Logf("page inbound-rtp after %v more: %+v", waited.Round(time.Millisecond), st)
	if _, ok := e.app.broker.Voice(s.SessionID); !ok {
		t.Fatal("connected, but the broker has no voice leg for the session")
	}
	// The echo agent's detector hears the fake mic's beeps: transcripts as
	// visitor voice lines, its replies as captions.
	b.waitJS(5*time.Second, "a transcript and its caption", voiceLinesJS+` > 0 && `+
		`[...Parley._debug.shadow().querySelectorAll(".log .msg.agent")].some((el) => el.textContent.startsWith("echo: utterance 1 ("))`)
	var voiceLines int
	b.mustEval(voiceLinesJS, &voiceLines)
	t.Logf("transcripts shown during %v of call: %d", time.Since(clicked).Round(time.Millisecond), voiceLines)
	b.screenshot("browser-voice-call.png")

	// What the page does after 2 s of ICE "disconnected": restartIce() and a
	// full re-offer over PATCH. The call goes on with new ICE credentials.
	const ufragJS = `Parley._debug.pc().remoteDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1]`
	var ufrag, newUfrag string
	b.mustEval(ufragJS, &ufrag)
	framesBefore := len(tap.Frames())
	b.mustEval(`Parley._debug.restartIce().then(() => true)`, nil)
	b.waitJS(5*time.Second, "connected after the ICE restart", widgetJS+`.call === "connected"`)
	b.mustEval(ufragJS, &newUfrag)
	if newUfrag == ufrag {
		t.Fatalf("ICE restart: the answer kept ice-ufrag %q", ufrag)
	}
	agenttest.Poll(t, 5*time.Second, "mic frames after the ICE restart", func() bool { return len(tap.Frames()) >= framesBefore+50 })

	// Hang up: the page is back to chat, the broker has no leg.
	b.click(".mic") // ends the call: back to text
	b.waitJS(10*time.Second, "the page back in chat", widgetJS+`.call === "ended" && Parley._debug.pc() === null
		&& `+sq(".root")+`.dataset.mode === "chat"
		&& `+sq(".mic")+`.getAttribute("aria-pressed") === "false"
		&& `+sq(".callbar")+`.hidden
		&& Parley._debug.shadow().activeElement === `+sq("textarea"))
	agenttest.Poll(t, 10*time.Second, "the broker to drop the voice leg", func() bool {
		_, ok := e.app.broker.Voice(s.SessionID)
		return !ok
	})
	b.waitJS(10*time.Second, "the mode frame back to chat", widgetJS+`.mode === "chat"`)
	b.mustEval(voiceLinesJS, &voiceLines)
	t.Logf("transcripts shown in all: %d; mic frames on NATS in all: %d", voiceLines, len(tap.Frames()))
	b.screenshot("browser-voice.png")

	// After a reload the history shows the voice turns as voice lines.
	spoken := 0
	for _, m := range e.History(session{ID: s.SessionID, Token: b.token()}) {
		if m["role"] == "visitor" && m["via"] == "voice" {
			spoken++
		}
	}
	b.must("reload", chromedp.Reload())
	b.waitJS(15*time.Second, "the chat to reconnect after the reload", `window.Parley && Parley._debug.state().chat === "connected"`)
	b.waitJS(5*time.Second, fmt.Sprintf("%d voice lines from the history", spoken), fmt.Sprintf("%s === %d", voiceLinesJS, spoken))

	// Talk again; the server switching the conversation to chat (here the
	// mode endpoint) ends the call in the page too.
	s = b.session()
	b.click(".mic")
	b.waitJS(15*time.Second, "the second call to connect", widgetJS+`.call === "connected" && `+widgetJS+`.mode === "voice"`)
	if r := e.Do("POST", "/v1/sessions/"+s.SessionID+"/mode", map[string]any{"mode": "chat"}, "Authorization", "Bearer "+b.token()); r.Status != 200 {
		t.Fatalf("mode chat: %d %s", r.Status, r.Raw)
	}
	b.waitJS(10*time.Second, "the page to end the call on the mode frame", widgetJS+`.call === "ended" && Parley._debug.pc() === null
		&& `+widgetJS+`.mode === "chat" && `+sq(".mic")+`.getAttribute("aria-pressed") === "false"`)
	agenttest.Poll(t, 10*time.Second, "the broker to drop the second leg", func() bool {
		_, ok := e.app.broker.Voice(s.SessionID)
		return !ok
	})
}

// TestBrowserChatAndReload: type in the demo, get the echo; a refused
// microphone is diagnosed and chat goes on; reload, and the resume token in
// sessionStorage brings the same conversation and its history back.
func TestBrowserChatAndReload(t *testing.T) {
	requireChromium(t)
	e := startEnv(t)
	b := newBrowser(t)
	b.openDemo(e)
	before := b.session()

	const text = "hello from chromium"
	b.typeMessage(text)
	d := b.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: "+text))
	t.Logf("send → echo shown: %v", d.Round(time.Millisecond))
	// A refused microphone: a visible message, a [parley:mic] console
	// line, and the chat goes on.
	b.mustEval(`navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("Permission denied", "NotAllowedError")); true`, nil)
	b.click(".mic")
	b.waitJS(5*time.Second, "the microphone diagnosis", widgetJS+`.micError === "denied" && `+widgetJS+`.call === "failed"
		&& `+sq(".mic")+`.getAttribute("aria-pressed") === "false"
		&& [...Parley._debug.shadow().querySelectorAll(".log .note.error")].some((el) => el.textContent.startsWith("Microphone access was denied"))`)
	agenttest.Poll(t, 5*time.Second, "the [parley:mic] console line", func() bool {
		return b.consoleHas("[parley:mic] getUserMedia denied (NotAllowedError)")
	})

	stored := b.resumeToken("pk_demo")
	if stored == "" {
		t.Fatal("no resume token in sessionStorage")
	}

	b.must("reload", chromedp.Reload())
	b.waitJS(15*time.Second, "the chat to reconnect after the reload", `window.Parley && Parley._debug.state().chat === "connected"`)
	after := b.resumedFrom(before)
	b.waitJS(5*time.Second, "the history after the reload",
		hasLine("visitor", text)+" && "+hasLine("agent", "echo: "+text))
	if fresh := b.resumeToken("pk_demo"); fresh == "" || fresh == stored {
		t.Fatal("the resume token in sessionStorage was not replaced by the new session's")
	}

	// The resumed session chats on.
	b.typeMessage("and again")
	b.waitJS(10*time.Second, "the second echo", hasLine("agent", "echo: and again"))
	if n := len(e.History(session{ID: after.SessionID, Token: b.token()})); n != 4 {
		t.Fatalf("history has %d messages, want 4", n)
	}
}

// consoleHas reports whether a console line so far contains substr.
func (b *browser) consoleHas(substr string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.console {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

// token is the page's session token.
func (b *browser) token() string {
	b.t.Helper()
	var tok string
	b.mustEval(`Parley._debug.session().session_token`, &tok)
	return tok
}
