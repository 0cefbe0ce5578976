package signaling_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// Tests of issue "security and tenancy" over HTTP: who may embed a widget
// (origins), how a session is earned (challenges), the abuse limits, and
// that no secret reaches the logs. Visitor identities are in
// identity_http_test.go, the admin API in admin_test.go.

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
			r := e.ResolveWidget(tc.key, tc.origin)
			if tc.status == 200 {
				if r.Status != 200 || r.Str("challenge") == "" {
					t.Fatalf("got %d %s, want a challenge", r.Status, r.Raw)
				}
				// The challenge earns a session from the same origin.
				cr := e.Do("POST", "/v1/sessions", map[string]any{"widget_key": tc.key, "challenge": r.Str("challenge")}, "Origin", tc.origin)
				if cr.Status != http.StatusCreated {
					t.Fatalf("session from %s: %d %s", tc.origin, cr.Status, cr.Raw)
				}
				return
			}
			signalingtest.ExpectErr(t, "resolve", r, tc.status, tc.code)
		})
	}

	// A session's WebSocket is refused from a foreign origin, with 1008 and
	// the code as reason (a browser cannot read the HTTP error of an
	// upgrade), and accepted from its own.
	s := e.MustCreateSession("pk_acme", "https://acme.com", nil)
	for _, origin := range []string{"https://impostor.com", "https://acme.com.evil.net", "http://localhost:3000"} {
		c, _, err := e.DialWS(s, "", "Origin", origin)
		if err != nil {
			t.Fatalf("dial from %s: %v", origin, err)
		}
		if code, reason := c.CloseStatus(); code != websocket.StatusPolicyViolation || reason != "ORIGIN_NOT_ALLOWED" {
			t.Fatalf("ws from %s closed with %d %q, want 1008 ORIGIN_NOT_ALLOWED", origin, code, reason)
		}
	}
	c, _, err := e.DialWS(s, "", "Origin", "https://app.acme.com")
	if err != nil {
		t.Fatal(err)
	}
	if f := c.Next(); f.Str("type") != "session" {
		t.Fatalf("ws from an allowed origin: first frame %v", f)
	}
	// So is the HTTP API of the session.
	r := e.Do("GET", "/v1/sessions/"+s.ID+"/history", nil, "Authorization", "Bearer "+s.Token, "Origin", "https://evilacme.com")
	signalingtest.ExpectErr(t, "history from a foreign origin", r, 403, "ORIGIN_NOT_ALLOWED")
}

