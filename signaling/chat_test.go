package signaling_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

func TestChatOverWebSocket(t *testing.T) {
	e := startEnv(t)
	s := e.NewSession(nil)
	c := e.MustDialWS(s)

	var want []string
	for i, text := range []string{"hello", "héllo wörld ✓ — unicode", strings.Repeat("long ", 200)} {
		id := fmt.Sprintf("ws-%d", i)
		c.Send(map[string]any{"type": "message", "body": text, "client_message_id": id})
		signalingtest.ExpectReply(t, c, id, "echo: "+text)
		want = append(want, "visitor: "+text, "agent: echo: "+text)
	}
	c.Send(map[string]any{"type": "ping"})
	if f := c.Next(); f.Str("type") != "pong" {
		t.Fatalf("ping answered with %v", f)
	}
	e.ExpectTranscript(s, want)
}

func TestChatOverHTTP(t *testing.T) {
	e := startEnv(t)
	s := e.NewSession(nil)

	r := e.Post(s, "first", "h-1", true)
	if r.Status != http.StatusOK {
		t.Fatalf("wait=true: %d %s", r.Status, r.Raw)
	}
	reply := r.Body["reply"].(map[string]any)
	if reply["body"] != "echo: first" || r.Str("user_message_id") == "" || r.Str("conversation_id") != s.ConversationID {
		t.Fatalf("reply = %s", r.Raw)
	}

	r = e.Post(s, "second", "h-2", false)
	if r.Status != http.StatusAccepted || r.Str("user_message_id") == "" || r.Body["reply"] != nil {
		t.Fatalf("wait=false: %d %s", r.Status, r.Raw)
	}
	want := []string{"visitor: first", "agent: echo: first", "visitor: second", "agent: echo: second"}
	agenttest.Poll(t, 10*time.Second, "the second reply in history", func() bool {
		return slices.Equal(signalingtest.Transcript(e.History(s)), want)
	})
	msgs := e.History(s)
	for i, m := range msgs {
		if m["id"] == "" || m["created_at"] == "" {
			t.Fatalf("message %d lacks id or created_at: %v", i, m)
		}
		if i > 0 && m["seq"].(float64) <= msgs[i-1]["seq"].(float64) {
			t.Fatalf("history out of order: %v", msgs)
		}
	}
	r = e.Do("GET", "/v1/sessions/"+s.ID+"/history?message_limit=2", nil, "Authorization", "Bearer "+s.Token)
	if got := r.Body["messages"].([]any); len(got) != 2 || got[1].(map[string]any)["body"] != "echo: second" {
		t.Fatalf("message_limit=2 gave %s", r.Raw)
	}
}

func TestDuplicateClientMessageID(t *testing.T) {
	e := startEnv(t)
	s := e.NewSession(nil)

	first := e.Post(s, "once", "dup-1", true)
	again := e.Post(s, "once", "dup-1", true)
	if first.Status != 200 || again.Status != 200 {
		t.Fatalf("statuses %d, %d: %s %s", first.Status, again.Status, first.Raw, again.Raw)
	}
	if again.Body["duplicate"] != true || again.Str("user_message_id") != first.Str("user_message_id") {
		t.Fatalf("retry = %s, first = %s", again.Raw, first.Raw)
	}
	if a, b := first.Body["reply"].(map[string]any), again.Body["reply"].(map[string]any); a["message_id"] != b["message_id"] || a["body"] != b["body"] {
		t.Fatalf("replies differ: %v vs %v", a, b)
	}

	// The same over the WebSocket: the retry is acked as a duplicate and
	// answered with the same reply.
	c := e.MustDialWS(s)
	c.Send(map[string]any{"type": "message", "body": "twice", "client_message_id": "dup-2"})
	userID, replyID := signalingtest.ExpectReply(t, c, "dup-2", "echo: twice")
	c.Send(map[string]any{"type": "message", "body": "twice", "client_message_id": "dup-2"})
	ack := c.Next()
	if ack.Str("type") != "ack" || ack["duplicate"] != true || ack.Str("message_id") != userID {
		t.Fatalf("retry ack = %v", ack)
	}
	done, _ := c.Until("done")
	if done.Str("message_id") != replyID || done.Str("body") != "echo: twice" {
		t.Fatalf("retry reply = %v, want %s", done, replyID)
	}

	want := []string{"visitor: once", "agent: echo: once", "visitor: twice", "agent: echo: twice"}
	e.ExpectTranscript(s, want)
}

