package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// Chat in the widget: messages, the email capture an agent asks for, and
// guided navigation. (Subtests of TestWidget, widget_test.go.)

func testWidgetChat(t *testing.T, s *site) {
	e := s.e
	b := s.chatTab(t, "/")
	b.typeMessage("hello from the site")
	d := b.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: hello from the site")+
		` && !`+sq(".msg.pending")+` && !`+sq(".typing"))
	t.Logf("send → echo shown: %v", d.Round(time.Millisecond))
	if got := b.lines(); strings.Join(got, "|") != "visitor: hello from the site|agent: echo: hello from the site" {
		t.Fatalf("widget shows %q", got)
	}
	sess := b.session()
	if h := signalingtest.Transcript(e.History(session{ID: sess.SessionID, Token: b.token()})); strings.Join(h, "|") !=
		"visitor: hello from the site|agent: echo: hello from the site" {
		t.Fatalf("history = %q", h)
	}
	var events []string
	b.mustEval(`pageEvents`, &events)
	if strings.Count(strings.Join(events, ","), "message") != 2 {
		t.Fatalf("page events = %v, want a message event for each line", events)
	}
	b.viewportShot("widget-chat.png")
}

func testWidgetCapture(t *testing.T, s *site) {
	e := s.e
	b := s.chatTab(t, "/?as=ana") // a signed-in visitor: data-visitor-token
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
	r := e.Do("GET", "/v1/admin/leads?widget="+siteWidgetID, nil, "Authorization", "Bearer "+ak)
	leads, _ := r.Body["leads"].([]any)
	got := map[string]string{}
	for _, l := range leads {
		m := l.(map[string]any)
		if m["conversation_id"] == sess.ConversationID {
			got[m["kind"].(string)] = fmt.Sprintf("%s/%s", m["value"], m["source"])
		}
	}
	if r.Status != http.StatusOK || got["email"] != "ana@example.com/agent_asked" || got["phone"] != "+1 555 010 0199/volunteered" {
		t.Fatalf("leads: %d %v (%s)", r.Status, got, r.Raw)
	}
}

func testWidgetNavigate(t *testing.T, s *site) {
	e := s.e
	b := s.chatTab(t, "/")
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
	spa := s.chatTab(t, "/?spa=1")
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
}
