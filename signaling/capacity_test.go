package signaling_test

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestConversationLimitOnTheWire: a widget at its cap of live
// conversations tells its next visitor CONVERSATION_LIMIT (503 with the
// message kept over HTTP, an error frame on the WebSocket), while another
// tenant's widget on the same agent answers; when a slot frees, the
// waiting visitor is answered without writing again.
func TestConversationLimitOnTheWire(t *testing.T) {
	t.Parallel()
	w := signalingtest.ExampleWidget(t, filepath.Join("..", "configs", "parley.example.yaml"))
	w.MaxConversations = 1
	e := startEnv(t, func(c *configs.Config) { c.Widgets = append(c.Widgets, w) })
	key, origin := signalingtest.ExampleKey, signalingtest.ExampleOrigin

	// Sessions that have not written hold nothing: many can wait.
	first := e.MustCreateSession(key, origin, nil)
	second := e.MustCreateSession(key, origin, nil)
	if r := e.Post(first, "hello", "c-1", true); r.Status != http.StatusOK {
		t.Fatalf("the widget's first conversation: %d %s", r.Status, r.Raw)
	}

	r := e.Post(second, "anyone?", "c-2", true)
	if r.Status != http.StatusServiceUnavailable || r.ErrCode() != "CONVERSATION_LIMIT" {
		t.Fatalf("the widget's second conversation: %d %s, want 503 CONVERSATION_LIMIT", r.Status, r.Raw)
	}
	details, _ := r.Body["error"].(map[string]any)["details"].(map[string]any)
	if details["stored"] != true || details["user_message_id"] == "" {
		t.Fatalf("503 details = %v: the message must be kept", details)
	}
	ws, _, err := e.DialWS(second, "", "Origin", origin)
	if err != nil {
		t.Fatal(err)
	}
	ws.Send(map[string]any{"type": "message", "body": "still there?", "client_message_id": "c-3"})
	if f, _ := ws.Until("error"); f.Str("code") != "CONVERSATION_LIMIT" || f.Str("message") == "" {
		t.Fatalf("error frame = %v", f)
	}

	// The demo widget (another tenant, the same agent) is unaffected.
	demo := e.NewSession(nil)
	if r := e.Post(demo, "hi", "d-1", true); r.Status != http.StatusOK {
		t.Fatalf("another tenant's visitor: %d %s", r.Status, r.Raw)
	}

	// The first visitor leaves: the waiting conversation takes its slot
	// and both of its messages are answered.
	if r := e.Do("DELETE", "/v1/sessions/"+first.ID, nil, "Authorization", "Bearer "+first.Token); r.Status != http.StatusNoContent {
		t.Fatalf("end the first session: %d %s", r.Status, r.Raw)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		f, _ := ws.Until("done")
		got[f.Str("body")] = true
	}
	if !got["echo: anyone?"] || !got["echo: still there?"] {
		t.Fatalf("replies once a slot freed: %v", got)
	}
	agenttest.Poll(t, 10*time.Second, "the limit counted in /metrics", func() bool {
		m := e.Scrape()["parley_agents_conversations_limited_total"]
		return m != nil && len(m.Metric) > 0 && m.Metric[0].GetCounter().GetValue() >= 1
	})
}
