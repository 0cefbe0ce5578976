package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// Tests of issue "security and tenancy": who may embed a widget, how a
// session is earned, how visitors prove who they are, the abuse limits,
// leads and uploads, and that no secret reaches the logs. The admin API is
// in admin_test.go.

// The example widget of configs/parley.example.yaml.
const (
	exampleKey    = "pk_example"
	exampleID     = "wdg_example"
	exampleSecret = "example-identity-secret-0123456789abcdef"
	exampleOrigin = "https://www.example.com" // example.com allows any subdomain
)

// withExampleWidget adds pk_example, as configs/parley.example.yaml defines
// it, to the test config's widgets.
func withExampleWidget(t testing.TB) func(*configs.Config) {
	t.Helper()
	cfg, err := configs.LoadWith(filepath.Join("..", "..", "configs", "parley.example.yaml"), nil, nil)
	if err != nil {
		t.Fatalf("load the example config: %v", err)
	}
	i := slices.IndexFunc(cfg.Widgets, func(w configs.WidgetConfig) bool { return w.Key == exampleKey })
	if i < 0 {
		t.Fatal("parley.example.yaml has no pk_example widget")
	}
	w := cfg.Widgets[i]
	if w.ID != exampleID || w.IdentitySecret != exampleSecret {
		t.Fatalf("pk_example is %s with another secret; update the test constants", w.ID)
	}
	return func(c *configs.Config) { c.Widgets = append(c.Widgets, w) }
}

// withWidget adds a widget to the test config.
func withWidget(w configs.WidgetConfig) func(*configs.Config) {
	w.Normalize()
	return func(c *configs.Config) { c.Widgets = append(c.Widgets, w) }
}

// resolveWidget calls resolve for a widget key from origin ("" sends no
// Origin).
func (e *env) resolveWidget(key, origin string, headers ...string) response {
	e.t.Helper()
	if origin != "" {
		headers = append([]string{"Origin", origin}, headers...)
	}
	return e.do("POST", "/v1/widget/resolve", map[string]any{"widget_key": key}, headers...)
}

// challengeFor returns a fresh challenge for a widget key from origin.
func (e *env) challengeFor(key, origin string, headers ...string) string {
	e.t.Helper()
	r := e.resolveWidget(key, origin, headers...)
	if r.status != http.StatusOK || r.str("challenge") == "" {
		e.t.Fatalf("resolve %s from %s: %d %s", key, origin, r.status, r.raw)
	}
	return r.str("challenge")
}

// createSession resolves a widget from origin and creates a session with
// extra fields (a visitor identity, say); it returns the raw answer.
func (e *env) createSession(key, origin string, extra map[string]any) response {
	e.t.Helper()
	req := map[string]any{"widget_key": key, "challenge": e.challengeFor(key, origin)}
	maps.Copy(req, extra)
	return e.do("POST", "/v1/sessions", req, "Origin", origin)
}

// mustCreateSession is createSession that must succeed.
func (e *env) mustCreateSession(key, origin string, extra map[string]any) session {
	e.t.Helper()
	r := e.createSession(key, origin, extra)
	if r.status != http.StatusCreated {
		e.t.Fatalf("create %s session from %s: %d %s", key, origin, r.status, r.raw)
	}
	return sessionFrom(r)
}

func sessionFrom(r response) session {
	return session{ID: r.str("session_id"), ConversationID: r.str("conversation_id"),
		Token: r.str("session_token"), ResumeToken: r.str("resume_token")}
}

// newAdminKey creates an admin key straight in the store, as `parley keys
// create` does.
func (e *env) newAdminKey(tenant string, scopes ...string) (string, broker.KeyInfo) {
	e.t.Helper()
	key, info, err := e.app.broker.CreateAdminKey(context.Background(), tenant, "test", scopes)
	if err != nil {
		e.t.Fatalf("create admin key: %v", err)
	}
	return key, info
}

// newSecretKey creates a secret key for a widget through the admin API.
func (e *env) newSecretKey(ak, widgetID string) (string, string) {
	e.t.Helper()
	r := e.do("POST", "/v1/admin/widgets/"+widgetID+"/secret-keys", nil, "Authorization", "Bearer "+ak)
	info, _ := r.body["info"].(map[string]any)
	if r.status != http.StatusCreated || !strings.HasPrefix(r.str("key"), "sk_") || info["id"] == nil {
		e.t.Fatalf("create secret key: %d %s", r.status, r.raw)
	}
	if info["widget_id"] != widgetID || info["kind"] != broker.KeySecret {
		e.t.Fatalf("secret key info = %v", info)
	}
	return r.str("key"), info["id"].(string)
}

