package main

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestAgentActionsPassThrough: an agent's action events reach the visitor's
// WebSocket as action frames, and a reply sent whole still streams as
// typing, chunk, done.
func TestAgentActionsPassThrough(t *testing.T) {
	e := startEnv(t, noEcho)
	e.startAgent(signalingtest.OnMessages(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		// (navigate is checked against the widget's nav map: see widget_test.go)
		if err := c.SendAction(ctx, agentbridge.ActionHandoff, map[string]string{"queue": "sales"}); err != nil {
			return err
		}
		return c.SendText(ctx, ev.MessageID, "see pricing")
	}))

	s := e.NewSession(nil)
	c := e.MustDialWS(s)
	c.Send(map[string]any{"type": "message", "body": "where are prices?", "client_message_id": "a-1"})
	if f := c.Next(); f.Str("type") != "ack" {
		t.Fatalf("want ack, got %v", f)
	}
	var types []string
	var action frame
	for {
		f := c.Next()
		types = append(types, f.Str("type"))
		if f.Str("type") == "action" {
			action = f
		}
		if f.Str("type") == "done" {
			if f.Str("body") != "see pricing" {
				t.Fatalf("done = %v", f)
			}
			break
		}
	}
	if strings.Join(types, ",") != "typing,action,chunk,done" {
		t.Fatalf("frames = %v, want typing,action,chunk,done", types)
	}
	data, _ := action["data"].(map[string]any)
	if action.Str("action") != "handoff" || data["queue"] != "sales" {
		t.Fatalf("action frame = %v", action)
	}
}

// TestEchoAcknowledgesModeChange: a mode_changed event in the log is
// acknowledged by the echo agent with its state, which the visitor sees.
func TestEchoAcknowledgesModeChange(t *testing.T) {
	e := startEnv(t)
	s, c := e.chatSession("m-1", "hi")

	// The broker writes mode_changed when the visitor switches to voice
	// (the broker is the only writer of the log; agents hear it live).
	bs, err := e.app.broker.Session(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.app.broker.SetMode(t.Context(), bs, agentbridge.ModeVoice, "test"); err != nil {
		t.Fatal(err)
	}
	mode := c.Next()
	if mode.Str("type") != "mode" || mode.Str("mode") != "voice" {
		t.Fatalf("want mode frame, got %v", mode)
	}
	state := c.Next()
	if state.Str("type") != "agent_state" || state.Str("state") != agentbridge.StateListening {
		t.Fatalf("want agent_state listening, got %v", state)
	}
}

// TestOneDispatchPerConversation: messages to a conversation its worker
// holds do not dispatch it again.
func TestOneDispatchPerConversation(t *testing.T) {
	e := startEnv(t)
	s := e.NewSession(nil)
	c := e.MustDialWS(s)
	for i, text := range []string{"one", "two", "three", "four"} {
		id := string(rune('a' + i))
		c.Send(map[string]any{"type": "message", "body": text, "client_message_id": id})
		signalingtest.ExpectReply(t, c, id, "echo: "+text)
	}
	if n := strings.Count(e.logs.String(), `"msg":"conversation dispatched"`); n != 1 {
		t.Fatalf("conversation dispatched %d times, want once", n)
	}
}

// TestSecretsNeverLogged runs a full session at debug level and looks for
// every secret it used in the logs.
func TestSecretsNeverLogged(t *testing.T) {
	key := strings.Repeat("k", 40)
	e := startEnv(t, func(c *configs.Config) { c.Security.SigningKey = key; c.Log.Level = "debug" })
	challenge := e.Resolve(testOrigin)
	r := e.Do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": challenge}, "Origin", testOrigin)
	s := session{ID: r.Str("session_id"), ConversationID: r.Str("conversation_id"), Token: r.Str("session_token"), ResumeToken: r.Str("resume_token")}
	c := e.MustDialWS(s)
	c.Send(map[string]any{"type": "message", "body": "secret test", "client_message_id": "s-1"})
	signalingtest.ExpectReply(t, c, "s-1", "echo: secret test")
	e.Post(s, "over http", "s-2", true)
	e.History(s)
	s2 := e.NewSession(map[string]any{"resume_token": s.ResumeToken})
	e.Do("DELETE", "/v1/sessions/"+s2.ID, nil, "Authorization", "Bearer "+s2.Token)
	c.Conn.Close(websocket.StatusNormalClosure, "")
	e.stop()

	logs := e.logs.String()
	if !strings.Contains(logs, "session started") {
		t.Fatal("the run logged nothing: the check would prove nothing")
	}
	secrets := map[string]string{"signing key": key, "challenge": challenge,
		"session token": s.Token, "resume token": s.ResumeToken, "second session token": s2.Token, "second resume token": s2.ResumeToken}
	// The embedded NATS's operator, account and user seeds.
	for name, seed := range natsSeeds(t, e.cfg.DataDir) {
		secrets["NATS seed "+name] = seed
	}
	for name, secret := range secrets {
		if secret == "" {
			t.Fatalf("%s is empty", name)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the logs", name)
		}
	}
}
