package signaling_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parley-rtc/parley/configs"
)

// expectReply reads the frames answering one message sent on the socket
// and checks their order: ack, typing, chunk…, done.
func expectReply(t *testing.T, c *wsClient, clientID, want string) (userID, replyID string) {
	t.Helper()
	ack := c.next()
	if ack.str("type") != "ack" || ack.str("client_message_id") != clientID || ack.str("message_id") == "" {
		t.Fatalf("first frame = %v, want ack for %s", ack, clientID)
	}
	userID = ack.str("message_id")
	typing := c.next()
	if typing.str("type") != "typing" || typing.str("reply_to") != userID {
		t.Fatalf("second frame = %v, want typing for %s", typing, userID)
	}
	var chunks strings.Builder
	index := 0.0
	for {
		f := c.next()
		switch f.str("type") {
		case "chunk":
			if f["index"] != index || f.str("reply_to") != userID {
				t.Fatalf("chunk = %v, want index %v reply_to %s", f, index, userID)
			}
			index++
			chunks.WriteString(f.str("chunk"))
			replyID = f.str("message_id")
			continue
		case "done":
			if index < 1 {
				t.Fatalf("done before any chunk: %v", f)
			}
			if f.str("body") != want || chunks.String() != want || f.str("message_id") != replyID {
				t.Fatalf("done = %v (chunks %q), want body %q", f, chunks.String(), want)
			}
			return userID, replyID
		default:
			t.Fatalf("unexpected frame %v while streaming a reply", f)
		}
	}
}

func TestChatOverWebSocket(t *testing.T) {
	e := startEnv(t)
	s := e.newSession(nil)
	c := e.mustDialWS(s)

	var want []string
	for i, text := range []string{"hello", "héllo wörld ✓ — unicode", strings.Repeat("long ", 200)} {
		id := fmt.Sprintf("ws-%d", i)
		c.send(map[string]any{"type": "message", "body": text, "client_message_id": id})
		expectReply(t, c, id, "echo: "+text)
		want = append(want, "visitor: "+text, "agent: echo: "+text)
	}
	c.send(map[string]any{"type": "ping"})
	if f := c.next(); f.str("type") != "pong" {
		t.Fatalf("ping answered with %v", f)
	}
	if got := transcript(e.history(s)); !slices.Equal(got, want) {
		t.Fatalf("history = %q, want %q", got, want)
	}
}

func TestChatOverHTTP(t *testing.T) {
	e := startEnv(t)
	s := e.newSession(nil)

	r := e.post(s, "first", "h-1", true)
	if r.status != http.StatusOK {
		t.Fatalf("wait=true: %d %s", r.status, r.raw)
	}
	reply := r.body["reply"].(map[string]any)
	if reply["body"] != "echo: first" || r.str("user_message_id") == "" || r.str("conversation_id") != s.ConversationID {
		t.Fatalf("reply = %s", r.raw)
	}

	r = e.post(s, "second", "h-2", false)
	if r.status != http.StatusAccepted || r.str("user_message_id") == "" || r.body["reply"] != nil {
		t.Fatalf("wait=false: %d %s", r.status, r.raw)
	}
	want := []string{"visitor: first", "agent: echo: first", "visitor: second", "agent: echo: second"}
	waitFor(t, 10*time.Second, "the second reply in history", func() bool {
		return slices.Equal(transcript(e.history(s)), want)
	})
	msgs := e.history(s)
	for i, m := range msgs {
		if m["id"] == "" || m["created_at"] == "" {
			t.Fatalf("message %d lacks id or created_at: %v", i, m)
		}
		if i > 0 && m["seq"].(float64) <= msgs[i-1]["seq"].(float64) {
			t.Fatalf("history out of order: %v", msgs)
		}
	}
	r = e.do("GET", "/v1/sessions/"+s.ID+"/history?message_limit=2", nil, "Authorization", "Bearer "+s.Token)
	if got := r.body["messages"].([]any); len(got) != 2 || got[1].(map[string]any)["body"] != "echo: second" {
		t.Fatalf("message_limit=2 gave %s", r.raw)
	}
}