// signVisitorJWT signs claims the way a site's server does.
func signVisitorJWT(t testing.TB, method jwt.SigningMethod, claims jwt.MapClaims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// userHash is hex(HMAC-SHA256(key = identity secret, msg = user_id)).
func userHash(secret, userID string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(userID))
	return hex.EncodeToString(m.Sum(nil))
}

// expectErr fails unless r is the coded error.
func expectErr(t testing.TB, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.errCode() != code {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.status, r.raw, status, code)
	}
}

// readLog reads a conversation's whole log.
func (e *env) readLog(cid string) []agentbridge.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := e.app.broker.ReadLog(ctx, cid, 0)
	if err != nil {
		e.t.Fatalf("read log: %v", err)
	}
	return evs
}

// TestOriginEnforcement is the origin table of seed 001 §2.4 against a
// widget that allows the registrable domain acme.com.
func TestSecurityOriginEnforcement(t *testing.T) {
	t.Parallel()
	paused := false
	e := startEnv(t,
		withWidget(configs.WidgetConfig{Key: "pk_acme", ID: "wdg_acme", Tenant: "acme", DisplayTitle: "Acme help",
			LauncherLabel: "Ask Acme", AllowedOrigins: []string{"acme.com"}, AllowDevOrigins: false}),
		withWidget(configs.WidgetConfig{Key: "pk_paused", ID: "wdg_paused", DisplayTitle: "Paused",
			AllowedOrigins: []string{"acme.com"}, Live: &paused}))

	cases := []struct {
		name, key, origin string
		status            int
		code              string
	}{
		{"apex", "pk_acme", "https://acme.com", 200, ""},
		{"www", "pk_acme", "https://www.acme.com", 200, ""},
		{"subdomain", "pk_acme", "https://app.acme.com", 200, ""},
		{"subdomain over http", "pk_acme", "http://shop.acme.com", 200, ""},
		{"other TLD", "pk_acme", "https://acme.io", 403, "ORIGIN_NOT_ALLOWED"},
		{"public suffix look-alike", "pk_acme", "https://acme.co.uk", 403, "ORIGIN_NOT_ALLOWED"},
		{"unrelated", "pk_acme", "https://impostor.com", 403, "ORIGIN_NOT_ALLOWED"},
		{"suffix trick", "pk_acme", "https://acme.com.evil.net", 403, "ORIGIN_NOT_ALLOWED"},
		{"prefix trick", "pk_acme", "https://evilacme.com", 403, "ORIGIN_NOT_ALLOWED"},
		{"localhost without dev origins", "pk_acme", "http://localhost:3000", 403, "ORIGIN_NOT_ALLOWED"},
		{"opaque origin", "pk_acme", "null", 403, "ORIGIN_NOT_ALLOWED"},
		{"missing origin", "pk_acme", "", 401, "ORIGIN_REQUIRED"},
		{"unknown key", "pk_nobody", "https://acme.com", 401, "UNKNOWN_WIDGET_KEY"},
		{"widget not live", "pk_paused", "https://acme.com", 409, "WIDGET_NOT_LIVE"},
		{"dev origin on the demo widget", configs.DemoWidgetKey, "http://localhost:5173", 200, ""},
		{"dev IP on the demo widget", configs.DemoWidgetKey, "http://127.0.0.1:9", 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.resolveWidget(tc.key, tc.origin)
			if tc.status == 200 {
				if r.status != 200 || r.str("challenge") == "" {
					t.Fatalf("got %d %s, want a challenge", r.status, r.raw)
				}
				// The challenge earns a session from the same origin.
				cr := e.do("POST", "/v1/sessions", map[string]any{"widget_key": tc.key, "challenge": r.str("challenge")}, "Origin", tc.origin)
				if cr.status != http.StatusCreated {
					t.Fatalf("session from %s: %d %s", tc.origin, cr.status, cr.raw)
				}
				return
			}
			expectErr(t, "resolve", r, tc.status, tc.code)
		})
	}

	// A session's WebSocket is refused from a foreign origin, with 1008 and
	// the code as reason (a browser cannot read the HTTP error of an
	// upgrade), and accepted from its own.
	s := e.mustCreateSession("pk_acme", "https://acme.com", nil)
	for _, origin := range []string{"https://impostor.com", "https://acme.com.evil.net", "http://localhost:3000"} {
		c, _, err := e.dialWS(s, "", "Origin", origin)
		if err != nil {
			t.Fatalf("dial from %s: %v", origin, err)
		}
		if code, reason := c.closeStatus(); code != websocket.StatusPolicyViolation || reason != "ORIGIN_NOT_ALLOWED" {
			t.Fatalf("ws from %s closed with %d %q, want 1008 ORIGIN_NOT_ALLOWED", origin, code, reason)
		}
	}
	c, _, err := e.dialWS(s, "", "Origin", "https://app.acme.com")
	if err != nil {
		t.Fatal(err)
	}
	if f := c.next(); f.str("type") != "session" {
		t.Fatalf("ws from an allowed origin: first frame %v", f)
	}
	// So is the HTTP API of the session.
	r := e.do("GET", "/v1/sessions/"+s.ID+"/history", nil, "Authorization", "Bearer "+s.Token, "Origin", "https://evilacme.com")
	expectErr(t, "history from a foreign origin", r, 403, "ORIGIN_NOT_ALLOWED")
}

