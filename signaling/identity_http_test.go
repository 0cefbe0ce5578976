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
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/signaling/signalingtest"
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
	signalingtest.StartWorker(e.t, e.agentConn(configs.DefaultAgent), configs.DefaultAgent,
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
	good := signaling.SignJWT(t, jwt.SigningMethodHS256, claims(nil), []byte(signalingtest.ExampleSecret))

	r := e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"visitor_token": good})
	if r.Status != http.StatusCreated {
		t.Fatalf("valid visitor JWT: %d %s", r.Status, r.Raw)
	}
	want := map[string]any{"sub": "user-7", "email": "ada@example.com", "name": "Ada Lovelace", "method": "jwt"}
	if got, _ := r.Body["visitor_claims"].(map[string]any); !maps.Equal(got, want) {
		t.Fatalf("visitor_claims = %v, want %v", got, want)
	}

	// The agent sees the verified claims, once the visitor writes.
	if p := e.Post(signalingtest.SessionFrom(r), "hello", "c1", false); p.Status != http.StatusAccepted {
		t.Fatalf("post: %d %s", p.Status, p.Raw)
	}
	var v visitorSeen
	select {
	case v = <-seen:
	case <-time.After(15 * time.Second):
		t.Fatal("the agent was never dispatched the conversation")
	}
	if v.conversation != r.Str("conversation_id") {
		t.Fatalf("dispatched %s, want %s", v.conversation, r.Str("conversation_id"))
	}
	if !maps.Equal(v.started, want) {
		t.Fatalf("session_started visitor = %v, want %v", v.started, want)
	}
	// The dispatch carries the verified claims too.
	if !maps.Equal(v.dispatch, want) {
		t.Fatalf("dispatch visitor = %v, want %v", v.dispatch, want)
	}

	none := signaling.SignJWT(t, jwt.SigningMethodNone, claims(nil), jwt.UnsafeAllowNoneSignatureType)
	cases := []struct {
		name, token string
		code        string
	}{
		{"expired", signaling.SignJWT(t, jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) {
			c["exp"], c["iat"] = now.Add(-time.Minute).Unix(), now.Add(-10*time.Minute).Unix()
		}), []byte(signalingtest.ExampleSecret)), "TOKEN_EXPIRED"},
		{"wrong secret", signaling.SignJWT(t, jwt.SigningMethodHS256, claims(nil), []byte("another-secret-of-at-least-32-bytes!!")), "INVALID_VISITOR_TOKEN"},
		{"alg none", none, "INVALID_VISITOR_TOKEN"},
		{"alg none, empty signature stripped", strings.TrimSuffix(none, "."), "INVALID_VISITOR_TOKEN"},
		{"HS512", signaling.SignJWT(t, jwt.SigningMethodHS512, claims(nil), []byte(signalingtest.ExampleSecret)), "INVALID_VISITOR_TOKEN"},
		{"iat 60 s in the future", signaling.SignJWT(t, jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) {
			c["iat"] = now.Add(60 * time.Second).Unix()
		}), []byte(signalingtest.ExampleSecret)), "INVALID_VISITOR_TOKEN"},
		{"no exp", signaling.SignJWT(t, jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { delete(c, "exp") }), []byte(signalingtest.ExampleSecret)), "INVALID_VISITOR_TOKEN"},
		{"no sub", signaling.SignJWT(t, jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { delete(c, "sub") }), []byte(signalingtest.ExampleSecret)), "INVALID_VISITOR_TOKEN"},
		{"tampered claims", tamperJWT(t, good, `{"sub":"admin"}`), "INVALID_VISITOR_TOKEN"},
		{"garbage", "not.a.jwt", "INVALID_VISITOR_TOKEN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"visitor_token": tc.token})
			signalingtest.ExpectErr(t, tc.name, r, 401, tc.code)
		})
	}
	// The demo widget has no identity secret: a JWT cannot identify there.
	r = e.CreateSession(configs.DemoWidgetKey, testOrigin, map[string]any{"visitor_token": good})
	signalingtest.ExpectErr(t, "JWT on a widget without a secret", r, 401, "INVALID_VISITOR_TOKEN")
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
	r := e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"user_id": "u-42", "user_hash": signalingtest.UserHash(signalingtest.ExampleSecret, "u-42")})
	if r.Status != http.StatusCreated {
		t.Fatalf("valid user_hash: %d %s", r.Status, r.Raw)
	}
	want := map[string]any{"sub": "u-42", "method": "user_hash"}
	if got, _ := r.Body["visitor_claims"].(map[string]any); !maps.Equal(got, want) {
		t.Fatalf("visitor_claims = %v, want %v", got, want)
	}
	var started map[string]any
	for _, ev := range e.readLog(r.Str("conversation_id")) {
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
		{"wrong hash", "u-42", signalingtest.UserHash(signalingtest.ExampleSecret, "u-43")},
		{"hash under another secret", "u-42", signalingtest.UserHash("another-secret-of-at-least-32-bytes!!", "u-42")},
		{"hash without user_id", "", signalingtest.UserHash(signalingtest.ExampleSecret, "")},
		{"user_id without hash", "u-42", ""},
		{"short hash", "u-42", signalingtest.UserHash(signalingtest.ExampleSecret, "u-42")[:32]},
		{"not hex", "u-42", strings.Repeat("zz", 32)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"user_id": tc.id, "user_hash": tc.hash})
			signalingtest.ExpectErr(t, tc.name, r, 401, "INVALID_VISITOR_TOKEN")
		})
	}
}

