package signaling_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestShutdownEndsLongRequests: Shutdown does not wait for what never ends
// by itself. With an ops event stream open, a visitor's WebSocket, another
// whose peer never answers and a chat request awaiting a reply the agent
// never gives, it returns in under 2 s: the stream gets a shutdown event
// and ends, the WebSocket closes with 1001, the silent one is cut, the
// waiting request answers 503 SHUTTING_DOWN saying its message is stored,
// and a request that still reaches the handler gets 503 SHUTTING_DOWN.
func TestShutdownEndsLongRequests(t *testing.T) {
	e := startEnv(t, noEcho, fastRooms)
	nc := e.agentConn("echo")
	// An agent that takes the conversation and never answers.
	signalingtest.StartWorker(t, nc, "echo",
		func(ctx context.Context, c *agentbridge.Conversation) error {
			return signalingtest.EachEvent(ctx, c, func(agentbridge.Event) error { return nil })
		})

	ak, _ := e.newAdminKey("", broker.ScopeOpsRead)
	st := e.openOpsEvents(ak)
	st.next("ready")
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	gone := e.MustDialWS(s) // a page whose network went away: it never answers
	st.until("room", s.ConversationID)
	posted := make(chan signalingtest.Response, 1)
	go func() { posted <- e.Post(s, "is anyone there?", "sd-1", true) }()
	agenttest.Poll(t, 10*time.Second, "the message stored and awaiting its reply", func() bool {
		for _, ev := range e.readLog(s.ConversationID) {
			if ev.Type == agentbridge.EventUserMessage && ev.Text == "is anyone there?" {
				return true
			}
		}
		return false
	})

	// The visitor's page answers the close handshake, as a browser does.
	type closed struct {
		code   int
		reason string
	}
	wsClosed := make(chan closed, 1)
	go func() {
		code, reason := ws.CloseStatus()
		wsClosed <- closed{int(code), reason}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	took := time.Since(start)
	t.Logf("Shutdown with an event stream, two WebSockets (one silent) and a waiting chat request took %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("Shutdown took %v, want under 2 s", took)
	}
	// Room updates sent before the shutdown may come first.
	gotShutdown := false
	for ev := range st.events {
		if ev.name == "shutdown" {
			if !strings.Contains(ev.data, "shutting down") {
				t.Fatalf("shutdown event data %s", ev.data)
			}
			gotShutdown = true
			break
		}
		if ev.name != "room" {
			t.Fatalf("event %q %s before the shutdown event", ev.name, ev.data)
		}
	}
	if !gotShutdown {
		t.Fatal("the event stream ended without a shutdown event")
	}
	select {
	case ev, ok := <-st.events:
		if ok {
			t.Fatalf("an event after shutdown: %s %s", ev.name, ev.data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream did not end")
	}
	if c := <-wsClosed; c.code != 1001 || c.reason != "SHUTTING_DOWN" {
		t.Fatalf("WebSocket closed with %d %q, want 1001 SHUTTING_DOWN", c.code, c.reason)
	}
	// Its close frame was sent before it was cut.
	if code, reason := gone.CloseStatus(); code != 1001 || reason != "SHUTTING_DOWN" {
		t.Fatalf("the silent WebSocket ended with %d %q, want 1001 SHUTTING_DOWN", code, reason)
	}
	var r signalingtest.Response
	select {
	case r = <-posted:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting chat request did not answer")
	}
	signalingtest.ExpectErr(t, "a chat request waiting at shutdown", r, http.StatusServiceUnavailable, "SHUTTING_DOWN")
	if details, _ := r.Body["error"].(map[string]any)["details"].(map[string]any); details["stored"] != true {
		t.Fatalf("the answer does not say the message is stored: %s", r.Raw)
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/v1/sessions", strings.NewReader(`{}`)))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "SHUTTING_DOWN") || rec.Header().Get("Connection") != "close" {
		t.Fatalf("a request during shutdown: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}
