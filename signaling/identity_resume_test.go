package signaling_test

import (
	"maps"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// A resume token means the resume token: a bogus one is refused whatever
// identity comes with it. Resuming by identity is its own request
// (resume_identity), allowed per widget by identity_resume: by default
// only for identities that expire, never for a user_hash, which does not.

// withExampleResume adds pk_example with the given identity_resume.
func withExampleResume(t testing.TB, policy string) func(*configs.Config) {
	t.Helper()
	w := signalingtest.ExampleWidget(t, filepath.Join("..", "configs", "parley.example.yaml"))
	w.IdentityResume = policy
	return func(c *configs.Config) { c.Widgets = append(c.Widgets, w) }
}

func TestIdentityResume(t *testing.T) {
	t.Parallel()
	e := startEnv(t, noEcho, withExampleWidget(t))
	key, origin := signalingtest.ExampleKey, signalingtest.ExampleOrigin
	userHash := map[string]any{"user_id": "u-42", "user_hash": signalingtest.UserHash(signalingtest.ExampleSecret, "u-42")}
	visitorJWT := func(sub string) map[string]any {
		now := time.Now()
		tok := signaling.SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()}, []byte(signalingtest.ExampleSecret))
		return map[string]any{"visitor_token": tok}
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		m = maps.Clone(m)
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}

	if r := e.ResolveWidget(key, origin); r.Body["widget"].(map[string]any)["identity_resume"] != "expiring" {
		t.Fatalf("resolve: identity_resume default: %s", r.Raw)
	}
	first := e.CreateSession(key, origin, userHash)
	jwtFirst := e.CreateSession(key, origin, visitorJWT("user-7"))
	if first.Status != http.StatusCreated || jwtFirst.Status != http.StatusCreated {
		t.Fatalf("sessions: %d %s / %d %s", first.Status, first.Raw, jwtFirst.Status, jwtFirst.Raw)
	}

	// The review's case: a bogus resume_token with a valid identity.
	for name, id := range map[string]map[string]any{"user_hash": userHash, "jwt": visitorJWT("user-7")} {
		for _, extra := range []map[string]any{
			{"resume_token": "bogus"},
			{"resume_token": "bogus", "resume_identity": true},
		} {
			r := e.CreateSession(key, origin, with(id, "resume_token", extra["resume_token"], "resume_identity", extra["resume_identity"] == true))
			signalingtest.ExpectErr(t, name+" with a bogus resume token", r, 401, "RESUME_TOKEN_INVALID")
		}
	}

	// By default a user_hash may not resume by identity; a visitor JWT may.
	r := e.CreateSession(key, origin, with(userHash, "resume_identity", true))
	signalingtest.ExpectErr(t, "user_hash resuming by identity", r, 403, "IDENTITY_RESUME_NOT_ALLOWED")
	r = e.CreateSession(key, origin, with(visitorJWT("user-7"), "resume_identity", true))
	if r.Status != http.StatusCreated || r.Body["resumed"] != true || r.Str("conversation_id") != jwtFirst.Str("conversation_id") {
		t.Fatalf("visitor JWT resuming by identity: %d %s", r.Status, r.Raw)
	}
	r = e.CreateSession(key, origin, with(visitorJWT("user-8"), "resume_identity", true))
	if r.Status != http.StatusCreated || r.Body["resumed"] != false || r.Str("conversation_id") == jwtFirst.Str("conversation_id") {
		t.Fatalf("a visitor with no conversation yet starts one: %d %s", r.Status, r.Raw)
	}
	r = e.CreateSession(key, origin, map[string]any{"resume_identity": true})
	signalingtest.ExpectErr(t, "a guest resuming by identity", r, 422, "VALIDATION_FAILED")

	// Without resume_identity an identity never resumes.
	r = e.CreateSession(key, origin, visitorJWT("user-7"))
	if r.Status != http.StatusCreated || r.Body["resumed"] != false || r.Str("conversation_id") == jwtFirst.Str("conversation_id") {
		t.Fatalf("identity alone resumed: %d %s", r.Status, r.Raw)
	}
}

func TestIdentityResumePolicies(t *testing.T) {
	t.Parallel()
	key, origin := signalingtest.ExampleKey, signalingtest.ExampleOrigin
	userHash := map[string]any{"user_id": "u-42", "user_hash": signalingtest.UserHash(signalingtest.ExampleSecret, "u-42")}

	anyEnv := startEnv(t, noEcho, withExampleResume(t, configs.IdentityResumeAny))
	first := anyEnv.CreateSession(key, origin, userHash)
	r := anyEnv.CreateSession(key, origin, map[string]any{"user_id": "u-42", "user_hash": userHash["user_hash"], "resume_identity": true})
	if first.Status != http.StatusCreated || r.Status != http.StatusCreated || r.Body["resumed"] != true || r.Str("conversation_id") != first.Str("conversation_id") {
		t.Fatalf("identity_resume any, user_hash: %d %s", r.Status, r.Raw)
	}

	off := startEnv(t, noEcho, withExampleResume(t, configs.IdentityResumeOff))
	now := time.Now()
	tok := signaling.SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "user-7", "exp": now.Add(5 * time.Minute).Unix()}, []byte(signalingtest.ExampleSecret))
	r = off.CreateSession(key, origin, map[string]any{"visitor_token": tok, "resume_identity": true})
	signalingtest.ExpectErr(t, "identity_resume off, JWT", r, 403, "IDENTITY_RESUME_NOT_ALLOWED")
}