// TestChallengeBinding: a challenge earns one session, for the widget, the
// origin and the client address it was issued to.
func TestSecurityChallengeBinding(t *testing.T) {
	t.Parallel()
	t.Run("behind a trusted proxy", func(t *testing.T) {
		t.Parallel()
		e := startEnv(t, func(c *configs.Config) { c.Security.TrustedProxies = []string{"127.0.0.1/32"} })
		ch := e.challengeFor(configs.DemoWidgetKey, testOrigin, "X-Forwarded-For", "198.51.100.1")
		body := map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": ch}

		r := e.do("POST", "/v1/sessions", body, "Origin", testOrigin, "X-Forwarded-For", "198.51.100.2")
		expectErr(t, "another client address", r, 401, "CHALLENGE_INVALID")
		if msg, _ := r.body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "another client address") {
			t.Fatalf("message %q does not say why", msg)
		}
		// The refusal did not use the challenge up.
		if r := e.do("POST", "/v1/sessions", body, "Origin", testOrigin, "X-Forwarded-For", "198.51.100.1"); r.status != http.StatusCreated {
			t.Fatalf("same address: %d %s", r.status, r.raw)
		}
		r = e.do("POST", "/v1/sessions", body, "Origin", testOrigin, "X-Forwarded-For", "198.51.100.1")
		expectErr(t, "reused challenge", r, 401, "CHALLENGE_INVALID")

		// Both origins are allowed for the demo widget, but the challenge
		// is bound to the one it was issued to.
		other := e.challengeFor(configs.DemoWidgetKey, "http://127.0.0.1:9999", "X-Forwarded-For", "198.51.100.1")
		r = e.do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": other},
			"Origin", testOrigin, "X-Forwarded-For", "198.51.100.1")
		expectErr(t, "another origin", r, 401, "CHALLENGE_INVALID")

		// The proxy's own address is not the client's.
		ch = e.challengeFor(configs.DemoWidgetKey, testOrigin, "X-Forwarded-For", "198.51.100.1")
		r = e.do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": ch}, "Origin", testOrigin)
		expectErr(t, "no X-Forwarded-For", r, 401, "CHALLENGE_INVALID")
	})
	t.Run("without trusted proxies", func(t *testing.T) {
		t.Parallel()
		e := startEnv(t, withExampleWidget(t))
		// A client cannot choose its address: X-Forwarded-For is ignored and
		// both requests come from 127.0.0.1.
		ch := e.challengeFor(configs.DemoWidgetKey, testOrigin, "X-Forwarded-For", "198.51.100.1")
		r := e.do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": ch},
			"Origin", testOrigin, "X-Forwarded-For", "198.51.100.2")
		if r.status != http.StatusCreated {
			t.Fatalf("spoofed X-Forwarded-For changed the client address: %d %s", r.status, r.raw)
		}
		// A challenge of one widget does not open another.
		ch = e.challengeFor(configs.DemoWidgetKey, testOrigin)
		r = e.do("POST", "/v1/sessions", map[string]any{"widget_key": exampleKey, "challenge": ch}, "Origin", exampleOrigin)
		expectErr(t, "another widget's challenge", r, 401, "CHALLENGE_INVALID")
	})
}

// visitorSeen is what an agent saw of a conversation's visitor.
type visitorSeen struct {
	conversation      string
	dispatch, started map[string]any
}

// startVisitorRecorder starts a worker of the default agent that reports
// the visitor of each conversation it is dispatched: from the dispatch
// request and from the session_started event.
func (e *env) startVisitorRecorder() <-chan visitorSeen {
	e.t.Helper()
	seen := make(chan visitorSeen, 16)
	w, err := agentbridge.NewWorker(e.agentConn(configs.DefaultAgent), agentbridge.Options{Agent: configs.DefaultAgent, Logger: discardLogger()},
		func(ctx context.Context, c *agentbridge.Conversation) error {
			v := visitorSeen{conversation: c.ID(), dispatch: c.Dispatch().Visitor}
			found := false
			for _, ev := range c.History() {
				if ev.Type == agentbridge.EventSessionStarted {
					v.started, found = ev.Visitor, true
				}
			}
			events := c.Events()
			for !found {
				ev, ok := <-events
				if !ok {
					return nil
				}
				if ev.Type == agentbridge.EventSessionStarted {
					v.started, found = ev.Visitor, true
				}
			}
			select {
			case seen <- v:
			case <-ctx.Done():
				return nil
			}
			for range events {
			}
			return nil
		})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(w.Close)
	return seen
}

