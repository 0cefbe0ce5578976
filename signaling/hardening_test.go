package signaling_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// Regression tests for holes found while documenting the security model.

// TestDeletedWidgetIDNeverReused: deleting a widget revokes its secret
// keys, and its id cannot be given to a new widget (another tenant's keys,
// sessions and leads must not carry over).
func TestDeletedWidgetIDNeverReused(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	akA, _ := e.newAdminKey("tenant-a", broker.Scopes...)
	akB, _ := e.newAdminKey("tenant-b", broker.Scopes...)
	body := map[string]any{"id": "wdg_shop", "display_title": "Shop", "allowed_origins": []string{"https://shop.example.com"}}
	if r := e.do("POST", "/v1/admin/widgets", body, "Authorization", "Bearer "+akA); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	sk, _ := e.newSecretKey(akA, "wdg_shop")
	if r := e.do("DELETE", "/v1/admin/widgets/wdg_shop", nil, "Authorization", "Bearer "+akA); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if r := e.do("POST", "/v1/user-tokens", map[string]any{"user_id": "u"}, "Authorization", "Bearer "+sk); r.status != 403 || r.errCode() != "KEY_DISABLED" {
		t.Fatalf("secret key of a deleted widget: %d %s", r.status, r.raw)
	}
	r := e.do("POST", "/v1/admin/widgets", body, "Authorization", "Bearer "+akB)
	if r.status != 422 || r.errCode() != "VALIDATION_FAILED" {
		t.Fatalf("re-creating a deleted id: %d %s", r.status, r.raw)
	}
}

// TestModeNotAllowed: a chat-only widget refuses voice however it is asked.
func TestModeNotAllowed(t *testing.T) {
	t.Parallel()
	e := startEnv(t, voiceConfig, withWidget(configs.WidgetConfig{Key: "pk_chatonly", Mode: "chat", AllowDevOrigins: true}))
	s := e.mustCreateSession("pk_chatonly", testOrigin, nil)
	auth := []string{"Authorization", "Bearer " + s.Token}
	if r := e.do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": "voice"}, auth...); r.status != 403 || r.errCode() != "MODE_NOT_ALLOWED" {
		t.Fatalf("mode voice: %d %s", r.status, r.raw)
	}
	if r := e.doRaw("POST", "/v1/sessions/"+s.ID+"/webrtc", "application/sdp", "v=0", auth...); r.status != 403 || r.errCode() != "MODE_NOT_ALLOWED" {
		t.Fatalf("voice offer: %d %s", r.status, r.raw)
	}
	c := e.mustDialWS(s)
	c.send(map[string]any{"type": "mode", "mode": "voice"})
	if f := c.next(); f.str("type") != "error" || f.str("code") != "MODE_NOT_ALLOWED" {
		t.Fatalf("WS mode frame answered %v", f)
	}
	if r := e.resolveWidget("pk_chatonly", testOrigin); r.status != 200 || len(r.body["widget"].(map[string]any)["modes"].([]any)) != 1 {
		t.Fatalf("resolve modes: %s", r.raw)
	}
}

// TestIdentityEdges: one identity style at a time; guest-only widgets do
// not use identities; a bootstrap token minted for a differently spelled
// origin still works.
func TestIdentityEdges(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t), withWidget(configs.WidgetConfig{Key: "pk_guests", IdentityPolicy: "guest",
		AllowDevOrigins: true, IdentitySecret: exampleSecret}))
	jwtFor := func() string {
		return signVisitorJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Minute).Unix()}, []byte(exampleSecret))
	}
	r := e.createSession(exampleKey, exampleOrigin, map[string]any{"visitor_token": jwtFor(), "user_id": "u1", "user_hash": userHash(exampleSecret, "u1")})
	if r.status != 422 || r.errCode() != "VALIDATION_FAILED" {
		t.Fatalf("two identity styles: %d %s", r.status, r.raw)
	}
	r = e.createSession("pk_guests", testOrigin, map[string]any{"visitor_token": jwtFor()})
	if r.status != 201 || r.body["visitor_claims"] != nil {
		t.Fatalf("guest-only widget: %d %s", r.status, r.raw)
	}
	ak, _ := e.newAdminKey("", broker.Scopes...)
	sk, _ := e.newSecretKey(ak, exampleID)
	tok := e.do("POST", "/v1/tokens", map[string]any{"origin": "HTTPS://WWW.Example.com:443"}, "Authorization", "Bearer "+sk)
	if tok.status != 201 {
		t.Fatalf("mint: %d %s", tok.status, tok.raw)
	}
	if r := e.do("POST", "/v1/sessions", map[string]any{"token": tok.str("token")}, "Origin", "https://www.example.com"); r.status != 201 {
		t.Fatalf("bootstrap from the canonical origin: %d %s", r.status, r.raw)
	}
}

// TestAdminWidgetRoundTrip: a widget as GET shows it can be PUT back.
func TestAdminWidgetRoundTrip(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ak, _ := e.newAdminKey("", broker.Scopes...)
	g := e.do("GET", "/v1/admin/widgets/wdg_demo", nil, "Authorization", "Bearer "+ak)
	if g.status != 200 {
		t.Fatalf("get: %d %s", g.status, g.raw)
	}
	g.body["welcome_text"] = "Changed"
	r := e.do("PUT", "/v1/admin/widgets/wdg_demo", g.body, "Authorization", "Bearer "+ak)
	if r.status != 200 || r.str("welcome_text") != "Changed" || r.str("public_key") != g.str("public_key") {
		t.Fatalf("put back: %d %s", r.status, r.raw)
	}
}

// TestUploadRefusesHTML: HTML and SVG are not accepted as uploads.
func TestUploadRefusesHTML(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	s := e.newSession(nil)
	for _, data := range []string{"<!DOCTYPE html><html><script>alert(1)</script></html>",
		`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`} {
		if r := e.upload(s, "x.txt", "text/plain", []byte(data)); r.status != 415 || r.errCode() != "UNSUPPORTED_MEDIA_TYPE" {
			t.Fatalf("upload %.20q: %d %s", data, r.status, r.raw)
		}
	}
}
