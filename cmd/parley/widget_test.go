package main

import (
	"context"
	"html/template"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/agentbridge/echo"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
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
	return echo.Agent{OnAudio: transcriber(), OnMessage: guide}.Run(ctx, c)
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
	return echo.Reply(ctx, c, ev.MessageID, ev.Text)
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
	signalingtest.StartWorker(t, e.agentConn(siteAgent), siteAgent, guideAgent)
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

// chatTab opens a tab on the site's page path and the widget's chat in
// it.
func (s *site) chatTab(t *testing.T, path string) *browser {
	t.Helper()
	b := s.tab(t, path)
	b.openChat()
	return b
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

// backToText taps back to text on a call and waits until the widget shows
// the chat with the call ended, its bar hidden and its transport (the
// expression transportJS) null, and e's broker has dropped the session's
// voice leg.
func (b *browser) backToText(e *env, sessionID, transportJS string) {
	b.t.Helper()
	b.click(".totext")
	b.waitJS(10*time.Second, "the switch to text", widgetJS+`.call === "ended" && `+widgetJS+`.mode === "chat"
		&& `+transportJS+` === null && `+sq(".callbar")+`.hidden`)
	agenttest.Poll(b.t, 10*time.Second, "the broker to drop the voice leg", func() bool {
		_, ok := e.app.broker.Voice(sessionID)
		return !ok
	})
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
	// One subtest per topic, in the files widget_*_test.go; they share the
	// site, its Parley and its Chromium, and run in this order.
	runOnSite(t, startSite, []siteSubtest[*site]{
		{"ScriptTag", testWidgetScriptTag},
		{"Look", testWidgetLook},
		{"Chat", testWidgetChat},
		{"Voice", testWidgetVoice},
		{"Speech", testWidgetSpeech},
		{"Trigger", testWidgetTrigger},
		{"Capture", testWidgetCapture},
		{"Navigate", testWidgetNavigate},
		{"Reload", testWidgetReload},
		{"Closed", testWidgetClosed},
		{"MicBlocked", testWidgetMicBlocked},
	})
}

// siteSubtest is one topic of a test whose subtests share a site S (its
// Parley and its Chromium).
type siteSubtest[S any] struct {
	name string
	run  func(*testing.T, S)
}

// runOnSite starts the site with start once Chromium is known to be
// here, and runs subs on it in order.
func runOnSite[S any](t *testing.T, start func(*testing.T) S, subs []siteSubtest[S]) {
	requireChromium(t)
	started := time.Now()
	s := start(t)
	t.Logf("Parley, site and Chromium up in %v", time.Since(started).Round(time.Millisecond))
	for _, sub := range subs {
		t.Run(sub.name, func(t *testing.T) { sub.run(t, s) })
	}
	t.Logf("%s took %v", t.Name(), time.Since(started).Round(time.Millisecond))
}
