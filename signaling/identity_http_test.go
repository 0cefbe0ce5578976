package signaling_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// Visitor identities, as a site proves them: a visitor JWT, a user hash, a
// user token from the site's server, a bootstrap token; and what the agent
// is told of them.

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