// TestChallengeBinding: a challenge earns one session, for the widget, the
// origin and the client address it was issued to.
func TestSecurityChallengeBinding(t *testing.T) {
	t.Parallel()
	t.Run("behind a trusted proxy", func(t *testing.T) {
		t.Parallel()
		e := startEnv(t, func(c *configs.Config) { c.Security.TrustedProxies = []string{"127.0.0.1/32"} })
		ch := e.ChallengeFor(configs.DemoWidgetKey, testOrigin, "X-Forwarded-For", "198.51.100.1")
		body := map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": ch}

		r := e.Do("POST", "/v1/sessions", body, "Origin", testOrigin, "X-Forwarded-For", "198.51.100.2")
		signalingtest.ExpectErr(t, "another client address", r, 401, "CHALLENGE_INVALID")
		if msg, _ := r.Body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "another client address") {
			t.Fatalf("message %q does not say why", msg)
		}
		// The refusal did not use the challenge up.
		if r := e.Do("POST", "/v1/sessions", body, "Origin", testOrigin, "X-Forwarded-For", "198.51.100.1"); r.Status != http.StatusCreated {
			t.Fatalf("same address: %d %s", r.Status, r.Raw)
		}
		r = e.Do("POST", "/v1/sessions", body, "Origin", testOrigin, "X-Forwarded-For", "198.51.100.1")
		signalingtest.ExpectErr(t, "reused challenge", r, 401, "CHALLENGE_INVALID")

		// Both origins are allowed for the demo widget, but the challenge
		// is bound to the one it was issued to.
		other := e.ChallengeFor(configs.DemoWidgetKey, "http://127.0.0.1:9999", "X-Forwarded-For", "198.51.100.1")
		r = e.Do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": other},
			"Origin", testOrigin, "X-Forwarded-For", "198.51.100.1")
		signalingtest.ExpectErr(t, "another origin", r, 401, "CHALLENGE_INVALID")

		// The proxy's own address is not the client's.
		ch = e.ChallengeFor(configs.DemoWidgetKey, testOrigin, "X-Forwarded-For", "198.51.100.1")
		r = e.Do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": ch}, "Origin", testOrigin)
		signalingtest.ExpectErr(t, "no X-Forwarded-For", r, 401, "CHALLENGE_INVALID")
	})
	t.Run("without trusted proxies", func(t *testing.T) {
		t.Parallel()
		e := startEnv(t, withExampleWidget(t))
		// A client cannot choose its address: X-Forwarded-For is ignored and
		// both requests come from 127.0.0.1.
		ch := e.ChallengeFor(configs.DemoWidgetKey, testOrigin, "X-Forwarded-For", "198.51.100.1")
		r := e.Do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": ch},
			"Origin", testOrigin, "X-Forwarded-For", "198.51.100.2")
		if r.Status != http.StatusCreated {
			t.Fatalf("spoofed X-Forwarded-For changed the client address: %d %s", r.Status, r.Raw)
		}
		// A challenge of one widget does not open another.
		ch = e.ChallengeFor(configs.DemoWidgetKey, testOrigin)
		r = e.Do("POST", "/v1/sessions", map[string]any{"widget_key": signalingtest.ExampleKey, "challenge": ch}, "Origin", signalingtest.ExampleOrigin)
		signalingtest.ExpectErr(t, "another widget's challenge", r, 401, "CHALLENGE_INVALID")
	})
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	t.Run("resolve per IP", func(t *testing.T) {
		t.Parallel()
		e := startEnv(t, func(c *configs.Config) { c.Limits.Resolve = configs.RateConfig{PerIP: "3/1m", PerWidget: "0"} })
		for i, remaining := range []string{"2", "1", "0"} {
			r := e.ResolveWidget(configs.DemoWidgetKey, testOrigin)
			if r.Status != http.StatusOK || r.Header.Get("X-RateLimit-Limit") != "3" || r.Header.Get("X-RateLimit-Remaining") != remaining {
				t.Fatalf("resolve %d: %d limit %q remaining %q, want 200 3 %s", i+1, r.Status,
					r.Header.Get("X-RateLimit-Limit"), r.Header.Get("X-RateLimit-Remaining"), remaining)
			}
		}
		r := e.ResolveWidget(configs.DemoWidgetKey, testOrigin)
		signalingtest.ExpectErr(t, "4th resolve", r, 429, "RATE_LIMITED")
		if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 {
			t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
		}
		if r.Header.Get("X-RateLimit-Remaining") != "0" {
			t.Fatalf("refusal: X-RateLimit-Remaining = %q", r.Header.Get("X-RateLimit-Remaining"))
		}
		// The page can read them cross-origin.
		if h := r.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(h, "Retry-After") || !strings.Contains(h, "X-RateLimit-Remaining") {
			t.Fatalf("Access-Control-Expose-Headers = %q", h)
		}
	})
	t.Run("sessions per widget and messages per IP", func(t *testing.T) {
		t.Parallel()
		e := startEnv(t, withExampleWidget(t), func(c *configs.Config) {
			c.Limits.Sessions = configs.RateConfig{PerIP: "0", PerWidget: "2/1h"}
			c.Limits.Messages = configs.RateConfig{PerIP: "2/1m", PerWidget: "0"}
		})
		s := e.MustCreateSession(configs.DemoWidgetKey, testOrigin, nil)
		e.MustCreateSession(configs.DemoWidgetKey, testOrigin, nil)
		r := e.CreateSession(configs.DemoWidgetKey, testOrigin, nil)
		signalingtest.ExpectErr(t, "3rd session of the widget", r, 429, "RATE_LIMITED")
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("no Retry-After")
		}
		// Another widget has its own budget.
		e.MustCreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, nil)

		c := e.MustDialWS(s)
		for _, id := range []string{"m-1", "m-2"} {
			c.Send(map[string]any{"type": "message", "body": "hi " + id, "client_message_id": id})
			signalingtest.ExpectReply(t, c, id, "echo: hi "+id)
		}
		c.Send(map[string]any{"type": "message", "body": "one too many", "client_message_id": "m-3"})
		if f := c.Next(); f.Str("type") != "error" || f.Str("code") != "RATE_LIMITED" || f.Str("client_message_id") != "m-3" {
			t.Fatalf("3rd message answered with %v, want a RATE_LIMITED error frame", f)
		}
		// Over HTTP too, and the refused messages were not stored.
		signalingtest.ExpectErr(t, "message over HTTP", e.Post(s, "and another", "m-4", false), 429, "RATE_LIMITED")
		want := []string{"visitor: hi m-1", "agent: echo: hi m-1", "visitor: hi m-2", "agent: echo: hi m-2"}
		e.ExpectTranscript(s, want)
	})
}