func TestIdentityVisitorJWT(t *testing.T) {
	t.Parallel()
	e := startEnv(t, noEcho, withExampleWidget(t))
	seen := e.startVisitorRecorder()
	now := time.Now()
	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "user-7", "email": "ada@example.com", "name": "Ada Lovelace",
			"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()}
		if change != nil {
			change(c)
		}
		return c
	}
	good := signVisitorJWT(t, jwt.SigningMethodHS256, claims(nil), []byte(exampleSecret))

	r := e.createSession(exampleKey, exampleOrigin, map[string]any{"visitor_token": good})
	if r.status != http.StatusCreated {
		t.Fatalf("valid visitor JWT: %d %s", r.status, r.raw)
	}
	want := map[string]any{"sub": "user-7", "email": "ada@example.com", "name": "Ada Lovelace", "method": "jwt"}
	if got, _ := r.body["visitor_claims"].(map[string]any); !maps.Equal(got, want) {
		t.Fatalf("visitor_claims = %v, want %v", got, want)
	}

	// The agent sees the verified claims.
	var v visitorSeen
	select {
	case v = <-seen:
	case <-time.After(15 * time.Second):
		t.Fatal("the agent was never dispatched the conversation")
	}
	if v.conversation != r.str("conversation_id") {
		t.Fatalf("dispatched %s, want %s", v.conversation, r.str("conversation_id"))
	}
	if !maps.Equal(v.started, want) {
		t.Fatalf("session_started visitor = %v, want %v", v.started, want)
	}
	// The dispatch carries the verified claims too.
	if !maps.Equal(v.dispatch, want) {
		t.Fatalf("dispatch visitor = %v, want %v", v.dispatch, want)
	}

	none := signVisitorJWT(t, jwt.SigningMethodNone, claims(nil), jwt.UnsafeAllowNoneSignatureType)
	cases := []struct {
		name, token string
		code        string
	}{
		{"expired", signVisitorJWT(t, jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) {
			c["exp"], c["iat"] = now.Add(-time.Minute).Unix(), now.Add(-10*time.Minute).Unix()
		}), []byte(exampleSecret)), "TOKEN_EXPIRED"},
		{"wrong secret", signVisitorJWT(t, jwt.SigningMethodHS256, claims(nil), []byte("another-secret-of-at-least-32-bytes!!")), "INVALID_VISITOR_TOKEN"},
		{"alg none", none, "INVALID_VISITOR_TOKEN"},
		{"alg none, empty signature stripped", strings.TrimSuffix(none, "."), "INVALID_VISITOR_TOKEN"},
		{"HS512", signVisitorJWT(t, jwt.SigningMethodHS512, claims(nil), []byte(exampleSecret)), "INVALID_VISITOR_TOKEN"},
		{"iat 60 s in the future", signVisitorJWT(t, jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) {
			c["iat"] = now.Add(60 * time.Second).Unix()
		}), []byte(exampleSecret)), "INVALID_VISITOR_TOKEN"},
		{"no exp", signVisitorJWT(t, jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { delete(c, "exp") }), []byte(exampleSecret)), "INVALID_VISITOR_TOKEN"},
		{"no sub", signVisitorJWT(t, jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { delete(c, "sub") }), []byte(exampleSecret)), "INVALID_VISITOR_TOKEN"},
		{"tampered claims", tamperJWT(t, good, `{"sub":"admin"}`), "INVALID_VISITOR_TOKEN"},
		{"garbage", "not.a.jwt", "INVALID_VISITOR_TOKEN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.createSession(exampleKey, exampleOrigin, map[string]any{"visitor_token": tc.token})
			expectErr(t, tc.name, r, 401, tc.code)
		})
	}
	// The demo widget has no identity secret: a JWT cannot identify there.
	r = e.createSession(configs.DemoWidgetKey, testOrigin, map[string]any{"visitor_token": good})
	expectErr(t, "JWT on a widget without a secret", r, 401, "INVALID_VISITOR_TOKEN")
}

// tamperJWT replaces a JWT's payload, keeping its header and signature.
func tamperJWT(t testing.TB, token, payload string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + parts[2]
}

