package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/broker"
)

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