// TestSecurityNoSecretsInLogs uses every secret and token of the identity
// and admin paths, at debug level, and looks for each in the logs.
func TestSecurityNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t), func(c *configs.Config) { c.Log.Level = "debug" })
	ak, auth := e.newFullAdmin()
	sk, skID := e.newSecretKey(ak, signalingtest.ExampleID)

	now := time.Now()
	jwtTok := signaling.SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "user-7", "email": "ada@example.com",
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()}, []byte(signalingtest.ExampleSecret))
	expired := signaling.SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "user-7",
		"exp": now.Add(-time.Minute).Unix()}, []byte(signalingtest.ExampleSecret))
	hash := signalingtest.UserHash(signalingtest.ExampleSecret, "u-42")
	userTok := e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-42"}, "Authorization", "Bearer "+sk).Str("user_token")
	bootTok := e.Do("POST", "/v1/tokens", map[string]any{"origin": signalingtest.ExampleOrigin}, "Authorization", "Bearer "+sk).Str("token")

	var sessions []session
	for _, extra := range []map[string]any{{"visitor_token": jwtTok}, {"user_id": "u-42", "user_hash": hash}, {"user_token": userTok}} {
		sessions = append(sessions, e.MustCreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, extra))
	}
	// Refusals log too; they must not log what was refused.
	signalingtest.ExpectErr(t, "expired", e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"visitor_token": expired}), 401, "TOKEN_EXPIRED")
	signalingtest.ExpectErr(t, "wrong hash", e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"user_id": "u-43", "user_hash": hash}), 401, "INVALID_VISITOR_TOKEN")
	r := e.Do("POST", "/v1/sessions", map[string]any{"token": bootTok}, "Origin", signalingtest.ExampleOrigin)
	if r.Status != http.StatusCreated {
		t.Fatalf("bootstrap session: %d %s", r.Status, r.Raw)
	}
	sessions = append(sessions, signalingtest.SessionFrom(r))
	signalingtest.ExpectErr(t, "bootstrap reuse", e.Do("POST", "/v1/sessions", map[string]any{"token": bootTok}, "Origin", signalingtest.ExampleOrigin), 401, "INVALID_VISITOR_TOKEN")
	for _, s := range sessions {
		if r := e.Post(s, "hello", "", true); r.Status != http.StatusOK {
			t.Fatalf("message: %d %s", r.Status, r.Raw)
		}
	}

	// Admin: a new widget (its identity secret is shown once), an admin key
	// made through the API, a listing, a revocation.
	r = e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Logged", "allowed_origins": []string{"example.org"}}, auth...)
	newSecret := r.Str("identity_secret")
	if r.Status != http.StatusCreated || newSecret == "" {
		t.Fatalf("create widget: %d %s", r.Status, r.Raw)
	}
	r = e.Do("POST", "/v1/admin/keys", map[string]any{"name": "ops", "scopes": []string{broker.ScopeOpsRead}}, auth...)
	ak2 := r.Str("key")
	if r.Status != http.StatusCreated || !strings.HasPrefix(ak2, "ak_") {
		t.Fatalf("create admin key: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("GET", "/v1/admin/keys", nil, auth...); r.Status != http.StatusOK || strings.Contains(r.Raw, sk) || strings.Contains(r.Raw, ak2) {
		t.Fatalf("key listing: %d, or it shows a key", r.Status)
	}
	e.Do("GET", "/v1/admin/conversations", nil, "Authorization", "Bearer "+ak2)
	signalingtest.ExpectErr(t, "garbage admin key", e.Do("GET", "/v1/admin/widgets", nil, "Authorization", "Bearer ak_"+strings.Repeat("x", 40)), 401, "INVALID_API_KEY")
	if r := e.Do("DELETE", "/v1/admin/keys/"+skID, nil, auth...); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	signalingtest.ExpectErr(t, "revoked", e.Do("POST", "/v1/tokens", nil, "Authorization", "Bearer "+sk), 403, "KEY_DISABLED")
	e.stop()

	logs := e.logs.String()
	for _, must := range []string{"session started", "api key created", "api key revoked", "widget created"} {
		if !strings.Contains(logs, must) {
			t.Fatalf("the logs lack %q: the check would prove little", must)
		}
	}
	secrets := map[string]string{"identity secret": signalingtest.ExampleSecret, "new widget's identity secret": newSecret,
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