func TestIdentityUserHash(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	r := e.createSession(exampleKey, exampleOrigin, map[string]any{"user_id": "u-42", "user_hash": userHash(exampleSecret, "u-42")})
	if r.status != http.StatusCreated {
		t.Fatalf("valid user_hash: %d %s", r.status, r.raw)
	}
	want := map[string]any{"sub": "u-42", "method": "user_hash"}
	if got, _ := r.body["visitor_claims"].(map[string]any); !maps.Equal(got, want) {
		t.Fatalf("visitor_claims = %v, want %v", got, want)
	}
	var started map[string]any
	for _, ev := range e.readLog(r.str("conversation_id")) {
		if ev.Type == agentbridge.EventSessionStarted {
			started = ev.Visitor
		}
	}
	if !maps.Equal(started, want) {
		t.Fatalf("session_started visitor = %v, want %v", started, want)
	}

	cases := []struct {
		name     string
		id, hash string
	}{
		{"wrong hash", "u-42", userHash(exampleSecret, "u-43")},
		{"hash under another secret", "u-42", userHash("another-secret-of-at-least-32-bytes!!", "u-42")},
		{"hash without user_id", "", userHash(exampleSecret, "")},
		{"user_id without hash", "u-42", ""},
		{"short hash", "u-42", userHash(exampleSecret, "u-42")[:32]},
		{"not hex", "u-42", strings.Repeat("zz", 32)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.createSession(exampleKey, exampleOrigin, map[string]any{"user_id": tc.id, "user_hash": tc.hash})
			expectErr(t, tc.name, r, 401, "INVALID_VISITOR_TOKEN")
		})
	}
}

