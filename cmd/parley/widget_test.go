package main

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/cmd/internal/utterance"
	"github.com/parley-rtc/parley/configs"
)

// The embeddable widget (signaling/static/widget.js) in headless Chromium,
// installed the way a site installs it: pages of a second loopback origin,
// http://127.0.0.1:<port>, load
//
//	<script src="http://localhost:<parley>/widget.js" data-widget-key="pk_site" data-backend-url="http://localhost:<parley>">
//
// and the widget pk_site allows http://127.0.0.1:* only (no dev origins).
// Its agent is "guide": the echo agent (text, audio, transcripts) that also
// asks for an email, and navigates, when told to. One Parley, one site and
// one Chromium serve every subtest, each in its own tab (its own
// sessionStorage). Subtests run serially (MEASURED.md: one call ≈ 15 % of
// two cores).

const (
	siteKey            = "pk_site"
	siteWidgetID       = "wdg_site"
	siteAgent          = "guide"
	siteIdentitySecret = "site-identity-secret-0123456789abcdef"
)

// siteWidget is the widget the test site embeds.
func siteWidget() configs.WidgetConfig {
	return configs.WidgetConfig{
		Key: siteKey, DisplayTitle: "Acme help", LauncherLabel: "Ask Acme", WelcomeText: "Hi! Ask us anything about Acme.",
		Agent: siteAgent, AllowedOrigins: []string{"http://127.0.0.1:*"}, IdentitySecret: siteIdentitySecret,
		Colors:       configs.WidgetColors{Primary: "#0f766e", Accent: "#f59e0b"},
		Translations: map[string]configs.WidgetText{"fr": {LauncherLabel: "Une question ?", DisplayTitle: "Aide Acme"}},
		NavMap: []configs.NavTarget{
			{ID: "pricing", Path: "/pricing", Selector: "#plans", Label: "Pricing"},
			{ID: "faq", Path: "/", Selector: "#faq", Label: "the FAQ"},
		},
		Triggers: []configs.TriggerRule{
			// Scrolling straight to the bottom satisfies both: the higher
			// priority wins.
			{ID: "scroll-low", Type: "scroll_depth", Value: 40, Message: "Scrolled a bit?", Priority: 1},
			{ID: "scroll-high", Type: "scroll_depth", Value: 60, Message: "Looking for something? Ask me.", Priority: 9},
			{ID: "welcome-offer", Type: "url_matches", Pattern: "/welcome*", Message: "Welcome! Want a quick tour?",
				Priority: 5, Cooldown: "days", CooldownDays: 1},
		},
	}
}

// guideAgent is the echo agent (echo.go) plus commands: "faq", "pricing"
// and "secret" navigate (the last to a target outside the nav map), "email"
// asks for the visitor's email with a capture_request.
func guideAgent(ctx context.Context, c *agentbridge.Conversation) error {
	vad := utterance.NewDetector()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-c.Audio():
			_ = c.SendAudio(f)
			if u, ok := vad.Push(f); ok {
				id, err := c.SendTranscript(ctx, u.String(), true)
				if err == nil {
					err = echo(ctx, c, id, u.String())
				}
				if err != nil {
					return err
				}
			}
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			switch ev.Type {
			case agentbridge.EventUserMessage:
				if err := guide(ctx, c, ev); err != nil {
					return err
				}
			case agentbridge.EventModeChanged:
				state := agentbridge.StateIdle
				if ev.Mode == agentbridge.ModeVoice {
					state = agentbridge.StateListening
				}
				if err := c.SetState(ctx, state, ""); err != nil {
					return err
				}
			}
		}
	}
}

