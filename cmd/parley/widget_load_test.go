package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// How a site loads the widget (the script tag, a missing key) and how it
// looks. (Subtests of TestWidget, widget_test.go.)

func testWidgetScriptTag(t *testing.T, s *site) {
	e := s.e
	// The script itself: cacheable briefly, revalidated by ETag,
	// loadable from any origin.
	r := e.Do("GET", "/widget.js", nil)
	h := r.Header
	if r.Status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/javascript") ||
		!strings.Contains(h.Get("Cache-Control"), "max-age=") || h.Get("ETag") == "" ||
		h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(r.Raw, "window.Parley") {
		t.Fatalf("GET /widget.js: %d %v", r.Status, h)
	}
	if r2 := e.Do("GET", "/widget.js", nil, "If-None-Match", h.Get("ETag")); r2.Status != http.StatusNotModified || r2.Raw != "" {
		t.Fatalf("GET /widget.js If-None-Match: %d (%d bytes)", r2.Status, len(r2.Raw))
	}
	// Dev origins are off: only the site's origin may use pk_site.
	signalingtest.ExpectErr(t, "resolve from localhost", e.ResolveWidget(siteKey, "http://localhost:3000"), 403, "ORIGIN_NOT_ALLOWED")

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
}

func testWidgetLook(t *testing.T, s *site) {
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
}