func TestIdentitySecretKeyUserToken(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	ak, _ := e.newAdminKey("", broker.Scopes...)
	sk, skID := e.newSecretKey(ak, exampleID)

	r := e.do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-42", "email": "jane@example.com"}, "Authorization", "Bearer "+sk)
	if r.status != http.StatusCreated || r.str("user_token") == "" || r.str("expires_at") == "" {
		t.Fatalf("user token: %d %s", r.status, r.raw)
	}
	if exp, err := time.Parse(time.RFC3339, r.str("expires_at")); err != nil || !exp.After(time.Now()) || exp.After(time.Now().Add(e.cfg.Security.UserTokenTTL+time.Minute)) {
		t.Fatalf("expires_at %q: %v", r.str("expires_at"), err)
	}
	userToken := r.str("user_token")

	cr := e.createSession(exampleKey, exampleOrigin, map[string]any{"user_token": userToken})
	if cr.status != http.StatusCreated {
		t.Fatalf("session with a user token: %d %s", cr.status, cr.raw)
	}
	want := map[string]any{"sub": "u-42", "email": "jane@example.com", "method": "user_token"}
	if got, _ := cr.body["visitor_claims"].(map[string]any); !maps.Equal(got, want) {
		t.Fatalf("visitor_claims = %v, want %v", got, want)
	}

	// A user token is for its widget only.
	demoSK, _ := e.newSecretKey(ak, "wdg_demo")
	r = e.do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-42"}, "Authorization", "Bearer "+demoSK)
	if r.status != http.StatusCreated {
		t.Fatalf("demo user token: %d %s", r.status, r.raw)
	}
	cr = e.createSession(exampleKey, exampleOrigin, map[string]any{"user_token": r.str("user_token")})
	expectErr(t, "another widget's user token", cr, 401, "INVALID_VISITOR_TOKEN")
	// Nor can a user token pass as a visitor JWT.
	cr = e.createSession(exampleKey, exampleOrigin, map[string]any{"visitor_token": userToken})
	expectErr(t, "user token as visitor JWT", cr, 401, "INVALID_VISITOR_TOKEN")

	body := map[string]any{"user_id": "u-42"}
	for _, tc := range []struct{ name, auth string }{
		{"no key", ""},
		{"garbage key", "Bearer sk_garbage"},
		{"admin key instead", "Bearer " + ak},
		{"not bearer", "Basic " + sk},
	} {
		r := e.do("POST", "/v1/user-tokens", body, "Authorization", tc.auth)
		expectErr(t, tc.name, r, 401, "INVALID_API_KEY")
	}
	r = e.do("POST", "/v1/user-tokens", map[string]any{"user_id": ""}, "Authorization", "Bearer "+sk)
	expectErr(t, "no user_id", r, 422, "VALIDATION_FAILED")
	r = e.do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-1", "email": "no-at-sign"}, "Authorization", "Bearer "+sk)
	expectErr(t, "bad email", r, 422, "VALIDATION_FAILED")

	// A revoked key stops at once.
	r = e.do("DELETE", "/v1/admin/keys/"+skID, nil, "Authorization", "Bearer "+ak)
	if r.status != http.StatusOK || r.body["disabled"] != true {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	r = e.do("POST", "/v1/user-tokens", body, "Authorization", "Bearer "+sk)
	expectErr(t, "revoked key", r, 403, "KEY_DISABLED")
	r = e.do("POST", "/v1/tokens", nil, "Authorization", "Bearer "+sk)
	expectErr(t, "revoked key, bootstrap", r, 403, "KEY_DISABLED")
}

func TestBootstrapToken(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	ak, _ := e.newAdminKey("", broker.Scopes...)
	sk, _ := e.newSecretKey(ak, exampleID)
	mint := func(body any) string {
		t.Helper()
		r := e.do("POST", "/v1/tokens", body, "Authorization", "Bearer "+sk)
		if r.status != http.StatusCreated || r.str("token") == "" || r.str("expires_at") == "" {
			t.Fatalf("bootstrap token: %d %s", r.status, r.raw)
		}
		return r.str("token")
	}
	open := func(token, origin string) response {
		t.Helper()
		return e.do("POST", "/v1/sessions", map[string]any{"token": token}, "Origin", origin)
	}

	token := mint(map[string]any{"origin": exampleOrigin})
	r := open(token, exampleOrigin)
	if r.status != http.StatusCreated || r.str("session_token") == "" || r.body["visitor_claims"] != nil {
		t.Fatalf("session from a bootstrap token: %d %s", r.status, r.raw)
	}
	s := sessionFrom(r)
	if got := e.history(s); len(got) != 0 {
		t.Fatalf("new conversation has history %v", got)
	}
	expectErr(t, "used twice", open(token, exampleOrigin), 401, "INVALID_VISITOR_TOKEN")

	// Bound to its origin, even one the widget allows.
	expectErr(t, "another allowed origin", open(mint(map[string]any{"origin": exampleOrigin}), "https://shop.example.com"), 401, "INVALID_VISITOR_TOKEN")
	// Without an origin binding: any origin the widget allows, no other.
	unbound := mint(nil)
	expectErr(t, "unbound, foreign origin", open(unbound, "http://localhost:3000"), 403, "ORIGIN_NOT_ALLOWED")
	expectErr(t, "unbound, no origin", e.do("POST", "/v1/sessions", map[string]any{"token": unbound}), 401, "ORIGIN_REQUIRED")
	if r := open(unbound, "https://shop.example.com"); r.status != http.StatusCreated {
		t.Fatalf("unbound token from an allowed origin: %d %s", r.status, r.raw)
	}
	// With a verified visitor.
	r = open(mint(map[string]any{"visitor": map[string]any{"sub": "u-9", "name": "Grace"}}), exampleOrigin)
	want := map[string]any{"sub": "u-9", "name": "Grace", "method": "bootstrap"}
	if got, _ := r.body["visitor_claims"].(map[string]any); r.status != http.StatusCreated || !maps.Equal(got, want) {
		t.Fatalf("bootstrap with visitor: %d %s", r.status, r.raw)
	}

	// Refused at minting.
	r = e.do("POST", "/v1/tokens", map[string]any{"origin": "https://evil.example"}, "Authorization", "Bearer "+sk)
	expectErr(t, "mint for a foreign origin", r, 403, "ORIGIN_NOT_ALLOWED")
	r = e.do("POST", "/v1/tokens", map[string]any{"origin": exampleOrigin}, "Authorization", "Bearer sk_nope")
	expectErr(t, "mint with a bad key", r, 401, "INVALID_API_KEY")
	// Forged or foreign tokens are a 401, never a 500.
	userTok := e.do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-1"}, "Authorization", "Bearer "+sk).str("user_token")
	for name, tok := range map[string]string{"garbage": "not.a.token", "tampered": tamperJWT(t, token, `{"aud":["wdg_example"]}`),
		"a user token": userTok} {
		expectErr(t, name, open(tok, exampleOrigin), 401, "INVALID_VISITOR_TOKEN")
	}
}

func TestIdentityPolicyIdentified(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	ak, _ := e.newAdminKey("", broker.Scopes...)
	auth := []string{"Authorization", "Bearer " + ak}

	r := e.do("GET", "/v1/admin/widgets/"+exampleID, nil, auth...)
	if r.status != http.StatusOK {
		t.Fatalf("get widget: %d %s", r.status, r.raw)
	}
	var wc configs.WidgetConfig
	if err := json.Unmarshal([]byte(r.raw), &wc); err != nil {
		t.Fatal(err)
	}
	if wc.IdentityPolicy != "both" {
		t.Fatalf("identity_policy = %q before the change", wc.IdentityPolicy)
	}
	wc.IdentityPolicy = "identified"
	r = e.do("PUT", "/v1/admin/widgets/"+exampleID, wc, auth...)
	if r.status != http.StatusOK || r.str("identity_policy") != "identified" || r.body["has_identity_secret"] != true {
		t.Fatalf("put widget: %d %s", r.status, r.raw)
	}

	expectErr(t, "guest", e.createSession(exampleKey, exampleOrigin, nil), 403, "GUEST_NOT_ALLOWED")
	r = e.createSession(exampleKey, exampleOrigin, map[string]any{"user_id": "u-1", "user_hash": userHash(exampleSecret, "u-1")})
	if r.status != http.StatusCreated {
		t.Fatalf("identified visitor: %d %s", r.status, r.raw)
	}
	// A guest bootstrap token is a guest too.
	sk, _ := e.newSecretKey(ak, exampleID)
	tok := e.do("POST", "/v1/tokens", nil, "Authorization", "Bearer "+sk).str("token")
	expectErr(t, "guest bootstrap", e.do("POST", "/v1/sessions", map[string]any{"token": tok}, "Origin", exampleOrigin), 403, "GUEST_NOT_ALLOWED")
	// The public config tells the widget.
	if r := e.resolveWidget(exampleKey, exampleOrigin); r.body["widget"].(map[string]any)["identity_policy"] != "identified" {
		t.Fatalf("resolve shows %s", r.raw)
	}
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	t.Run("resolve per IP", func(t *testing.T) {
		t.Parallel()
		e := startEnv(t, func(c *configs.Config) { c.Limits.Resolve = configs.RateConfig{PerIP: "3/1m", PerWidget: "0"} })
		for i, remaining := range []string{"2", "1", "0"} {
			r := e.resolveWidget(configs.DemoWidgetKey, testOrigin)
			if r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") != "3" || r.header.Get("X-RateLimit-Remaining") != remaining {
				t.Fatalf("resolve %d: %d limit %q remaining %q, want 200 3 %s", i+1, r.status,
					r.header.Get("X-RateLimit-Limit"), r.header.Get("X-RateLimit-Remaining"), remaining)
			}
		}
		r := e.resolveWidget(configs.DemoWidgetKey, testOrigin)
		expectErr(t, "4th resolve", r, 429, "RATE_LIMITED")
		if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 {
			t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
		}
		if r.header.Get("X-RateLimit-Remaining") != "0" {
			t.Fatalf("refusal: X-RateLimit-Remaining = %q", r.header.Get("X-RateLimit-Remaining"))
		}
		// The page can read them cross-origin.
		if h := r.header.Get("Access-Control-Expose-Headers"); !strings.Contains(h, "Retry-After") || !strings.Contains(h, "X-RateLimit-Remaining") {
			t.Fatalf("Access-Control-Expose-Headers = %q", h)
		}
	})
	t.Run("sessions per widget and messages per IP", func(t *testing.T) {
		t.Parallel()
		e := startEnv(t, withExampleWidget(t), func(c *configs.Config) {
			c.Limits.Sessions = configs.RateConfig{PerIP: "0", PerWidget: "2/1h"}
			c.Limits.Messages = configs.RateConfig{PerIP: "2/1m", PerWidget: "0"}
		})
		s := e.mustCreateSession(configs.DemoWidgetKey, testOrigin, nil)
		e.mustCreateSession(configs.DemoWidgetKey, testOrigin, nil)
		r := e.createSession(configs.DemoWidgetKey, testOrigin, nil)
		expectErr(t, "3rd session of the widget", r, 429, "RATE_LIMITED")
		if r.header.Get("Retry-After") == "" {
			t.Fatal("no Retry-After")
		}
		// Another widget has its own budget.
		e.mustCreateSession(exampleKey, exampleOrigin, nil)

		c := e.mustDialWS(s)
		for _, id := range []string{"m-1", "m-2"} {
			c.send(map[string]any{"type": "message", "body": "hi " + id, "client_message_id": id})
			expectReply(t, c, id, "echo: hi "+id)
		}
		c.send(map[string]any{"type": "message", "body": "one too many", "client_message_id": "m-3"})
		if f := c.next(); f.str("type") != "error" || f.str("code") != "RATE_LIMITED" || f.str("client_message_id") != "m-3" {
			t.Fatalf("3rd message answered with %v, want a RATE_LIMITED error frame", f)
		}
		// Over HTTP too, and the refused messages were not stored.
		expectErr(t, "message over HTTP", e.post(s, "and another", "m-4", false), 429, "RATE_LIMITED")
		want := []string{"visitor: hi m-1", "agent: echo: hi m-1", "visitor: hi m-2", "agent: echo: hi m-2"}
		if got := transcript(e.history(s)); !slices.Equal(got, want) {
			t.Fatalf("history = %q, want %q", got, want)
		}
	})
}

