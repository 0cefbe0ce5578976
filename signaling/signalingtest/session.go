package signalingtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/parley-rtc/parley/configs"
)

// DemoOrigin is an origin the demo widget (configs.DemoWidgetKey) allows.
const DemoOrigin = "http://localhost:3000"

// The example widget of configs/parley.example.yaml.
const (
	ExampleKey    = "pk_example"
	ExampleID     = "wdg_example"
	ExampleSecret = "example-identity-secret-0123456789abcdef"
	ExampleOrigin = "https://www.example.com" // example.com allows any subdomain
)

// Session is a created session.
type Session struct {
	ID, ConversationID, Token, ResumeToken string
	Resumed                                bool
}

// SessionFrom reads a session out of a create-session answer.
func SessionFrom(r Response) Session {
	return Session{ID: r.Str("session_id"), ConversationID: r.Str("conversation_id"),
		Token: r.Str("session_token"), ResumeToken: r.Str("resume_token")}
}

// Resolve returns a fresh challenge for the demo widget from origin.
func (c *Client) Resolve(origin string) string {
	c.T.Helper()
	r := c.Do("POST", "/v1/widget/resolve", map[string]any{"widget_key": configs.DemoWidgetKey}, "Origin", origin)
	if r.Status != http.StatusOK || r.Str("challenge") == "" {
		c.T.Fatalf("resolve: %d %s", r.Status, r.Raw)
	}
	return r.Str("challenge")
}

// NewSession creates a chat session on the demo widget from DemoOrigin,
// with extra fields added to (or replacing those of) the request.
func (c *Client) NewSession(extra map[string]any) Session {
	c.T.Helper()
	req := map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": c.Resolve(DemoOrigin), "mode": "chat"}
	maps.Copy(req, extra)
	r := c.Do("POST", "/v1/sessions", req, "Origin", DemoOrigin)
	if r.Status != http.StatusCreated {
		c.T.Fatalf("create session: %d %s", r.Status, r.Raw)
	}
	s := SessionFrom(r)
	s.Resumed, _ = r.Body["resumed"].(bool)
	return s
}

// ResolveWidget calls resolve for a widget key from origin ("" sends no
// Origin).
func (c *Client) ResolveWidget(key, origin string, headers ...string) Response {
	c.T.Helper()
	if origin != "" {
		headers = append([]string{"Origin", origin}, headers...)
	}
	return c.Do("POST", "/v1/widget/resolve", map[string]any{"widget_key": key}, headers...)
}

// ChallengeFor returns a fresh challenge for a widget key from origin.
func (c *Client) ChallengeFor(key, origin string, headers ...string) string {
	c.T.Helper()
	r := c.ResolveWidget(key, origin, headers...)
	if r.Status != http.StatusOK || r.Str("challenge") == "" {
		c.T.Fatalf("resolve %s from %s: %d %s", key, origin, r.Status, r.Raw)
	}
	return r.Str("challenge")
}

// CreateSession resolves a widget from origin and creates a session with
// extra fields (a visitor identity, say); it returns the raw answer.
func (c *Client) CreateSession(key, origin string, extra map[string]any) Response {
	c.T.Helper()
	req := map[string]any{"widget_key": key, "challenge": c.ChallengeFor(key, origin)}
	maps.Copy(req, extra)
	return c.Do("POST", "/v1/sessions", req, "Origin", origin)
}

// MustCreateSession is CreateSession that must succeed.
func (c *Client) MustCreateSession(key, origin string, extra map[string]any) Session {
	c.T.Helper()
	r := c.CreateSession(key, origin, extra)
	if r.Status != http.StatusCreated {
		c.T.Fatalf("create %s session from %s: %d %s", key, origin, r.Status, r.Raw)
	}
	return SessionFrom(r)
}

// Post sends a visitor message on s over HTTP.
func (c *Client) Post(s Session, body, clientID string, wait bool) Response {
	c.T.Helper()
	return c.Do("POST", "/v1/sessions/"+s.ID+"/messages",
		map[string]any{"body": body, "client_message_id": clientID, "wait": wait},
		"Authorization", "Bearer "+s.Token)
}

// History is s's message history (up to 500 messages).
func (c *Client) History(s Session) []map[string]any {
	c.T.Helper()
	r := c.Do("GET", "/v1/sessions/"+s.ID+"/history?message_limit=500", nil, "Authorization", "Bearer "+s.Token)
	if r.Status != http.StatusOK {
		c.T.Fatalf("history: %d %s", r.Status, r.Raw)
	}
	raw, _ := r.Body["messages"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, m := range raw {
		out = append(out, m.(map[string]any))
	}
	return out
}

// Transcript renders history as "role: body" lines.
func Transcript(msgs []map[string]any) []string {
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%s: %s", m["role"], m["body"]))
	}
	return out
}

// ExpectTranscript fails the test unless s's history, as Transcript
// renders it, is want.
func (c *Client) ExpectTranscript(s Session, want []string) {
	c.T.Helper()
	if got := Transcript(c.History(s)); !slices.Equal(got, want) {
		c.T.Fatalf("history = %q, want %q", got, want)
	}
}

// ExpectErr fails the test unless r is the coded error.
func ExpectErr(t testing.TB, what string, r Response, status int, code string) {
	t.Helper()
	if r.Status != status || r.ErrCode() != code {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.Status, r.Raw, status, code)
	}
}

// UserHash is hex(HMAC-SHA256(key = identity secret, msg = user_id)), as a
// site's server computes it for a visitor identity.
func UserHash(secret, userID string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(userID))
	return hex.EncodeToString(m.Sum(nil))
}

// ExampleWidget is pk_example as the example config at path
// (configs/parley.example.yaml) defines it; it fails the test when that
// widget is gone or no longer matches the Example constants.
func ExampleWidget(t testing.TB, path string) configs.WidgetConfig {
	t.Helper()
	cfg, err := configs.LoadWith(path, nil, nil)
	if err != nil {
		t.Fatalf("load the example config: %v", err)
	}
	i := slices.IndexFunc(cfg.Widgets, func(w configs.WidgetConfig) bool { return w.Key == ExampleKey })
	if i < 0 {
		t.Fatal("parley.example.yaml has no pk_example widget")
	}
	w := cfg.Widgets[i]
	if w.ID != ExampleID || w.IdentitySecret != ExampleSecret {
		t.Fatalf("pk_example is %s with another secret; update the test constants", w.ID)
	}
	return w
}
