package signaling_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/signaling/signalingtest"
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
	if r := e.Do("POST", "/v1/admin/widgets", body, "Authorization", "Bearer "+akA); r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	created := e.Do("GET", "/v1/admin/widgets/wdg_shop", nil, "Authorization", "Bearer "+akA)
	sess := e.MustCreateSession(created.Str("public_key"), "https://shop.example.com", nil)
	sk, _ := e.newSecretKey(akA, "wdg_shop")
	if r := e.Do("DELETE", "/v1/admin/widgets/wdg_shop", nil, "Authorization", "Bearer "+akA); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Raw)
	}
	// Its sessions reach nothing, with an Origin or without one.
	for _, origin := range []string{"", "https://shop.example.com"} {
		hdr := []string{"Authorization", "Bearer " + sess.Token}
		if origin != "" {
			hdr = append(hdr, "Origin", origin)
		}
		r := e.Do("GET", "/v1/sessions/"+sess.ID+"/history", nil, hdr...)
		if origin == "" {
			signalingtest.ExpectErr(t, "history of a deleted widget's session", r, 410, "SESSION_ENDED")
		} else if r.Status < 400 {
			t.Fatalf("history of a deleted widget's session, Origin %s: %d %s", origin, r.Status, r.Raw)
		}
	}
	if r := e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": "u"}, "Authorization", "Bearer "+sk); r.Status != 403 || r.ErrCode() != "KEY_DISABLED" {
		t.Fatalf("secret key of a deleted widget: %d %s", r.Status, r.Raw)
	}
	r := e.Do("POST", "/v1/admin/widgets", body, "Authorization", "Bearer "+akB)
	if r.Status != 422 || r.ErrCode() != "VALIDATION_FAILED" {
		t.Fatalf("re-creating a deleted id: %d %s", r.Status, r.Raw)
	}
}

// TestModeNotAllowed: a chat-only widget refuses voice however it is asked.
func TestModeNotAllowed(t *testing.T) {
	t.Parallel()
	e := startEnv(t, voiceConfig, withWidget(configs.WidgetConfig{Key: "pk_chatonly", Mode: "chat", AllowDevOrigins: true}))
	s := e.MustCreateSession("pk_chatonly", testOrigin, nil)
	auth := []string{"Authorization", "Bearer " + s.Token}
	if r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": "voice"}, auth...); r.Status != 403 || r.ErrCode() != "MODE_NOT_ALLOWED" {
		t.Fatalf("mode voice: %d %s", r.Status, r.Raw)
	}
	if r := e.DoRaw("POST", "/v1/sessions/"+s.ID+"/webrtc", "application/sdp", "v=0", auth...); r.Status != 403 || r.ErrCode() != "MODE_NOT_ALLOWED" {
		t.Fatalf("voice offer: %d %s", r.Status, r.Raw)
	}
	c := e.MustDialWS(s)
	c.Send(map[string]any{"type": "mode", "mode": "voice"})
	if f := c.Next(); f.Str("type") != "error" || f.Str("code") != "MODE_NOT_ALLOWED" {
		t.Fatalf("WS mode frame answered %v", f)
	}
	if r := e.ResolveWidget("pk_chatonly", testOrigin); r.Status != 200 || len(r.Body["widget"].(map[string]any)["modes"].([]any)) != 1 {
		t.Fatalf("resolve modes: %s", r.Raw)
	}
}

// TestIdentityEdges: one identity style at a time; guest-only widgets do
// not use identities; a bootstrap token minted for a differently spelled
// origin still works.
func TestIdentityEdges(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t), withWidget(configs.WidgetConfig{Key: "pk_guests", IdentityPolicy: "guest",
		AllowDevOrigins: true, IdentitySecret: signalingtest.ExampleSecret}))
	jwtFor := func() string {
		return signaling.SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Minute).Unix()}, []byte(signalingtest.ExampleSecret))
	}
	r := e.CreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, map[string]any{"visitor_token": jwtFor(), "user_id": "u1", "user_hash": signalingtest.UserHash(signalingtest.ExampleSecret, "u1")})
	if r.Status != 422 || r.ErrCode() != "VALIDATION_FAILED" {
		t.Fatalf("two identity styles: %d %s", r.Status, r.Raw)
	}
	r = e.CreateSession("pk_guests", testOrigin, map[string]any{"visitor_token": jwtFor()})
	if r.Status != 201 || r.Body["visitor_claims"] != nil {
		t.Fatalf("guest-only widget: %d %s", r.Status, r.Raw)
	}
	ak, _ := e.newAdminKey("", broker.Scopes...)
	sk, _ := e.newSecretKey(ak, signalingtest.ExampleID)
	tok := e.Do("POST", "/v1/tokens", map[string]any{"origin": "HTTPS://WWW.Example.com:443"}, "Authorization", "Bearer "+sk)
	if tok.Status != 201 {
		t.Fatalf("mint: %d %s", tok.Status, tok.Raw)
	}
	if r := e.Do("POST", "/v1/sessions", map[string]any{"token": tok.Str("token")}, "Origin", "https://www.example.com"); r.Status != 201 {
		t.Fatalf("bootstrap from the canonical origin: %d %s", r.Status, r.Raw)
	}
}

// TestAdminWidgetRoundTrip: a widget as GET shows it can be PUT back.
func TestAdminWidgetRoundTrip(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	_, auth := e.newFullAdmin()
	g := e.Do("GET", "/v1/admin/widgets/wdg_demo", nil, auth...)
	if g.Status != 200 {
		t.Fatalf("get: %d %s", g.Status, g.Raw)
	}
	g.Body["welcome_text"] = "Changed"
	r := e.Do("PUT", "/v1/admin/widgets/wdg_demo", g.Body, auth...)
	if r.Status != 200 || r.Str("welcome_text") != "Changed" || r.Str("public_key") != g.Str("public_key") {
		t.Fatalf("put back: %d %s", r.Status, r.Raw)
	}
}

// TestUploadRefusesHTML: HTML and SVG are not accepted as uploads.
func TestUploadRefusesHTML(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	s := e.NewSession(nil)
	for _, data := range []string{"<!DOCTYPE html><html><script>alert(1)</script></html>",
		`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`} {
		if r := e.Upload(s, "x.txt", "text/plain", []byte(data)); r.Status != 415 || r.ErrCode() != "UNSUPPORTED_MEDIA_TYPE" {
			t.Fatalf("upload %.20q: %d %s", data, r.Status, r.Raw)
		}
	}
}