func TestIdentitySecretKeyUserToken(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	ak, _ := e.newAdminKey("", broker.Scopes...)
	sk, skID := e.newSecretKey(ak, signalingtest.ExampleID)

	r := e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-42", "email": "jane@example.com"}, "Authorization", "Bearer "+sk)
	if r.Status != http.StatusCreated || r.Str("user_token") == "" || r.Str("expires_at") == "" {
		t.Fatalf("user token: %d %s", r.Status, r.Raw)
	}
	if exp, err := time.Parse(time.RFC3339, r.Str("expires_at")); err != nil || !exp.After(time.Now()) || exp.After(time.Now().Add(e.cfg.Security.UserTokenTTL+time.Minute)) {
		t.Fatalf("expires_at %q: %v", r.Str("expires_at"), err)
	}
	userToken := r.Str("user_token")

	cr := e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"user_token": userToken})
	if cr.Status != http.StatusCreated {
		t.Fatalf("session with a user token: %d %s", cr.Status, cr.Raw)
	}
	want := map[string]any{"sub": "u-42", "email": "jane@example.com", "method": "user_token"}
	if got, _ := cr.Body["visitor_claims"].(map[string]any); !maps.Equal(got, want) {
		t.Fatalf("visitor_claims = %v, want %v", got, want)
	}

	// A user token is for its widget only.
	demoSK, _ := e.newSecretKey(ak, "wdg_demo")
	r = e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-42"}, "Authorization", "Bearer "+demoSK)
	if r.Status != http.StatusCreated {
		t.Fatalf("demo user token: %d %s", r.Status, r.Raw)
	}
	cr = e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"user_token": r.Str("user_token")})
	signalingtest.ExpectErr(t, "another widget's user token", cr, 401, "INVALID_VISITOR_TOKEN")
	// Nor can a user token pass as a visitor JWT.
	cr = e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"visitor_token": userToken})
	signalingtest.ExpectErr(t, "user token as visitor JWT", cr, 401, "INVALID_VISITOR_TOKEN")

	body := map[string]any{"user_id": "u-42"}
	for _, tc := range []struct{ name, auth string }{
		{"no key", ""},
		{"garbage key", "Bearer sk_garbage"},
		{"admin key instead", "Bearer " + ak},
		{"not bearer", "Basic " + sk},
	} {
		r := e.Do("POST", "/v1/user-tokens", body, "Authorization", tc.auth)
		signalingtest.ExpectErr(t, tc.name, r, 401, "INVALID_API_KEY")
	}
	r = e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": ""}, "Authorization", "Bearer "+sk)
	signalingtest.ExpectErr(t, "no user_id", r, 422, "VALIDATION_FAILED")
	r = e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-1", "email": "no-at-sign"}, "Authorization", "Bearer "+sk)
	signalingtest.ExpectErr(t, "bad email", r, 422, "VALIDATION_FAILED")

	// A revoked key stops at once.
	r = e.Do("DELETE", "/v1/admin/keys/"+skID, nil, "Authorization", "Bearer "+ak)
	if r.Status != http.StatusOK || r.Body["disabled"] != true {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	r = e.Do("POST", "/v1/user-tokens", body, "Authorization", "Bearer "+sk)
	signalingtest.ExpectErr(t, "revoked key", r, 403, "KEY_DISABLED")
	r = e.Do("POST", "/v1/tokens", nil, "Authorization", "Bearer "+sk)
	signalingtest.ExpectErr(t, "revoked key, bootstrap", r, 403, "KEY_DISABLED")
}

