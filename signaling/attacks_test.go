package signaling_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestAttackList is the outside security review's list of attacks, and the
// promises the docs make, as one table run against one server: origins
// (seed 001's table, lookalikes, trailing dots, punycode, userinfo), CORS,
// challenge replay and proxy spoofing, JWT attacks, identity and resume,
// tokens across sessions and widgets, admin scopes and tenants, bad input,
// and at the end a scan of the log for every secret the run used. Each case
// is one request and the status and code the docs promise. It prints how
// many it tried.
func TestAttackList(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t), func(c *configs.Config) {
		// One client makes every request: only the rate-limit case limits.
		c.Limits.Resolve = configs.RateConfig{PerIP: "0", PerWidget: "0"}
		c.Limits.Sessions = configs.RateConfig{PerIP: "0", PerWidget: "0"}
		c.Limits.Messages = configs.RateConfig{PerIP: "0", PerWidget: "0"}
		c.Log.Level = "debug"
	})
	key, origin, secret := signalingtest.ExampleKey, signalingtest.ExampleOrigin, []byte(signalingtest.ExampleSecret)
	now := time.Now()

	// Credentials of the run; every one is looked for in the log at the end.
	akAll, _ := e.newAdminKey("", broker.Scopes...)
	akExample, _ := e.newAdminKey("example", broker.Scopes...)
	akOther, _ := e.newAdminKey("other", broker.Scopes...)
	akRead, _ := e.newAdminKey("", broker.ScopeConfigRead)
	akOpsRead, _ := e.newAdminKey("", broker.ScopeOpsRead)
	sk, _ := e.newSecretKey(akAll, signalingtest.ExampleID)
	skDemo, _ := e.newSecretKey(akAll, "wdg_demo")
	a := e.MustCreateSession(key, origin, nil)
	b := e.MustCreateSession(key, origin, nil)
	demo := e.NewSession(nil)
	userHash := signalingtest.UserHash(signalingtest.ExampleSecret, "u-42")
	jwtOf := func(claims jwt.MapClaims) string {
		return signaling.SignJWT(t, jwt.SigningMethodHS256, claims, secret)
	}
	goodJWT := jwtOf(jwt.MapClaims{"sub": "user-7", "exp": now.Add(5 * time.Minute).Unix()})
	userTok := e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-42"}, "Authorization", "Bearer "+sk).Str("user_token")
	demoUserTok := e.Do("POST", "/v1/user-tokens", map[string]any{"user_id": "u-42"}, "Authorization", "Bearer "+skDemo).Str("user_token")
	bootTok := e.Do("POST", "/v1/tokens", map[string]any{"origin": origin}, "Authorization", "Bearer "+sk).Str("token")
	if userTok == "" || demoUserTok == "" || bootTok == "" {
		t.Fatal("could not mint the run's tokens")
	}
	// alg confusion: an RS256 header over an HMAC made with the identity
	// secret, as if it were the public key.
	b64 := base64.RawURLEncoding.EncodeToString
	confused := func() string {
		parts := strings.Split(goodJWT, ".")
		h := b64([]byte(`{"alg":"RS256","typ":"JWT"}`))
		sig, err := jwt.SigningMethodHS256.Sign(h+"."+parts[1], secret)
		if err != nil {
			t.Fatal(err)
		}
		return h + "." + parts[1] + "." + b64(sig)
	}()

	resolve := func(o string) func() signalingtest.Response {
		return func() signalingtest.Response {
			return e.Do("POST", "/v1/widget/resolve", map[string]any{"widget_key": key}, "Origin", o)
		}
	}
	session := func(extra map[string]any) func() signalingtest.Response {
		return func() signalingtest.Response { return e.CreateSession(key, origin, extra) }
	}
	as := func(s signalingtest.Session, method, path string, body any, hdr ...string) func() signalingtest.Response {
		return func() signalingtest.Response {
			return e.Do(method, strings.ReplaceAll(path, "{id}", s.ID), body, hdr...)
		}
	}
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	admin := func(tok, method, path string, body any) func() signalingtest.Response {
		return func() signalingtest.Response { return e.Do(method, path, body, bearer(tok)...) }
	}
	raw := func(method, path, ct, body string, hdr ...string) func() signalingtest.Response {
		return func() signalingtest.Response { return e.DoRaw(method, path, ct, body, hdr...) }
	}

	type attack struct {
		name   string
		do     func() signalingtest.Response
		status int
		code   string // "" for a success
	}
	groups := []struct {
		name    string
		attacks []attack
	}{
		{"origins", []attack{
			{"the registered domain", resolve("https://example.com"), 200, ""},
			{"a subdomain", resolve("https://www.example.com"), 200, ""},
			{"a deeper subdomain", resolve("https://a.b.example.com"), 200, ""},
			{"another port", resolve("https://example.com:8443"), 200, ""},
			{"no Origin", func() signalingtest.Response {
				return e.Do("POST", "/v1/widget/resolve", map[string]any{"widget_key": key})
			}, 401, "ORIGIN_REQUIRED"},
			{"another TLD", resolve("https://example.io"), 403, "ORIGIN_NOT_ALLOWED"},
			{"a public suffix lookalike", resolve("https://example.co.uk"), 403, "ORIGIN_NOT_ALLOWED"},
			{"an impostor", resolve("https://impostor.com"), 403, "ORIGIN_NOT_ALLOWED"},
			{"the domain as a subdomain", resolve("https://example.com.evil.net"), 403, "ORIGIN_NOT_ALLOWED"},
			{"a prefix", resolve("https://evilexample.com"), 403, "ORIGIN_NOT_ALLOWED"},
			{"a hyphenated lookalike", resolve("https://example-com.net"), 403, "ORIGIN_NOT_ALLOWED"},
			{"punycode (a Cyrillic a)", resolve("https://xn--exmple-4nf.com"), 403, "ORIGIN_NOT_ALLOWED"},
			{"userinfo", resolve("https://example.com@evil.net"), 403, "ORIGIN_NOT_ALLOWED"},
			{"a path", resolve("https://evil.net/example.com"), 403, "ORIGIN_NOT_ALLOWED"},
			{"null", resolve("null"), 403, "ORIGIN_NOT_ALLOWED"},
			{"localhost (no dev origins)", resolve("http://localhost:3000"), 403, "ORIGIN_NOT_ALLOWED"},
			{"a file page", resolve("file://"), 403, "ORIGIN_NOT_ALLOWED"},
			{"an unknown key", func() signalingtest.Response {
				return e.Do("POST", "/v1/widget/resolve", map[string]any{"widget_key": "pk_nope"}, "Origin", origin)
			}, 401, "UNKNOWN_WIDGET_KEY"},
		}},
		{"challenge", []attack{
			{"no challenge", func() signalingtest.Response {
				return e.Do("POST", "/v1/sessions", map[string]any{"widget_key": key}, "Origin", origin)
			}, 401, "CHALLENGE_INVALID"},
			{"a forged challenge", func() signalingtest.Response {
				return e.Do("POST", "/v1/sessions", map[string]any{"widget_key": key, "challenge": "v1.eyJ3Ijoid2RnX2V4YW1wbGUifQ.AAAA"}, "Origin", origin)
			}, 401, "CHALLENGE_INVALID"},
			{"a replayed challenge", func() signalingtest.Response {
				c := e.ChallengeFor(key, origin)
				e.Do("POST", "/v1/sessions", map[string]any{"widget_key": key, "challenge": c}, "Origin", origin)
				return e.Do("POST", "/v1/sessions", map[string]any{"widget_key": key, "challenge": c}, "Origin", origin)
			}, 401, "CHALLENGE_INVALID"},
			{"another widget's challenge", func() signalingtest.Response {
				return e.Do("POST", "/v1/sessions", map[string]any{"widget_key": key, "challenge": e.Resolve(signalingtest.DemoOrigin)}, "Origin", origin)
			}, 401, "CHALLENGE_INVALID"},
			{"another origin's challenge", func() signalingtest.Response {
				c := e.ChallengeFor(key, "https://shop.example.com")
				return e.Do("POST", "/v1/sessions", map[string]any{"widget_key": key, "challenge": c}, "Origin", origin)
			}, 401, "CHALLENGE_INVALID"},
			{"a spoofed X-Forwarded-For (no trusted proxy) changes nothing", func() signalingtest.Response {
				c := e.ChallengeFor(key, origin, "X-Forwarded-For", "198.51.100.7")
				return e.Do("POST", "/v1/sessions", map[string]any{"widget_key": key, "challenge": c}, "Origin", origin, "X-Forwarded-For", "203.0.113.9")
			}, 201, ""},
			{"a bootstrap token twice", func() signalingtest.Response {
				e.Do("POST", "/v1/sessions", map[string]any{"token": bootTok}, "Origin", origin)
				return e.Do("POST", "/v1/sessions", map[string]any{"token": bootTok}, "Origin", origin)
			}, 401, "INVALID_VISITOR_TOKEN"},
		}},
		{"visitor JWT", []attack{
			{"a valid one", session(map[string]any{"visitor_token": goodJWT}), 201, ""},
			{"alg none", session(map[string]any{"visitor_token": b64([]byte(`{"alg":"none"}`)) + "." + strings.Split(goodJWT, ".")[1] + "."}), 401, "INVALID_VISITOR_TOKEN"},
			{"RS256 signed with the HMAC key", session(map[string]any{"visitor_token": confused}), 401, "INVALID_VISITOR_TOKEN"},
			{"HS512", session(map[string]any{"visitor_token": signaling.SignJWT(t, jwt.SigningMethodHS512, jwt.MapClaims{"sub": "u", "exp": now.Add(time.Minute).Unix()}, secret)}), 401, "INVALID_VISITOR_TOKEN"},
			{"expired", session(map[string]any{"visitor_token": jwtOf(jwt.MapClaims{"sub": "u", "exp": now.Add(-time.Minute).Unix()})}), 401, "TOKEN_EXPIRED"},
			{"nbf in the future", session(map[string]any{"visitor_token": jwtOf(jwt.MapClaims{"sub": "u", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Minute).Unix()})}), 401, "INVALID_VISITOR_TOKEN"},
			{"no exp", session(map[string]any{"visitor_token": jwtOf(jwt.MapClaims{"sub": "u"})}), 401, "INVALID_VISITOR_TOKEN"},
			{"another secret", session(map[string]any{"visitor_token": signaling.SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "exp": now.Add(time.Minute).Unix()}, []byte("another secret of at least 32 bytes!!"))}), 401, "INVALID_VISITOR_TOKEN"},
			{"a forged user_hash", session(map[string]any{"user_id": "admin", "user_hash": userHash}), 401, "INVALID_VISITOR_TOKEN"},
			{"two identities", session(map[string]any{"visitor_token": goodJWT, "user_id": "u-42", "user_hash": userHash}), 422, "VALIDATION_FAILED"},
			{"another widget's user token", session(map[string]any{"user_token": demoUserTok}), 401, "INVALID_VISITOR_TOKEN"},
			{"a claim with a direction override", session(map[string]any{"visitor_token": jwtOf(jwt.MapClaims{"sub": "u", "name": "Ada\u202e", "exp": now.Add(time.Minute).Unix()})}), 401, "INVALID_VISITOR_TOKEN"},
		}},
		{"resume", []attack{
			{"a bogus resume token with a valid user_hash", session(map[string]any{"resume_token": "bogus", "user_id": "u-42", "user_hash": userHash}), 401, "RESUME_TOKEN_INVALID"},
			{"a bogus resume token with a valid JWT", session(map[string]any{"resume_token": "bogus", "visitor_token": goodJWT}), 401, "RESUME_TOKEN_INVALID"},
			{"resuming by a user_hash (never expires)", session(map[string]any{"resume_identity": true, "user_id": "u-42", "user_hash": userHash}), 403, "IDENTITY_RESUME_NOT_ALLOWED"},
			{"resuming by identity as a guest", session(map[string]any{"resume_identity": true}), 422, "VALIDATION_FAILED"},
			{"another widget's resume token", func() signalingtest.Response {
				return e.CreateSession(key, origin, map[string]any{"resume_token": demo.ResumeToken})
			}, 401, "RESUME_TOKEN_INVALID"},
		}},
		{"tokens across sessions", []attack{
			{"history with another session's token", as(b, "GET", "/v1/sessions/{id}/history", nil, bearer(a.Token)...), 401, "SESSION_TOKEN_INVALID"},
			{"a message with another session's token", as(b, "POST", "/v1/sessions/{id}/messages", map[string]any{"body": "x"}, bearer(a.Token)...), 401, "SESSION_TOKEN_INVALID"},
			{"a capture with another session's token", as(b, "POST", "/v1/sessions/{id}/captures", map[string]any{"kind": "name", "value": "x", "source": "volunteered"}, bearer(a.Token)...), 401, "SESSION_TOKEN_INVALID"},
			{"a mode switch with another session's token", as(b, "POST", "/v1/sessions/{id}/mode", map[string]any{"mode": "chat"}, bearer(a.Token)...), 401, "SESSION_TOKEN_INVALID"},
			{"ending another session", as(b, "DELETE", "/v1/sessions/{id}", nil, bearer(a.Token)...), 401, "SESSION_TOKEN_INVALID"},
			{"a resume token as a session token", as(a, "GET", "/v1/sessions/{id}/history", nil, bearer(a.ResumeToken)...), 401, "SESSION_TOKEN_INVALID"},
			{"no token", as(a, "GET", "/v1/sessions/{id}/history", nil), 401, "SESSION_TOKEN_INVALID"},
			{"a token from a foreign page", as(a, "GET", "/v1/sessions/{id}/history", nil, append(bearer(a.Token), "Origin", "https://evil.net")...), 403, "ORIGIN_NOT_ALLOWED"},
			{"another widget's session from this widget's page", as(demo, "GET", "/v1/sessions/{id}/history", nil, append(bearer(demo.Token), "Origin", origin)...), 403, "ORIGIN_NOT_ALLOWED"},
			{"an unknown session id", func() signalingtest.Response {
				return e.Do("GET", "/v1/sessions/ses_AAAAAAAAAAAAAAAAAAAA/history", nil, bearer(a.Token)...)
			}, 404, "SESSION_NOT_FOUND"},
		}},
		{"keys, scopes and tenants", []attack{
			{"no key", admin("", "GET", "/v1/admin/widgets", nil), 401, "INVALID_API_KEY"},
			{"a session token as an admin key", admin(a.Token, "GET", "/v1/admin/widgets", nil), 401, "INVALID_API_KEY"},
			{"a secret key as an admin key", admin(sk, "GET", "/v1/admin/widgets", nil), 401, "INVALID_API_KEY"},
			{"an admin key as a secret key", admin(akAll, "POST", "/v1/user-tokens", map[string]any{"user_id": "u"}), 401, "INVALID_API_KEY"},
			{"config:read writing a widget", admin(akRead, "POST", "/v1/admin/widgets", map[string]any{"display_title": "x", "allowed_origins": []string{"x.com"}}), 403, "MISSING_SCOPE"},
			{"config:read minting keys", admin(akRead, "POST", "/v1/admin/keys", map[string]any{"scopes": []string{"ops:read"}}), 403, "MISSING_SCOPE"},
			{"ops:read ending a room", admin(akOpsRead, "DELETE", "/v1/ops/rooms/"+a.ConversationID, nil), 403, "MISSING_SCOPE"},
			{"ops:read erasing a conversation", admin(akOpsRead, "DELETE", "/v1/admin/conversations/"+a.ConversationID, nil), 403, "MISSING_SCOPE"},
			{"another tenant's widget", admin(akOther, "GET", "/v1/admin/widgets/"+signalingtest.ExampleID, nil), 404, "WIDGET_NOT_FOUND"},
			{"deleting another tenant's widget", admin(akOther, "DELETE", "/v1/admin/widgets/"+signalingtest.ExampleID, nil), 404, "WIDGET_NOT_FOUND"},
			{"another tenant's conversation", admin(akOther, "GET", "/v1/admin/conversations/"+a.ConversationID, nil), 404, "CONVERSATION_NOT_FOUND"},
			{"a tenant's own conversation", admin(akExample, "GET", "/v1/admin/conversations/"+a.ConversationID, nil), 200, ""},
			{"a tenant key minting a key of every tenant gets one of its tenant", func() signalingtest.Response {
				r := e.Do("POST", "/v1/admin/keys", map[string]any{"scopes": []string{"ops:read"}, "tenant": ""}, bearer(akExample)...)
				if info, _ := r.Body["info"].(map[string]any); r.Status == 201 && info["tenant"] != "example" {
					r.Status = 0 // escalated: fail the case
				}
				return r
			}, 201, ""},
			{"a tenant key minting a key of another tenant", admin(akExample, "POST", "/v1/admin/keys", map[string]any{"scopes": []string{"ops:read"}, "tenant": "other"}), 403, "MISSING_SCOPE"},
			{"a tenant key reading /metrics", admin(akExample, "GET", "/metrics", nil), 403, "MISSING_SCOPE"},
			{"/metrics without a key", admin("", "GET", "/metrics", nil), 401, "INVALID_API_KEY"},
			{"another widget's secret key for this widget's user token", func() signalingtest.Response {
				return e.CreateSession(key, origin, map[string]any{"user_token": demoUserTok})
			}, 401, "INVALID_VISITOR_TOKEN"},
		}},
		{"input", []attack{
			{"deep JSON", raw("POST", "/v1/widget/resolve", "application/json", strings.Repeat("[", 20_000)+strings.Repeat("]", 20_000), "Origin", origin), 400, "BAD_REQUEST"},
			{"an oversized body", raw("POST", "/v1/widget/resolve", "application/json", `{"widget_key":"`+strings.Repeat("k", 70_000)+`"}`, "Origin", origin), 413, "PAYLOAD_TOO_LARGE"},
			{"an unknown field", raw("POST", "/v1/widget/resolve", "application/json", `{"widget_key":"pk_example","admin":true}`, "Origin", origin), 400, "BAD_REQUEST"},
			{"trailing data", raw("POST", "/v1/widget/resolve", "application/json", `{"widget_key":"pk_example"}{"x":1}`, "Origin", origin), 400, "BAD_REQUEST"},
			{"a form body", raw("POST", "/v1/widget/resolve", "application/x-www-form-urlencoded", "widget_key=pk_example", "Origin", origin), 400, "BAD_REQUEST"},
			{"a message over max_message_chars", as(a, "POST", "/v1/sessions/{id}/messages", map[string]any{"body": strings.Repeat("x", 4001)}, bearer(a.Token)...), 422, "VALIDATION_FAILED"},
			{"a lead name with a line break", as(a, "POST", "/v1/sessions/{id}/captures", map[string]any{"kind": "name", "value": "A\nB", "source": "volunteered"}, bearer(a.Token)...), 422, "VALIDATION_FAILED"},
			{"an HTML upload", func() signalingtest.Response {
				return e.Upload(a, "x.png", "image/png", []byte("<!DOCTYPE html><script>alert(1)</script>"))
			}, 415, "UNSUPPORTED_MEDIA_TYPE"},
			{"an upload of another conversation attached", as(b, "POST", "/v1/sessions/{id}/messages", map[string]any{"body": "x", "upload_ids": []string{"upl_AAAAAAAAAAAAAAAAAAAA"}}, bearer(b.Token)...), 422, "VALIDATION_FAILED"},
			{"a voice offer that is not SDP", raw("POST", "/v1/sessions/"+a.ID+"/webrtc", "application/sdp", "v=0\r\nnot sdp", bearer(a.Token)...), 400, ""},
		}},
	}

	tried := 0
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, at := range g.attacks {
				tried++
				r := at.do()
				if r.Status != at.status || (at.code != "" && r.ErrCode() != at.code) {
					t.Errorf("%s: got %d %.300s, want %d %s", at.name, r.Status, r.Raw, at.status, at.code)
				}
				if r.Status >= 400 && r.ErrCode() == "" {
					t.Errorf("%s: a refusal without a coded error: %d %.200s", at.name, r.Status, r.Raw)
				}
			}
		})
	}

	// Nothing the run used as a credential is in the log.
	e.stop()
	logs := e.logs.String()
	for name, s := range map[string]string{"admin key": akAll, "tenant admin key": akExample, "secret key": sk,
		"session token": a.Token, "resume token": a.ResumeToken, "visitor JWT": goodJWT, "user hash": userHash,
		"user token": userTok, "bootstrap token": bootTok, "identity secret": signalingtest.ExampleSecret} {
		tried++
		if strings.Contains(logs, s) {
			t.Errorf("the %s is in the log", name)
		}
	}
	t.Logf("%d attacks and promises tried", tried)
	if !strings.Contains(logs, "session started") {
		t.Fatal("the run logged nothing: the log scan proves nothing")
	}
}
