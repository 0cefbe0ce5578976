package signaling_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// Helpers for sites, keys and sessions shared by the handler tests.

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
	cfg, err := configs.LoadWith(filepath.Join("..", "configs", "parley.example.yaml"), nil, nil)
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
	key, info, err := e.b.CreateAdminKey(context.Background(), tenant, "test", scopes)
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

// expectErr fails unless r is the coded error.
func expectErr(t testing.TB, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.errCode() != code {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.status, r.raw, status, code)
	}
}

// voiceConfig lets voice legs use loopback addresses.
func voiceConfig(c *configs.Config) { c.Media.IncludeLoopback = true }

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