func guide(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
	text := strings.ToLower(ev.Text)
	act := func(action string, data any, reply string) error {
		if err := c.SendAction(ctx, action, data); err != nil {
			return err
		}
		return c.SendText(ctx, ev.MessageID, reply)
	}
	switch {
	case strings.Contains(text, "faq"):
		return act(agentbridge.ActionNavigate, map[string]string{"target": "faq"}, "Here are the common questions.")
	case strings.Contains(text, "pricing"):
		return act(agentbridge.ActionNavigate, map[string]string{"target": "pricing"}, "Let me show you our pricing.")
	case strings.Contains(text, "secret"):
		return act(agentbridge.ActionNavigate, map[string]string{"target": "admin-panel"}, "That is not a page I can show you.")
	case strings.Contains(text, "email"):
		return act(agentbridge.ActionCaptureRequest,
			map[string]any{"fields": []map[string]string{{"name": "email", "label": "Your work email"}}}, "Sure, what's your email?")
	}
	return echo(ctx, c, ev.MessageID, ev.Text)
}

// sitePage is a page of the embedding site: tall enough to scroll, with
// #plans and #faq to navigate to, and its own "Talk to us" button that
// calls Parley.open() from the click.
var sitePage = template.Must(template.New("site").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
  body { margin: 0; font: 18px/1.5 Georgia, serif; color: #1f2937; background: #fffdf7; }
  h1 { margin: 0; padding: 2rem; background: #fef3c7; }
  section { min-height: 1100px; padding: 2rem; border-top: 1px solid #e5e7eb; }
  button#cta { margin: 1rem 2rem; padding: .6rem 1.2rem; font: inherit; }
</style></head>
<body>
<h1>{{.Title}}</h1>
<button id="cta" type="button">Talk to us</button>
{{if .Container}}<div id="chatbox" style="width: 380px; height: 520px; margin: 0 2rem;"></div>{{end}}
<section id="intro"><h2>Acme anvils</h2><p>Drop-forged, guaranteed for life.</p></section>
<section id="plans"><h2>Plans</h2><p>Starter, Pro, Enterprise.</p></section>
<section id="faq"><h2>FAQ</h2><p>Yes, they float (no, they don't).</p></section>
<script>
  window.pageEvents = [];
  for (const name of ["ready", "open", "close", "message", "mode", "navigate", "capture", "error"]) {
    window.addEventListener("parley:" + name, () => pageEvents.push(name));
  }
  document.getElementById("cta").addEventListener("click", (e) => { window.ctaOpened = window.Parley && Parley.open(e.currentTarget); });
  {{if .SPA}}// A router that renders on popstate.
  window.routes = [];
  addEventListener("popstate", () => { routes.push(location.pathname); document.querySelector("h1").textContent = "Acme " + location.pathname; });{{end}}
</script>
<script src="{{.Parley}}/widget.js"{{if .Key}} data-widget-key="{{.Key}}"{{end}} data-backend-url="{{.Parley}}"
  {{- if .VisitorToken}} data-visitor-token="{{.VisitorToken}}"{{end}}
  {{- if .Language}} data-language="{{.Language}}" data-theme="{{.Theme}}" data-position="{{.Position}}"{{end}}
  {{- if .Container}} data-position="embedded" data-container="#chatbox"{{end}}
  {{- if .SPA}} data-spa{{end}} defer></script>
<script>window.pageScriptRan = true;</script>
</body></html>
`))

// site is the embedding site, its Parley and its browser.
type site struct {
	e      *env
	srv    *httptest.Server
	parley string // Parley's origin as the page sees it: http://localhost:<port>
	b      *browser
}

func startSite(t *testing.T) *site {
	t.Helper()
	e := startEnv(t, voiceConfig, withWidget(siteWidget()))
	w, err := agentbridge.NewWorker(e.agentConn(siteAgent), agentbridge.Options{Agent: siteAgent, Logger: discardLogger()}, guideAgent)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	_, port, ok := strings.Cut(e.app.server.Addr(), ":")
	if !ok {
		t.Fatalf("server address %q", e.app.server.Addr())
	}
	s := &site{e: e, parley: "http://localhost:" + port}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve)) // 127.0.0.1: another origin
	t.Cleanup(s.srv.Close)
	s.b = newBrowser(t)
	return s
}

// serve serves the site's pages: /, /pricing and /welcome embed the
// widget; /nokey forgets data-widget-key; /blocked is served with
// Permissions-Policy: microphone=(). ?as=ana adds a visitor JWT; ?look=fr
// asks for French, the dark theme and the bottom-left corner; ?embed=1
// embeds the panel in the page; ?spa=1 opts in to history.pushState
// navigation (data-spa) and has a popstate router.
func (s *site) serve(w http.ResponseWriter, r *http.Request) {
	data := map[string]string{"Title": "Acme", "Parley": s.parley, "Key": siteKey}
	switch r.URL.Path {
	case "/", "/welcome":
	case "/pricing":
		data["Title"] = "Acme pricing"
	case "/nokey":
		data["Key"] = ""
	case "/blocked":
		w.Header().Set("Permissions-Policy", "microphone=()")
	default:
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("look") == "fr" {
		data["Language"], data["Theme"], data["Position"] = "fr-CA", "dark", "bottom-left"
	}
	if r.URL.Query().Get("spa") == "1" {
		data["SPA"] = "1"
	}
	if r.URL.Query().Get("embed") == "1" {
		data["Container"] = "1"
	}
	if r.URL.Query().Get("as") == "ana" {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "user_ana", "email": "ana@example.com",
			"name": "Ana Silva", "exp": time.Now().Add(5 * time.Minute).Unix()}).SignedString([]byte(siteIdentitySecret))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		data["VisitorToken"] = tok
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = sitePage.Execute(w, data)
}

// newTabWith opens a tab for t and runs actions (emulation) in it first.
func (s *site) newTabWith(t *testing.T, actions ...chromedp.Action) *browser {
	t.Helper()
	tab := s.b.newTab(t)
	tab.must("set up the tab", actions...)
	return tab
}

// tab opens a new tab for t on the site's page path and waits for the
// widget to be ready.
func (s *site) tab(t *testing.T, path string) *browser {
	t.Helper()
	tab := s.b.newTab(t)
	tab.must("open "+path, chromedp.EmulateViewport(1000, 760), chromedp.Navigate(s.srv.URL+path))
	tab.waitReady()
	return tab
}

// waitReady waits for the widget of the page to be ready.
func (b *browser) waitReady() {
	b.t.Helper()
	b.waitJS(15*time.Second, "the widget to be ready", `window.Parley && Parley._debug && `+widgetJS+`.ready`)
}

// openChat opens the panel with the launcher and waits for the WebSocket.
func (b *browser) openChat() {
	b.t.Helper()
	b.click(".launcher")
	b.waitJS(15*time.Second, "the chat to connect", widgetJS+`.open && `+widgetJS+`.chat === "connected"`)
}

// consoleCount counts console lines so far containing substr.
func (b *browser) consoleCount(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.console {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// lines returns the conversation the widget shows: "role: text" of its
// visitor and agent lines, without the welcome and proactive messages.
func (b *browser) lines() []string {
	b.t.Helper()
	var out []string
	b.mustEval(`[...Parley._debug.shadow().querySelectorAll(".log .msg:not(.welcome):not(.proactive)")]
		.map((el) => (el.classList.contains("visitor") ? "visitor: " : "agent: ") + el.querySelector(".body").textContent)`, &out)
	return out
}

func TestWidget(t *testing.T) {
	requireChromium(t)
	started := time.Now()
	s := startSite(t)
	e := s.e
	t.Logf("Parley, site and Chromium up in %v", time.Since(started).Round(time.Millisecond))

	t.Run("ScriptTag", func(t *testing.T) {
		// The script itself: cacheable briefly, revalidated by ETag,
		// loadable from any origin.
		r := e.do("GET", "/widget.js", nil)
		h := r.header
		if r.status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/javascript") ||
			!strings.Contains(h.Get("Cache-Control"), "max-age=") || h.Get("ETag") == "" ||
			h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(r.raw, "window.Parley") {
			t.Fatalf("GET /widget.js: %d %v", r.status, h)
		}
		if r2 := e.do("GET", "/widget.js", nil, "If-None-Match", h.Get("ETag")); r2.status != http.StatusNotModified || r2.raw != "" {
			t.Fatalf("GET /widget.js If-None-Match: %d (%d bytes)", r2.status, len(r2.raw))
		}
		// Dev origins are off: only the site's origin may use pk_site.
		expectErr(t, "resolve from localhost", e.resolveWidget(siteKey, "http://localhost:3000"), 403, "ORIGIN_NOT_ALLOWED")

		b := s.tab(t, "/")
		b.waitJS(5*time.Second, "the launcher", sq(".launcher")+` && `+sq(".launcher")+`.getClientRects().length > 0
			&& `+sq(".launcher span")+`.textContent === "Ask Acme" && window.pageEvents.includes("ready")`)
		// The page's CSS doesn't reach in (Georgia, 18px), ours doesn't leak out.
		var fonts struct{ Widget, Page string }
		b.mustEval(`({Widget: getComputedStyle(`+sq(".launcher")+`).fontFamily, Page: getComputedStyle(document.body).fontFamily})`, &fonts)
		if strings.Contains(fonts.Widget, "Georgia") || !strings.Contains(fonts.Page, "Georgia") {
			t.Fatalf("fonts: widget %q, page %q", fonts.Widget, fonts.Page)
		}
		b.viewportShot("widget-launcher.png")

		// Parley.open() outside a user gesture is refused, with seed 001's
		// explanation in the console.
		var opened bool
		b.mustEval(`Parley.open()`, &opened)
		if opened || b.consoleCount("Parley.open() rejected — must be called synchronously from a real user gesture") != 1 {
			t.Fatalf("Parley.open() from script: %v", opened)
		}
		// From the page's own button (a real click) it opens, next to the
		// button, with the focus in the message box.
		b.clickAt(`document.getElementById("cta")`)
		b.waitJS(5*time.Second, "the panel opened by the page's button", `window.ctaOpened === true && `+widgetJS+`.open
			&& `+sq(".root")+`.classList.contains("anchored") && Parley._debug.shadow().activeElement === `+sq("textarea"))
		// Escape closes it and gives the focus to the launcher.
		b.must("press Escape", chromedp.KeyEvent(kb.Escape))
		b.waitJS(5*time.Second, "Escape to close the panel", `!`+widgetJS+`.open && `+sq(".panel")+`.hidden
			&& Parley._debug.shadow().activeElement === `+sq(".launcher")+` && `+sq(".launcher")+`.getAttribute("aria-expanded") === "false"
			&& pageEvents.includes("open") && pageEvents.includes("close")`)
		b.openChat()
		b.waitJS(5*time.Second, "the welcome text", hasLine("welcome", "Hi! Ask us anything about Acme."))
		b.viewportShot("widget-panel.png")

		// Without data-widget-key: one console error, and nothing breaks.
		nk := s.b.newTab(t)
		nk.must("open /nokey", chromedp.Navigate(s.srv.URL+"/nokey"))
		nk.waitJS(10*time.Second, "the page's scripts", `window.Parley !== undefined && window.pageScriptRan === true`)
		var ok bool
		nk.mustEval(`Parley.open() === false && typeof Parley.on("ready", () => {}) === "function"
			&& document.querySelector("[data-parley-widget]") === null`, &ok)
		if !ok {
			t.Fatal("window.Parley of a page without a key is not a harmless stub")
		}
		if n, all := nk.consoleCount("console.error"), nk.consoleCount("data-widget-key"); n != 1 || all != 1 || nk.consoleHas("exception") {
			t.Fatalf("no key: %d console errors, %d mentions of data-widget-key, exception %v; want one error", n, all, nk.consoleHas("exception"))
		}
	})

	t.Run("Look", func(t *testing.T) {
		// data-language (fr-CA → the widget's "fr" texts and French
		// labels), data-theme dark, data-position bottom-left; and
		// prefers-reduced-motion: no animation.
		b := s.newTabWith(t, emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{
			{Name: "prefers-reduced-motion", Value: "reduce"}}))
		b.must("open", chromedp.EmulateViewport(1000, 760), chromedp.Navigate(s.srv.URL+"/?look=fr"))
		b.waitReady()
		b.openChat()
		var look struct {
			Label, Title, Send, Theme, Background string
			Left                                  float64
			Animations                            int
		}
		b.mustEval(`({Label: `+sq(".launcher span")+`.textContent, Title: `+sq("h2")+`.textContent,
			Send: `+sq("button.send")+`.getAttribute("aria-label"), Theme: `+sq(".root")+`.dataset.theme,
			Background: getComputedStyle(`+sq(".panel")+`).backgroundColor, Left: `+sq(".launcher")+`.getBoundingClientRect().left,
			Animations: Parley._debug.shadow().getAnimations().length})`, &look)
		if look.Label != "Une question ?" || look.Title != "Aide Acme" || look.Send != "Envoyer" || look.Theme != "dark" ||
			look.Background != "rgb(17, 24, 39)" || look.Left > 40 || look.Animations != 0 {
			t.Fatalf("look = %+v", look)
		}
		b.viewportShot("widget-dark-fr.png")

		// Embedded in the page: no launcher, the panel in its container.
		m := s.tab(t, "/?embed=1")
		m.waitJS(10*time.Second, "the embedded chat", widgetJS+`.chat === "connected" && !`+sq(".launcher")+`
			&& document.querySelector("#chatbox [data-parley-widget]") !== null && `+sq(".panel")+`.getClientRects().length > 0`)
		m.typeMessage("embedded hello")
		m.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: embedded hello"))
		m.viewportShot("widget-embedded.png")
	})

	t.Run("Chat", func(t *testing.T) {
		b := s.tab(t, "/")
		b.openChat()
		b.typeMessage("hello from the site")
		d := b.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: hello from the site")+
			` && !`+sq(".msg.pending")+` && !`+sq(".typing"))
		t.Logf("send → echo shown: %v", d.Round(time.Millisecond))
		if got := b.lines(); strings.Join(got, "|") != "visitor: hello from the site|agent: echo: hello from the site" {
			t.Fatalf("widget shows %q", got)
		}
		sess := b.session()
		if h := transcript(e.history(session{ID: sess.SessionID, Token: b.token()})); strings.Join(h, "|") !=
			"visitor: hello from the site|agent: echo: hello from the site" {
			t.Fatalf("history = %q", h)
		}
		var events []string
		b.mustEval(`pageEvents`, &events)
		if strings.Count(strings.Join(events, ","), "message") != 2 {
			t.Fatalf("page events = %v, want a message event for each line", events)
		}
		b.viewportShot("widget-chat.png")
	})

	t.Run("Voice", func(t *testing.T) {
		b := s.tab(t, "/")
		b.openChat()
		sess := b.session()
		if sess.VoicePath == "" {
			t.Fatalf("session without voice_path: %+v", sess)
		}
		tap := e.tapAudio(e.app.broker.Subjects().InAudio(siteAgent, sess.ConversationID))
		b.mustEval(`Parley._debug.audioConstraints = {echoCancellation: false, noiseSuppression: false, autoGainControl: false}; true`, nil)
		b.click("button.mic")
		clicked := time.Now()
		waitFor(t, 15*time.Second, "the first mic frame on NATS", func() bool { return len(tap.snapshot()) > 0 })
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
		b.click(".totext")
		b.waitJS(10*time.Second, "the switch to text", widgetJS+`.call === "ended" && `+widgetJS+`.mode === "chat"
			&& Parley._debug.pc() === null && `+sq(".callbar")+`.hidden`)
		waitFor(t, 10*time.Second, "the broker to drop the voice leg", func() bool {
			_, ok := e.app.broker.Voice(sess.SessionID)
			return !ok
		})
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
		waitFor(t, 10*time.Second, "the widget and the history to agree", func() bool {
			hist = transcript(e.history(session{ID: sess.SessionID, Token: b.token()}))
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
	})

	t.Run("Trigger", func(t *testing.T) {
		b := s.tab(t, "/")
		var open bool
		b.mustEval(widgetJS+`.open`, &open)
		if open {
			t.Fatal("the panel is open before any trigger")
		}
		// Scrolling to the bottom satisfies both scroll rules at once: the
		// higher priority one opens the panel with its message, without
		// taking the focus from the page.
		b.mustEval(`window.scrollTo(0, document.documentElement.scrollHeight); true`, nil)
		d := b.waitJS(5*time.Second, "the scroll trigger", widgetJS+`.open && `+widgetJS+`.triggers.join() === "scroll-high"
			&& `+hasLine("proactive", "Looking for something? Ask me.")+` && document.activeElement === document.body`)
		t.Logf("scroll → panel open: %v", d.Round(time.Millisecond))
		b.waitJS(10*time.Second, "the chat to connect", widgetJS+`.chat === "connected"`)
		b.viewportShot("widget-trigger.png")

		// Cooldown "session": closed, reloaded and scrolled again, the rule
		// that fired keeps quiet; the one it beat has its turn. (The
		// widget's scroll listener runs before this one.)
		b.click(".close")
		b.must("reload", chromedp.Reload())
		b.waitReady()
		b.mustEval(`(async () => {
			const scrolled = () => new Promise((r) => addEventListener("scroll", () => r(), {once: true}));
			let s = scrolled(); scrollTo(0, 0); await s;
			s = scrolled(); scrollTo(0, document.documentElement.scrollHeight); await s;
			return true; })()`, nil)
		var state struct {
			Open     bool
			Triggers []string
		}
		b.mustEval(widgetJS, &state)
		if !state.Open || strings.Join(state.Triggers, ",") != "scroll-low" {
			t.Fatalf("after the reload: %+v, want scroll-high cooling down and scroll-low firing", state)
		}

		// url_matches on /welcome*, cooldown in days (localStorage).
		w := s.tab(t, "/welcome?utm=ad")
		w.waitJS(5*time.Second, "the url trigger", widgetJS+`.open && `+widgetJS+`.triggers.join() === "welcome-offer"
			&& `+hasLine("proactive", "Welcome! Want a quick tour?"))
		var at string
		w.mustEval(`localStorage.getItem("parley.trigger.pk_site.welcome-offer") || ""`, &at)
		if at == "" {
			t.Fatal("no cooldown timestamp in localStorage")
		}
	})

	t.Run("Capture", func(t *testing.T) {
		b := s.tab(t, "/?as=ana") // a signed-in visitor: data-visitor-token
		b.openChat()
		var claims map[string]any
		b.mustEval(`Parley._debug.session().visitor_claims`, &claims)
		if claims["email"] != "ana@example.com" || claims["method"] != "jwt" {
			t.Fatalf("visitor_claims = %v", claims)
		}
		// The agent asks: the pill comes pre-filled from the identity.
		b.typeMessage("can you take my email?")
		b.waitJS(10*time.Second, "the capture pill", sq(`.capture input[name="email"]`)+`
			&& `+sq(`.capture input[name="email"]`)+`.value === "ana@example.com"
			&& `+sq(".capture label")+`.textContent === "Your work email"`)
		b.viewportShot("widget-capture.png")
		b.click(".capture-ok")
		b.waitJS(10*time.Second, "the confirmation", sq(".capture.saved")+` && `+sq(".capture.saved")+`.textContent.includes("ana@example.com")`)
		// The visitor volunteers a phone number: a pill offers to save it.
		b.typeMessage("or call me on +1 555 010 0199")
		b.waitJS(10*time.Second, "the volunteered pill", sq(`.capture input[name="phone"]`)+`
			&& `+sq(`.capture input[name="phone"]`)+`.value === "+1 555 010 0199"`)
		// The echo's reply scrolls the log; let it land before clicking.
		b.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: or call me on +1 555 010 0199"))
		b.click(".capture:not(.saved) .capture-ok")
		b.waitJS(10*time.Second, "the second confirmation", `Parley._debug.shadow().querySelectorAll(".capture.saved").length === 2
			&& pageEvents.filter((e) => e === "capture").length === 2`)
		b.viewportShot("widget-capture-saved.png")

		sess := b.session()
		ak, _ := e.newAdminKey("", broker.ScopeOpsRead)
		r := e.do("GET", "/v1/admin/leads?widget="+siteWidgetID, nil, "Authorization", "Bearer "+ak)
		leads, _ := r.body["leads"].([]any)
		got := map[string]string{}
		for _, l := range leads {
			m := l.(map[string]any)
			if m["conversation_id"] == sess.ConversationID {
				got[m["kind"].(string)] = fmt.Sprintf("%s/%s", m["value"], m["source"])
			}
		}
		if r.status != http.StatusOK || got["email"] != "ana@example.com/agent_asked" || got["phone"] != "+1 555 010 0199/volunteered" {
			t.Fatalf("leads: %d %v (%s)", r.status, got, r.raw)
		}
	})

	t.Run("Navigate", func(t *testing.T) {
		b := s.tab(t, "/")
		b.openChat()
		// A target on this page: a scroll, with directions in words.
		b.typeMessage("where is the faq?")
		b.waitJS(10*time.Second, "the scroll to #faq", hasLine("directions", "Taking you to the FAQ…")+`
			&& `+widgetJS+`.navigations.map((n) => n.target + ":" + n.via).join() === "faq:scroll"
			&& Math.abs(document.getElementById("faq").getBoundingClientRect().top) < 2 && location.pathname === "/"`)
		// A target on another page: the page changes, the conversation
		// follows, and the widget scrolls to the target's selector.
		b.typeMessage("show me pricing")
		d := b.waitJS(15*time.Second, "/pricing, scrolled to #plans, same conversation", `location.pathname === "/pricing"
			&& window.Parley && Parley._debug.state().ready && `+widgetJS+`.chat === "connected" && `+widgetJS+`.open
			&& Math.abs(document.getElementById("plans").getBoundingClientRect().top) < 2
			&& `+hasLine("visitor", "where is the faq?")+` && `+hasLine("agent", "Let me show you our pricing."))
		t.Logf("navigate → /pricing resumed and scrolled: %v", d.Round(time.Millisecond))
		b.viewportShot("widget-navigate.png")

		// A target outside the nav map: refused by Parley, no navigation.
		b.typeMessage("show me the secret admin page")
		b.waitJS(10*time.Second, "the refusal", hasLine("agent", "That is not a page I can show you.")+`
			&& `+widgetJS+`.errors.includes("NAV_TARGET_UNKNOWN") && `+widgetJS+`.navigations.length === 0
			&& location.pathname === "/pricing"`)
		if !strings.Contains(e.logs.String(), `"msg":"agent action refused"`) {
			t.Fatal("the refusal is not logged")
		}
		// Page code is held to the same origin.
		var ok bool
		b.mustEval(`Parley.navigate("https://example.com/pricing") === false && location.pathname === "/pricing"`, &ok)
		if !ok || !b.consoleHas("[parley:nav] Refused to navigate to https://example.com/pricing") {
			t.Fatal("Parley.navigate to another origin was not refused")
		}

		// A single-page app: with data-spa, history.pushState and a
		// popstate; with an onNavigate handler, the site's router. The page
		// is never reloaded (a call would go on).
		spa := s.tab(t, "/?spa=1")
		spa.openChat()
		spa.mustEval(`window.notReloaded = true`, nil)
		spa.typeMessage("show me pricing")
		spa.waitJS(10*time.Second, "the pushState navigation", `location.pathname === "/pricing" && window.notReloaded
			&& routes.join() === "/pricing" && `+widgetJS+`.navigations.map((n) => n.via).join() === "spa"
			&& Math.abs(document.getElementById("plans").getBoundingClientRect().top) < 2`)
		spa.mustEval(`Parley.onNavigate((path, selector) => { (window.routerCalls = window.routerCalls || []).push(path + " " + selector);
			history.pushState({}, "", path); }); true`, nil)
		spa.typeMessage("and the faq?")
		spa.waitJS(10*time.Second, "the router navigation", `location.pathname === "/" && window.notReloaded
			&& routerCalls.join() === "/ #faq" && routes.join() === "/pricing"
			&& `+widgetJS+`.navigations.map((n) => n.via).join() === "spa,router"
			&& Math.abs(document.getElementById("faq").getBoundingClientRect().top) < 2`)
		var events []string
		spa.mustEval(`pageEvents.filter((e) => e === "navigate")`, &events)
		if len(events) != 2 {
			t.Fatalf("navigate events: %v", events)
		}
	})

	t.Run("Reload", func(t *testing.T) {
		b := s.tab(t, "/")
		b.openChat()
		before := b.session()
		b.typeMessage("first")
		b.waitJS(10*time.Second, "the first echo", hasLine("agent", "echo: first"))
		b.typeMessage("second")
		b.waitJS(10*time.Second, "the second echo", hasLine("agent", "echo: second"))
		var stored string
		b.mustEval(`sessionStorage.getItem("parley.resume.pk_site") || ""`, &stored)

		b.must("reload", chromedp.Reload())
		b.waitReady()
		b.waitJS(15*time.Second, "the conversation back", widgetJS+`.open && `+widgetJS+`.chat === "connected"`)
		after := b.session()
		if !after.Resumed || after.ConversationID != before.ConversationID || after.SessionID == before.SessionID {
			t.Fatalf("after the reload %+v, before %+v", after, before)
		}
		if got := strings.Join(b.lines(), "|"); got != "visitor: first|agent: echo: first|visitor: second|agent: echo: second" {
			t.Fatalf("after the reload the widget shows %q", got)
		}
		var fresh string
		b.mustEval(`sessionStorage.getItem("parley.resume.pk_site") || ""`, &fresh)
		if fresh == "" || fresh == stored {
			t.Fatal("the resume token was not replaced")
		}
		b.typeMessage("third")
		b.waitJS(10*time.Second, "the third echo", hasLine("agent", "echo: third"))
		b.viewportShot("widget-reload.png")

		// A stale token: a fresh conversation, no error shown.
		b.mustEval(`sessionStorage.setItem("parley.resume.pk_site", "stale-resume-token"); true`, nil)
		b.must("reload", chromedp.Reload())
		b.waitReady()
		b.waitJS(15*time.Second, "a fresh conversation", widgetJS+`.chat === "connected" && `+hasLine("welcome", "Hi! Ask us anything about Acme."))
		fresh2 := b.session()
		var errs []string
		b.mustEval(widgetJS+`.errors`, &errs)
		if fresh2.Resumed || fresh2.ConversationID == before.ConversationID || len(errs) != 0 || len(b.lines()) != 0 {
			t.Fatalf("after a stale token: %+v, errors %v, lines %q", fresh2, errs, b.lines())
		}
	})

	t.Run("MicBlocked", func(t *testing.T) {
		b := s.tab(t, "/blocked") // Permissions-Policy: microphone=()
		b.openChat()
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
	})
	t.Logf("TestWidget took %v", time.Since(started).Round(time.Millisecond))
}