func TestDuplicateClientMessageID(t *testing.T) {
	e := startEnv(t)
	s := e.newSession(nil)

	first := e.post(s, "once", "dup-1", true)
	again := e.post(s, "once", "dup-1", true)
	if first.status != 200 || again.status != 200 {
		t.Fatalf("statuses %d, %d: %s %s", first.status, again.status, first.raw, again.raw)
	}
	if again.body["duplicate"] != true || again.str("user_message_id") != first.str("user_message_id") {
		t.Fatalf("retry = %s, first = %s", again.raw, first.raw)
	}
	if a, b := first.body["reply"].(map[string]any), again.body["reply"].(map[string]any); a["message_id"] != b["message_id"] || a["body"] != b["body"] {
		t.Fatalf("replies differ: %v vs %v", a, b)
	}

	// The same over the WebSocket: the retry is acked as a duplicate and
	// answered with the same reply.
	c := e.mustDialWS(s)
	c.send(map[string]any{"type": "message", "body": "twice", "client_message_id": "dup-2"})
	userID, replyID := expectReply(t, c, "dup-2", "echo: twice")
	c.send(map[string]any{"type": "message", "body": "twice", "client_message_id": "dup-2"})
	ack := c.next()
	if ack.str("type") != "ack" || ack["duplicate"] != true || ack.str("message_id") != userID {
		t.Fatalf("retry ack = %v", ack)
	}
	done, _ := c.until("done")
	if done.str("message_id") != replyID || done.str("body") != "echo: twice" {
		t.Fatalf("retry reply = %v, want %s", done, replyID)
	}

	want := []string{"visitor: once", "agent: echo: once", "visitor: twice", "agent: echo: twice"}
	if got := transcript(e.history(s)); !slices.Equal(got, want) {
		t.Fatalf("history = %q, want %q", got, want)
	}
}

func TestResumeSessionKeepsConversation(t *testing.T) {
	e := startEnv(t)
	s := e.newSession(nil)
	if r := e.post(s, "before reload", "r-1", true); r.status != 200 {
		t.Fatalf("post: %d %s", r.status, r.raw)
	}
	s2 := e.newSession(map[string]any{"resume_token": s.ResumeToken})
	if !s2.Resumed || s2.ConversationID != s.ConversationID || s2.ID == s.ID || s2.ResumeToken == s.ResumeToken {
		t.Fatalf("resumed session = %+v, first = %+v", s2, s)
	}
	if r := e.post(s2, "after reload", "r-2", true); r.status != 200 {
		t.Fatalf("post after resume: %d %s", r.status, r.raw)
	}
	want := []string{"visitor: before reload", "agent: echo: before reload", "visitor: after reload", "agent: echo: after reload"}
	if got := transcript(e.history(s2)); !slices.Equal(got, want) {
		t.Fatalf("history = %q, want %q", got, want)
	}
	// A resume token is single use.
	r := e.do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey,
		"challenge": e.resolve(testOrigin), "resume_token": s.ResumeToken}, "Origin", testOrigin)
	if r.status != http.StatusUnauthorized || r.errCode() != "RESUME_TOKEN_INVALID" {
		t.Fatalf("reused resume token: %d %s", r.status, r.raw)
	}
}

func TestEndSession(t *testing.T) {
	e := startEnv(t)
	s := e.newSession(nil)
	c := e.mustDialWS(s)
	if r := e.do("DELETE", "/v1/sessions/"+s.ID, nil, "Authorization", "Bearer "+s.Token); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if code, reason := c.closeStatus(); code != websocket.StatusNormalClosure || reason != "SESSION_ENDED" {
		t.Fatalf("socket closed with %d %q", code, reason)
	}
	if r := e.post(s, "too late", "", false); r.status != http.StatusGone || r.errCode() != "SESSION_ENDED" {
		t.Fatalf("post after end: %d %s", r.status, r.raw)
	}
	if r := e.do("DELETE", "/v1/sessions/"+s.ID, nil, "Authorization", "Bearer "+s.Token); r.status != http.StatusNoContent {
		t.Fatalf("second delete: %d %s", r.status, r.raw)
	}
	// The conversation stays and can be resumed.
	s2 := e.newSession(map[string]any{"resume_token": s.ResumeToken})
	if s2.ConversationID != s.ConversationID {
		t.Fatalf("resume after end gave conversation %s, want %s", s2.ConversationID, s.ConversationID)
	}
	if r := e.post(s2, "back again", "", true); r.status != 200 {
		t.Fatalf("post after resume: %d %s", r.status, r.raw)
	}
}

func TestHealthAndReady(t *testing.T) {
	e := startEnv(t)
	if r := e.do("GET", "/healthz", nil); r.status != 200 {
		t.Fatalf("healthz: %d", r.status)
	}
	waitFor(t, 5*time.Second, "the echo worker in readyz", func() bool {
		r := e.do("GET", "/readyz", nil)
		agents, _ := r.body["agents"].(map[string]any)
		return r.status == 200 && agents["echo"] == 1.0
	})
	r := e.do("GET", "/", nil)
	if r.status != 200 || !strings.Contains(r.raw, "pk_demo") {
		t.Fatalf("demo page: %d", r.status)
	}
}
