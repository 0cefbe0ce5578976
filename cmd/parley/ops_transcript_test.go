package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/broker"
)

// TestBrowserOpsTranscript: the /ops/ page shows a room's conversation as
// a person reads it — the visitor's and the agent's turns as text (the
// agent's reply is streamed in several text_delta events), the call
// starting and ending — with no raw text_delta in sight; one click on
// "Raw events" shows them. A new turn appears while the detail is open.
func TestBrowserOpsTranscript(t *testing.T) {
	requireChromium(t)
	e := startEnv(t, fastRooms)
	ak, _ := e.newAdminKey("", broker.ScopeOpsRead)
	s, ws := e.chatSession("ot-1", "what are your opening hours?")
	for _, mode := range []string{"voice", "chat"} {
		if r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": mode}, "Authorization", "Bearer "+s.Token); r.Status != 200 {
			t.Fatalf("mode %s: %d %s", mode, r.Status, r.Raw)
		}
	}
	deltas := 0
	for _, ev := range e.readLog(s.ConversationID) {
		if ev.Type == "text_delta" {
			deltas++
		}
	}
	if deltas < 2 {
		t.Fatalf("the echo reply came in %d text_delta events; the test needs a streamed one", deltas)
	}
	e.WaitRoom(ak, s.ConversationID, "the room", func(broker.Room) bool { return true })

	b := newBrowser(t)
	b.must("open /ops/", chromedp.EmulateViewport(1280, 1000), chromedp.Navigate(e.base+"/ops/"))
	b.must("enter the admin key", chromedp.WaitVisible("#key", chromedp.ByQuery),
		chromedp.SendKeys("#key", ak, chromedp.ByQuery), chromedp.Click("#connect", chromedp.ByQuery))
	opsWait(b, 10*time.Second, "the room's row", fmt.Sprintf(`document.querySelector('#rooms tbody tr[data-cid=%q]') !== null`, s.ConversationID))
	b.must("open the detail", chromedp.Click(fmt.Sprintf(`#rooms tbody tr[data-cid=%q] button.open`, s.ConversationID), chromedp.ByQuery))

	turn := func(role, text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#detail-transcript li.turn.%s")].some((li) => li.textContent.includes(%s))`, role, jsString(text))
	}
	marker := func(kind string) string {
		return fmt.Sprintf(`document.querySelector("#detail-transcript li.marker.%s") !== null`, kind)
	}
	d := opsWait(b, 10*time.Second, "the turns and the call markers", turn("visitor", "what are your opening hours?")+" && "+
		turn("agent", "echo: what are your opening hours?")+" && "+marker("call_started")+" && "+marker("call_ended"))
	t.Logf("detail with its transcript in %v", d.Round(time.Millisecond))
	var shown struct {
		Lines   []string `json:"lines"`
		Visible string   `json:"visible"`
		RawOpen bool     `json:"rawOpen"`
		Agent   string   `json:"agent"`
	}
	b.mustEval(`({lines: [...document.querySelectorAll("#detail-transcript li")].map((li) => li.className + ": " + li.textContent),
		visible: document.getElementById("detail").innerText, rawOpen: document.getElementById("detail-raw").open,
		agent: document.querySelector("#detail-transcript li.turn.agent .who").textContent})`, &shown)
	t.Logf("transcript on the page:\n  %s", strings.Join(shown.Lines, "\n  "))
	if shown.RawOpen || strings.Contains(shown.Visible, "text_delta") {
		t.Fatalf("raw events shown before asking (open %v):\n%s", shown.RawOpen, shown.Visible)
	}
	if !strings.HasPrefix(shown.Agent, "Agent echo") {
		t.Fatalf("the agent turn is headed %q, want the agent's name", shown.Agent)
	}
	agentTurns := 0
	for _, l := range shown.Lines {
		if strings.HasPrefix(l, "turn agent") {
			agentTurns++
		}
	}
	if agentTurns != 1 {
		t.Fatalf("%d agent turns for one streamed reply:\n%s", agentTurns, strings.Join(shown.Lines, "\n"))
	}
	b.screenshot("ops-transcript.png")

	// One click shows the raw events.
	b.must("open the raw events", chromedp.Click("#detail-raw summary", chromedp.ByQuery, chromedp.NodeVisible))
	opsWait(b, 5*time.Second, "the raw text_delta rows", `document.getElementById("detail-raw").open && `+
		`[...document.querySelectorAll("#detail-events tbody tr")].some((tr) => tr.innerText.includes("text_delta"))`)
	b.screenshot("ops-transcript-raw.png")

	// The open detail follows the conversation.
	ws.Send(map[string]any{"type": "message", "body": "and on sundays?", "client_message_id": "ot-2"})
	d = opsWait(b, 10*time.Second, "the new turns without a refresh", turn("visitor", "and on sundays?")+" && "+turn("agent", "echo: and on sundays?"))
	t.Logf("a new turn on the open detail in %v", d.Round(time.Millisecond))
	if b.consoleHas("exception") {
		t.Fatal("exceptions in the page")
	}

	// The server shuts down: the page's stream ends at once and the page
	// says why while it tries to reconnect.
	closed := make(chan struct{}) // the visitor's side of the close handshake
	go func() {
		defer close(closed)
		ws.CloseStatus()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.app.server.Shutdown(ctx); err != nil {
		t.Fatalf("server shutdown: %v", err)
	}
	t.Logf("server shutdown with the ops page open took %v", time.Since(start).Round(time.Millisecond))
	opsWait(b, 5*time.Second, "the page to say the server is shutting down", `parleyOps.state === "reconnecting" && `+
		`document.getElementById("status").textContent.includes("shutting down")`)
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the visitor's WebSocket did not close")
	}
}