func TestBootstrapToken(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	ak, _ := e.newAdminKey("", broker.Scopes...)
	sk, _ := e.newSecretKey(ak, signalingtest.ExampleID)
	mint := func(body any) string {
		t.Helper()
		r := e.Do("POST", "/v1/tokens", body, "Authorization", "Bearer "+sk)
		if r.Status != http.StatusCreated || r.Str("token") == "" || r.Str("expires_at") == "" {
			t.Fatalf("bootstrap token: %d %s", r.Status, r.Raw)
		}
		return r.Str("token")
	}
	open := func(token, origin string) response {
		t.Helper()
		return e.Do("POST", "/v1/sessions", map[string]any{"token": token}, "Origin", origin)
	}

	token := mint(map[string]any{"origin": signalingtest.ExampleOrigin})
	r := open(token, signalingtest.ExampleOrigin)
	if r.Status != http.StatusCreated || r.Str("session_token") == "" || r.Body["visitor_claims"] != nil {
		t.Fatalf("session from a bootstrap token: %d %s", r.Status, r.Raw)
	}
	s := signalingtest.SessionFrom(r)
	if got := e.History(s); len(got) != 0 {
		t.Fatalf("new conversation has history %v", got)
	}
	signalingtest.ExpectErr(t, "used twice", open(token, signalingtest.ExampleOrigin), 401, "INVALID_VISITOR_TOKEN")

	// Bound to its origin, even one the widget allows.
	signalingtest.ExpectErr(t, "another allowed origin", open(mint(map[string]any{"origin": signalingtest.ExampleOrigin}), "https://shop.example.com"), 401, "INVALID_VISITOR_TOKEN")
	// Without an origin binding: any origin the widget allows, no other.
	unbound := mint(nil)
	signalingtest.ExpectErr(t, "unbound, foreign origin", open(unbound, "http://localhost:3000"), 403, "ORIGIN_NOT_ALLOWED")
	signalingtest.ExpectErr(t, "unbound, no origin", e.Do("POST", "/v1/sessions", map[string]any{"token": unbound}), 401, "ORIGIN_REQUIRED")
	if r := open(unbound, "https://shop.example.com"); r.Status != http.StatusCreated {
		t.Fatalf("unbound token from an allowed origin: %d %s", r.Status, r.Raw)
	}
	// With a verified visitor.
	r = open(mint(map[string]any{"visitor": map[string]any{"sub": "u-9", "name": "Grace"}}), signalingtest.ExampleOrigin)
	want := map[string]any{"sub": "u-9", "name": "Grace", "method": "bootstrap"}
	if got, _ := r.Body["visitor_claims"].(map[string]any); r.Status != http.StatusCreated || !maps.Equal(got, want) {
		t.Fatalf("bootstrap with visitor: %d %s", r.Status, r.Raw)
	}

	// Refused at minting.
	r = e.Do("POST", "/v1/tokens", map[string]any{"origin": "https://evil.example"}, "Authorization", "Bearer "+sk)
	signalingtest.ExpectErr(t, "mint for a foreign origin", r, 403, "ORIGIN_NOT_ALLOWED")
	r = e.Do("POST", "/v1/tokens", map[string]any{"origin": signalingtest.ExampleOrigin}, "Authorization", "Bearer sk_nope")
	signalingtest.ExpectErr(t, "mint with a bad key", r, 401, "INVALID_API_KEY")
	// Forged or foreign tokens are a 401, never a 500.
	userTok := e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-1"}, "Authorization", "Bearer "+sk).Str("user_token")
	for name, tok := range map[string]string{"garbage": "not.a.token", "tampered": tamperJWT(t, token, `{"aud":["wdg_example"]}`),
		"a user token": userTok} {
		signalingtest.ExpectErr(t, name, open(tok, signalingtest.ExampleOrigin), 401, "INVALID_VISITOR_TOKEN")
	}
}

func TestIdentityPolicyIdentified(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	ak, auth := e.newFullAdmin()

	r := e.Do("GET", "/v1/admin/widgets/"+signalingtest.ExampleID, nil, auth...)
	if r.Status != http.StatusOK {
		t.Fatalf("get widget: %d %s", r.Status, r.Raw)
	}
	var wc configs.WidgetConfig
	if err := json.Unmarshal([]byte(r.Raw), &wc); err != nil {
		t.Fatal(err)
	}
	if wc.IdentityPolicy != "both" {
		t.Fatalf("identity_policy = %q before the change", wc.IdentityPolicy)
	}
	wc.IdentityPolicy = "identified"
	r = e.Do("PUT", "/v1/admin/widgets/"+signalingtest.ExampleID, wc, auth...)
	if r.Status != http.StatusOK || r.Str("identity_policy") != "identified" || r.Body["has_identity_secret"] != true {
		t.Fatalf("put widget: %d %s", r.Status, r.Raw)
	}

	signalingtest.ExpectErr(t, "guest", e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, nil), 403, "GUEST_NOT_ALLOWED")
	r = e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"user_id": "u-1", "user_hash": signalingtest.UserHash(signalingtest.ExampleSecret, "u-1")})
	if r.Status != http.StatusCreated {
		t.Fatalf("identified visitor: %d %s", r.Status, r.Raw)
	}
	// A guest bootstrap token is a guest too.
	sk, _ := e.newSecretKey(ak, signalingtest.ExampleID)
	tok := e.Do("POST", "/v1/tokens", nil, "Authorization", "Bearer "+sk).Str("token")
	signalingtest.ExpectErr(t, "guest bootstrap", e.Do("POST", "/v1/sessions", map[string]any{"token": tok}, "Origin", signalingtest.ExampleOrigin), 403, "GUEST_NOT_ALLOWED")
	// The public config tells the widget.
	if r := e.ResolveWidget(signalingtest.ExampleKey, signalingtest.ExampleOrigin); r.Body["widget"].(map[string]any)["identity_policy"] != "identified" {
		t.Fatalf("resolve shows %s", r.Raw)
	}
}