func TestResumeSessionKeepsConversation(t *testing.T) {
	e := startEnv(t)
	s := e.NewSession(nil)
	if r := e.Post(s, "before reload", "r-1", true); r.Status != 200 {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	s2 := e.NewSession(map[string]any{"resume_token": s.ResumeToken})
	if !s2.Resumed || s2.ConversationID != s.ConversationID || s2.ID == s.ID || s2.ResumeToken == s.ResumeToken {
		t.Fatalf("resumed session = %+v, first = %+v", s2, s)
	}
	if r := e.Post(s2, "after reload", "r-2", true); r.Status != 200 {
		t.Fatalf("post after resume: %d %s", r.Status, r.Raw)
	}
	want := []string{"visitor: before reload", "agent: echo: before reload", "visitor: after reload", "agent: echo: after reload"}
	e.ExpectTranscript(s2, want)
	// A resume token is single use.
	r := e.Do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey,
		"challenge": e.Resolve(testOrigin), "resume_token": s.ResumeToken}, "Origin", testOrigin)
	if r.Status != http.StatusUnauthorized || r.ErrCode() != "RESUME_TOKEN_INVALID" {
		t.Fatalf("reused resume token: %d %s", r.Status, r.Raw)
	}
}

func TestEndSession(t *testing.T) {
	e := startEnv(t)
	s := e.NewSession(nil)
	c := e.MustDialWS(s)
	if r := e.Do("DELETE", "/v1/sessions/"+s.ID, nil, "Authorization", "Bearer "+s.Token); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Raw)
	}
	if code, reason := c.CloseStatus(); code != websocket.StatusNormalClosure || reason != "SESSION_ENDED" {
		t.Fatalf("socket closed with %d %q", code, reason)
	}
	if r := e.Post(s, "too late", "", false); r.Status != http.StatusGone || r.ErrCode() != "SESSION_ENDED" {
		t.Fatalf("post after end: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("DELETE", "/v1/sessions/"+s.ID, nil, "Authorization", "Bearer "+s.Token); r.Status != http.StatusNoContent {
		t.Fatalf("second delete: %d %s", r.Status, r.Raw)
	}
	// The conversation stays and can be resumed.
	s2 := e.NewSession(map[string]any{"resume_token": s.ResumeToken})
	if s2.ConversationID != s.ConversationID {
		t.Fatalf("resume after end gave conversation %s, want %s", s2.ConversationID, s.ConversationID)
	}
	if r := e.Post(s2, "back again", "", true); r.Status != 200 {
		t.Fatalf("post after resume: %d %s", r.Status, r.Raw)
	}
}

func TestHealthAndReady(t *testing.T) {
	e := startEnv(t)
	if r := e.Do("GET", "/healthz", nil); r.Status != 200 {
		t.Fatalf("healthz: %d", r.Status)
	}
	agenttest.Poll(t, 5*time.Second, "the echo worker in readyz", func() bool {
		r := e.Do("GET", "/readyz", nil)
		agents, _ := r.Body["agents"].(map[string]any)
		return r.Status == 200 && agents["echo"] == 1.0
	})
	r := e.Do("GET", "/", nil)
	if r.Status != 200 || !strings.Contains(r.Raw, "pk_demo") {
		t.Fatalf("demo page: %d", r.Status)
	}
}
