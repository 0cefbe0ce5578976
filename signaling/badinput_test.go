package signaling_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestBadInput sends every kind of bad input the public API can get and
// checks the coded error and that nothing was stored.
func TestBadInput(t *testing.T) {
	e := startEnv(t)
	s := e.NewSession(nil)
	auth := []string{"Authorization", "Bearer " + s.Token}
	msgPath := "/v1/sessions/" + s.ID + "/messages"

	cases := []struct {
		name         string
		method, path string
		body         any
		headers      []string
		status       int
		code         string
	}{
		{"bad JSON", "POST", msgPath, `{"body": "x"`, auth, 400, "BAD_REQUEST"},
		{"not an object", "POST", msgPath, `["body"]`, auth, 400, "BAD_REQUEST"},
		{"trailing data", "POST", msgPath, `{"body":"x"} {"body":"y"}`, auth, 400, "BAD_REQUEST"},
		{"empty body field", "POST", msgPath, map[string]any{"body": ""}, auth, 422, "VALIDATION_FAILED"},
		{"blank body field", "POST", msgPath, map[string]any{"body": "  \n\t "}, auth, 422, "VALIDATION_FAILED"},
		{"missing body field", "POST", msgPath, map[string]any{"client_message_id": "x"}, auth, 422, "VALIDATION_FAILED"},
		{"body over 4000 chars", "POST", msgPath, map[string]any{"body": strings.Repeat("é", 4001)}, auth, 422, "VALIDATION_FAILED"},
		{"bad client_message_id", "POST", msgPath, map[string]any{"body": "x", "client_message_id": "has space"}, auth, 422, "VALIDATION_FAILED"},
		{"request over 64 KiB", "POST", msgPath, map[string]any{"body": strings.Repeat("x", 70000)}, auth, 413, "PAYLOAD_TOO_LARGE"},
		{"missing token", "POST", msgPath, map[string]any{"body": "x"}, nil, 401, "SESSION_TOKEN_INVALID"},
		{"wrong token", "POST", msgPath, map[string]any{"body": "x"}, []string{"Authorization", "Bearer nope"}, 401, "SESSION_TOKEN_INVALID"},
		{"another session's token", "POST", msgPath, map[string]any{"body": "x"}, []string{"Authorization", "Bearer " + e.NewSession(nil).Token}, 401, "SESSION_TOKEN_INVALID"},
		{"unknown session", "POST", "/v1/sessions/ses_doesnotexist/messages", map[string]any{"body": "x"}, auth, 404, "SESSION_NOT_FOUND"},
		{"malformed session id", "GET", "/v1/sessions/..%2f/history", nil, auth, 404, "SESSION_NOT_FOUND"},
		{"history bad limit", "GET", "/v1/sessions/" + s.ID + "/history?message_limit=0", nil, auth, 422, "VALIDATION_FAILED"},
		{"message from a foreign origin", "POST", msgPath, map[string]any{"body": "x"}, append([]string{"Origin", "https://evil.example"}, auth...), 403, "ORIGIN_NOT_ALLOWED"},
		{"wrong content type", "POST", "/v1/widget/resolve", nil, []string{"Origin", testOrigin, "Content-Type", "text/plain"}, 400, "BAD_REQUEST"},
		{"unknown widget key", "POST", "/v1/widget/resolve", map[string]any{"widget_key": "pk_nope"}, []string{"Origin", testOrigin}, 401, "UNKNOWN_WIDGET_KEY"},
		{"missing origin", "POST", "/v1/widget/resolve", map[string]any{"widget_key": "pk_demo"}, nil, 401, "ORIGIN_REQUIRED"},
		{"origin not allowed", "POST", "/v1/widget/resolve", map[string]any{"widget_key": "pk_demo"}, []string{"Origin", "https://localhost.evil.com"}, 403, "ORIGIN_NOT_ALLOWED"},
		{"opaque origin", "POST", "/v1/widget/resolve", map[string]any{"widget_key": "pk_demo"}, []string{"Origin", "null"}, 403, "ORIGIN_NOT_ALLOWED"},
		{"session without challenge", "POST", "/v1/sessions", map[string]any{"widget_key": "pk_demo"}, []string{"Origin", testOrigin}, 401, "CHALLENGE_INVALID"},
		{"forged challenge", "POST", "/v1/sessions", map[string]any{"widget_key": "pk_demo", "challenge": "v1.eyJ3IjoicGtfZGVtbyJ9.AAAA"}, []string{"Origin", testOrigin}, 401, "CHALLENGE_INVALID"},
		{"challenge from another origin", "POST", "/v1/sessions", map[string]any{"widget_key": "pk_demo", "challenge": e.Resolve("http://127.0.0.1:9999")}, []string{"Origin", testOrigin}, 401, "CHALLENGE_INVALID"},
		{"bad mode", "POST", "/v1/sessions", map[string]any{"widget_key": "pk_demo", "challenge": e.Resolve(testOrigin), "mode": "fax"}, []string{"Origin", testOrigin}, 422, "VALIDATION_FAILED"},
		{"bad resume token", "POST", "/v1/sessions", map[string]any{"widget_key": "pk_demo", "challenge": e.Resolve(testOrigin), "resume_token": "nope"}, []string{"Origin", testOrigin}, 401, "RESUME_TOKEN_INVALID"},
		{"unknown route", "GET", "/v1/nothing", nil, nil, 404, "NOT_FOUND"},
		{"wrong method", "PUT", "/v1/widget/resolve", nil, nil, 405, "METHOD_NOT_ALLOWED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Do(tc.method, tc.path, tc.body, tc.headers...)
			if r.Status != tc.status || r.ErrCode() != tc.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, tc.status, tc.code)
			}
			msg, _ := r.Body["error"].(map[string]any)["message"].(string)
			if msg == "" {
				t.Fatalf("error without a message: %s", r.Raw)
			}
		})
	}

	// A challenge is single use.
	ch := e.Resolve(testOrigin)
	body := map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": ch}
	if r := e.Do("POST", "/v1/sessions", body, "Origin", testOrigin); r.Status != 201 {
		t.Fatalf("first use: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("POST", "/v1/sessions", body, "Origin", testOrigin); r.Status != 401 || r.ErrCode() != "CHALLENGE_INVALID" {
		t.Fatalf("second use: %d %s", r.Status, r.Raw)
	}

	// The WebSocket refuses bad credentials by closing with 1008 and the code.
	wsCases := []struct {
		name    string
		sess    session
		headers []string
		reason  string
	}{
		{"wrong token", session{ID: s.ID, Token: "nope"}, nil, "SESSION_TOKEN_INVALID"},
		{"no token", session{ID: s.ID}, nil, "SESSION_TOKEN_INVALID"},
		{"unknown session", session{ID: "ses_nope", Token: s.Token}, nil, "SESSION_NOT_FOUND"},
		{"no origin", s, []string{"Origin", ""}, "ORIGIN_REQUIRED"},
		{"foreign origin", s, []string{"Origin", "https://evil.example"}, "ORIGIN_NOT_ALLOWED"},
	}
	for _, tc := range wsCases {
		t.Run("ws "+tc.name, func(t *testing.T) {
			c, _, err := e.DialWS(tc.sess, "", tc.headers...)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if code, reason := c.CloseStatus(); code != websocket.StatusPolicyViolation || reason != tc.reason {
				t.Fatalf("closed with %d %q, want 1008 %q", code, reason, tc.reason)
			}
		})
	}

	// Bad frames on an open socket get error frames; the socket stays usable.
	c := e.MustDialWS(s)
	for _, bad := range []any{"not json", map[string]any{"type": "dance"}, map[string]any{"type": "message"},
		map[string]any{"type": "message", "body": strings.Repeat("x", 4001)}} {
		if str, ok := bad.(string); ok {
			if err := c.Conn.Write(t.Context(), websocket.MessageText, []byte(str)); err != nil {
				t.Fatal(err)
			}
		} else {
			c.Send(bad)
		}
		if f := c.Next(); f.Str("type") != "error" || f.Str("code") == "" || f.Str("message") == "" {
			t.Fatalf("bad frame %v answered with %v", bad, f)
		}
	}
	c.Send(map[string]any{"type": "message", "body": "still here", "client_message_id": "ok-1"})
	signalingtest.ExpectReply(t, c, "ok-1", "echo: still here")

	// Nothing bad was stored.
	want := []string{"visitor: still here", "agent: echo: still here"}
	e.ExpectTranscript(s, want)
	if r := e.Do("OPTIONS", "/v1/sessions", nil, "Origin", testOrigin, "Access-Control-Request-Method", "POST"); r.Status != http.StatusNoContent ||
		r.Header.Get("Access-Control-Allow-Origin") != testOrigin {
		t.Fatalf("preflight: %d %v", r.Status, r.Header)
	}
}