// TestSecurityNoSecretsInLogs uses every secret and token of the identity
// and admin paths, at debug level, and looks for each in the logs.
func TestSecurityNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t), func(c *configs.Config) { c.Log.Level = "debug" })
	ak, _ := e.newAdminKey("", broker.Scopes...)
	auth := []string{"Authorization", "Bearer " + ak}
	sk, skID := e.newSecretKey(ak, exampleID)

	now := time.Now()
	jwtTok := signVisitorJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "user-7", "email": "ada@example.com",
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()}, []byte(exampleSecret))
	expired := signVisitorJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "user-7",
		"exp": now.Add(-time.Minute).Unix()}, []byte(exampleSecret))
	hash := userHash(exampleSecret, "u-42")
	userTok := e.do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-42"}, "Authorization", "Bearer "+sk).str("user_token")
	bootTok := e.do("POST", "/v1/tokens", map[string]any{"origin": exampleOrigin}, "Authorization", "Bearer "+sk).str("token")

	var sessions []session
	for _, extra := range []map[string]any{{"visitor_token": jwtTok}, {"user_id": "u-42", "user_hash": hash}, {"user_token": userTok}} {
		sessions = append(sessions, e.mustCreateSession(exampleKey, exampleOrigin, extra))
	}
	// Refusals log too; they must not log what was refused.
	expectErr(t, "expired", e.createSession(exampleKey, exampleOrigin, map[string]any{"visitor_token": expired}), 401, "TOKEN_EXPIRED")
	expectErr(t, "wrong hash", e.createSession(exampleKey, exampleOrigin, map[string]any{"user_id": "u-43", "user_hash": hash}), 401, "INVALID_VISITOR_TOKEN")
	r := e.do("POST", "/v1/sessions", map[string]any{"token": bootTok}, "Origin", exampleOrigin)
	if r.status != http.StatusCreated {
		t.Fatalf("bootstrap session: %d %s", r.status, r.raw)
	}
	sessions = append(sessions, sessionFrom(r))
	expectErr(t, "bootstrap reuse", e.do("POST", "/v1/sessions", map[string]any{"token": bootTok}, "Origin", exampleOrigin), 401, "INVALID_VISITOR_TOKEN")
	for _, s := range sessions {
		if r := e.post(s, "hello", "", true); r.status != http.StatusOK {
			t.Fatalf("message: %d %s", r.status, r.raw)
		}
	}

	// Admin: a new widget (its identity secret is shown once), an admin key
	// made through the API, a listing, a revocation.
	r = e.do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Logged", "allowed_origins": []string{"example.org"}}, auth...)
	newSecret := r.str("identity_secret")
	if r.status != http.StatusCreated || newSecret == "" {
		t.Fatalf("create widget: %d %s", r.status, r.raw)
	}
	r = e.do("POST", "/v1/admin/keys", map[string]any{"name": "ops", "scopes": []string{broker.ScopeOpsRead}}, auth...)
	ak2 := r.str("key")
	if r.status != http.StatusCreated || !strings.HasPrefix(ak2, "ak_") {
		t.Fatalf("create admin key: %d %s", r.status, r.raw)
	}
	if r := e.do("GET", "/v1/admin/keys", nil, auth...); r.status != http.StatusOK || strings.Contains(r.raw, sk) || strings.Contains(r.raw, ak2) {
		t.Fatalf("key listing: %d, or it shows a key", r.status)
	}
	e.do("GET", "/v1/admin/conversations", nil, "Authorization", "Bearer "+ak2)
	expectErr(t, "garbage admin key", e.do("GET", "/v1/admin/widgets", nil, "Authorization", "Bearer ak_"+strings.Repeat("x", 40)), 401, "INVALID_API_KEY")
	if r := e.do("DELETE", "/v1/admin/keys/"+skID, nil, auth...); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	expectErr(t, "revoked", e.do("POST", "/v1/tokens", nil, "Authorization", "Bearer "+sk), 403, "KEY_DISABLED")
	e.stop()

	logs := e.logs.String()
	for _, must := range []string{"session started", "api key created", "api key revoked", "widget created"} {
		if !strings.Contains(logs, must) {
			t.Fatalf("the logs lack %q: the check would prove little", must)
		}
	}
	secrets := map[string]string{"identity secret": exampleSecret, "new widget's identity secret": newSecret,
		"secret key": sk, "admin key": ak, "API-made admin key": ak2, "visitor JWT": jwtTok, "expired JWT": expired,
		"user_hash": hash, "user token": userTok, "bootstrap token": bootTok}
	for i, s := range sessions {
		secrets["session token "+strconv.Itoa(i)] = s.Token
		secrets["resume token "+strconv.Itoa(i)] = s.ResumeToken
	}
	for name, secret := range secrets {
		if len(secret) < 16 {
			t.Fatalf("%s is %q: too short to look for", name, secret)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the logs", name)
		}
		// JWTs: neither the signature alone.
		if parts := strings.Split(secret, "."); len(parts) == 3 && strings.Contains(logs, parts[2]) {
			t.Errorf("the signature of the %s appears in the logs", name)
		}
	}
}
