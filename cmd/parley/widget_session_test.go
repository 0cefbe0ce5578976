package main

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Proactive triggers, and a reload that resumes the conversation.
// (Subtests of TestWidget, widget_test.go.)

func testWidgetTrigger(t *testing.T, s *site) {
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
}

func testWidgetReload(t *testing.T, s *site) {
	b := s.chatTab(t, "/")
	before := b.session()
	b.typeMessage("first")
	b.waitJS(10*time.Second, "the first echo", hasLine("agent", "echo: first"))
	b.typeMessage("second")
	b.waitJS(10*time.Second, "the second echo", hasLine("agent", "echo: second"))
	stored := b.resumeToken("pk_site")

	b.must("reload", chromedp.Reload())
	b.waitReady()
	b.waitJS(15*time.Second, "the conversation back", widgetJS+`.open && `+widgetJS+`.chat === "connected"`)
	b.resumedFrom(before)
	if got := strings.Join(b.lines(), "|"); got != "visitor: first|agent: echo: first|visitor: second|agent: echo: second" {
		t.Fatalf("after the reload the widget shows %q", got)
	}
	if fresh := b.resumeToken("pk_site"); fresh == "" || fresh == stored {
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
}
