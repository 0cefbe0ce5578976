package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/broker"
)

// Proactive triggers, a reload that resumes the conversation, and one an
// operator ended that does not. (Subtests of TestWidget, widget_test.go.)

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

// testWidgetClosed: an operator ends the room (DELETE /v1/ops/rooms/{id}).
// Ending ends it: the widget says the conversation was closed instead of
// resuming it behind the visitor's back, and says so again after a
// reload; a new conversation starts only when the visitor writes.
func testWidgetClosed(t *testing.T, s *site) {
	b := s.chatTab(t, "/")
	b.typeMessage("before the close")
	b.waitJS(10*time.Second, "the reply", hasLine("agent", "echo: before the close"))
	before := b.session()
	key, _ := s.e.newAdminKey("", broker.ScopeOpsRead, broker.ScopeOpsWrite)
	if !poll(10*time.Second, func() bool {
		return s.e.Do("GET", "/v1/ops/rooms/"+before.ConversationID, nil, "Authorization", "Bearer "+key).Status == http.StatusOK
	}) {
		t.Fatal("the room never showed in ops")
	}
	if r := s.e.Do("DELETE", "/v1/ops/rooms/"+before.ConversationID, nil, "Authorization", "Bearer "+key); r.Status != http.StatusNoContent {
		t.Fatalf("end the room: %d %s", r.Status, r.Raw)
	}
	closedNote := sq(".note.closed") + ` !== null && ` + sq(".note.closed button.newconv") + ` !== null`
	b.waitJS(10*time.Second, "the closed note", closedNote+` && `+widgetJS+`.chat === "closed"`)

	b.must("reload", chromedp.Reload())
	b.waitJS(15*time.Second, "the widget after the reload", `window.Parley && Parley._debug.state().ready`)
	// The panel was open: it opens again by itself, and no chat connects.
	b.waitJS(10*time.Second, "the closed note after the reload", widgetJS+`.open && `+closedNote+` && `+widgetJS+`.chat === "idle"`)
	var session any
	b.mustEval(`Parley._debug.session()`, &session)
	if session != nil {
		t.Fatalf("a session after the reload of a closed conversation: %v", session)
	}

	b.typeMessage("a new start")
	b.waitJS(10*time.Second, "the reply in a new conversation", hasLine("agent", "echo: a new start"))
	if after := b.session(); after.ConversationID == before.ConversationID || after.Resumed {
		t.Fatalf("after the close: %+v, before: %+v", after, before)
	}
}
