package signaling_test

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// Tests of the admin API ("Authorization: Bearer ak_…"): scopes, the widget
// resource, key rotation, readiness and tenant isolation.

// ids lists the "id" of each object in r.Body[field].
func ids(r response, field string) []string {
	var out []string
	list, _ := r.Body[field].([]any)
	for _, o := range list {
		if m, ok := o.(map[string]any); ok {
			id, _ := m["id"].(string)
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// readinessCheck returns one check of a readiness answer.
func readinessCheck(t testing.TB, r response, name string) map[string]any {
	t.Helper()
	checks, _ := r.Body["checks"].(map[string]any)
	c, ok := checks[name].(map[string]any)
	if !ok {
		t.Fatalf("readiness has no check %q: %s", name, r.Raw)
	}
	return c
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	ak, akInfo := e.newAdminKey("", broker.Scopes...)
	readOnly, _ := e.newAdminKey("", broker.ScopeOpsRead)
	sk, _ := e.newSecretKey(ak, signalingtest.ExampleID)
	widget := map[string]any{"display_title": "Shop", "allowed_origins": []string{"https://shop.example.org"}}

	for _, tc := range []struct {
		name, auth string
		status     int
		code       string
	}{
		{"no key", "", 401, "INVALID_API_KEY"},
		{"garbage", "Bearer garbage", 401, "INVALID_API_KEY"},
		{"unknown admin key", "Bearer ak_" + strings.Repeat("A", 43), 401, "INVALID_API_KEY"},
		{"a secret key", "Bearer " + sk, 401, "INVALID_API_KEY"},
		{"a session token", "Bearer " + e.NewSession(nil).Token, 401, "INVALID_API_KEY"},
		{"missing scope", "Bearer " + readOnly, 403, "MISSING_SCOPE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Do("POST", "/v1/admin/widgets", widget, "Authorization", tc.auth)
			signalingtest.ExpectErr(t, tc.name, r, tc.status, tc.code)
		})
	}
	r := e.Do("POST", "/v1/admin/widgets", widget, "Authorization", "Bearer "+readOnly)
	if msg, _ := r.Body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, broker.ScopeConfigWrite) {
		t.Fatalf("MISSING_SCOPE message %q does not name the scope", msg)
	}
	// ops:read reads operations, nothing else.
	if r := e.Do("GET", "/v1/admin/conversations", nil, "Authorization", "Bearer "+readOnly); r.Status != http.StatusOK {
		t.Fatalf("ops:read conversations: %d %s", r.Status, r.Raw)
	}
	for _, p := range []string{"/v1/admin/widgets", "/v1/admin/widgets/wdg_demo", "/v1/admin/keys"} {
		signalingtest.ExpectErr(t, "ops:read GET "+p, e.Do("GET", p, nil, "Authorization", "Bearer "+readOnly), 403, "MISSING_SCOPE")
	}

	// A key cannot grant what it lacks.
	keysOnly, _ := e.newAdminKey("", broker.ScopeKeysWrite, broker.ScopeConfigRead)
	kauth := []string{"Authorization", "Bearer " + keysOnly}
	r = e.Do("POST", "/v1/admin/keys", map[string]any{"name": "escalate", "scopes": []string{broker.ScopeConfigWrite}}, kauth...)
	signalingtest.ExpectErr(t, "grant a scope it lacks", r, 403, "MISSING_SCOPE")
	r = e.Do("POST", "/v1/admin/keys", map[string]any{"name": "reader", "scopes": []string{broker.ScopeConfigRead}}, kauth...)
	info, _ := r.Body["info"].(map[string]any)
	if r.Status != http.StatusCreated || !strings.HasPrefix(r.Str("key"), "ak_") || info["kind"] != broker.KeyAdmin {
		t.Fatalf("grant a scope it has: %d %s", r.Status, r.Raw)
	}
	reader := r.Str("key")
	if r := e.Do("GET", "/v1/admin/widgets", nil, "Authorization", "Bearer "+reader); r.Status != http.StatusOK {
		t.Fatalf("the new key: %d %s", r.Status, r.Raw)
	}
	signalingtest.ExpectErr(t, "unknown scope", e.Do("POST", "/v1/admin/keys", map[string]any{"scopes": []string{"root"}}, "Authorization", "Bearer "+ak), 403, "MISSING_SCOPE")

	// Revoking an admin key stops it at once.
	r = e.Do("DELETE", "/v1/admin/keys/"+akInfo.ID, nil, "Authorization", "Bearer "+ak)
	if r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	signalingtest.ExpectErr(t, "revoked admin key", e.Do("GET", "/v1/admin/widgets", nil, "Authorization", "Bearer "+ak), 403, "KEY_DISABLED")
	signalingtest.ExpectErr(t, "revoke an unknown key", e.Do("DELETE", "/v1/admin/keys/key_nope", nil, kauth...), 404, "KEY_NOT_FOUND")
}

func TestAdminWidgets(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	_, auth := e.newFullAdmin()
	const origin = "https://shop.example.org"

	r := e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Shop", "allowed_origins": []string{origin}, "mode": "chat"}, auth...)
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	id, key, secret := r.Str("id"), r.Str("public_key"), r.Str("identity_secret")
	if !strings.HasPrefix(id, "wdg_") || !strings.HasPrefix(key, "pk_") || len(secret) < 32 ||
		r.Body["has_identity_secret"] != true || r.Str("tenant") != "default" || r.Str("agent") != configs.DefaultAgent {
		t.Fatalf("created widget: %s", r.Raw)
	}
	if r.Header.Get("Location") != "/v1/admin/widgets/"+id || !strings.Contains(r.Str("embed_snippet"), key) {
		t.Fatalf("Location %q, snippet %q", r.Header.Get("Location"), r.Str("embed_snippet"))
	}
	// The secret was shown once; reads never show it.
	r = e.Do("GET", "/v1/admin/widgets/"+id, nil, auth...)
	if r.Status != http.StatusOK || r.Body["has_identity_secret"] != true || r.Str("public_key") != key {
		t.Fatalf("get: %d %s", r.Status, r.Raw)
	}
	if _, ok := r.Body["identity_secret"]; ok || strings.Contains(r.Raw, secret) {
		t.Fatalf("GET shows the identity secret: %s", r.Raw)
	}
	r = e.Do("GET", "/v1/admin/widgets", nil, auth...)
	if got := ids(r, "widgets"); !slices.Equal(got, sorted("wdg_demo", id)) || strings.Contains(r.Raw, secret) {
		t.Fatalf("list: %v (or it shows a secret)", got)
	}
	// The new widget works from its origin at once.
	if r := e.ResolveWidget(key, origin); r.Status != http.StatusOK || r.Body["widget"].(map[string]any)["display_title"] != "Shop" {
		t.Fatalf("resolve the new widget: %d %s", r.Status, r.Raw)
	}

	// Validation: every problem, by field.
	r = e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": strings.Repeat("t", 81), "mode": "video",
		"allowed_origins": []string{"co.uk"}}, auth...)
	signalingtest.ExpectErr(t, "invalid widget", r, 422, "VALIDATION_FAILED")
	var fields []string
	details, _ := r.Body["error"].(map[string]any)["details"].(map[string]any)
	list, _ := details["fields"].([]any)
	for _, f := range list {
		m := f.(map[string]any)
		if m["message"] == "" {
			t.Fatalf("field without message: %v", m)
		}
		fields = append(fields, m["field"].(string))
	}
	slices.Sort(fields)
	if want := []string{"allowed_origins[0]", "display_title", "mode"}; !slices.Equal(fields, want) {
		t.Fatalf("fields = %v, want %v (%s)", fields, want, r.Raw)
	}
	signalingtest.ExpectErr(t, "unknown field", e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "x", "colour": "red"}, auth...), 400, "BAD_REQUEST")
	signalingtest.ExpectErr(t, "identity secret from the client", e.Do("POST", "/v1/admin/widgets",
		map[string]any{"display_title": "x", "allowed_origins": []string{origin}, "identity_secret": strings.Repeat("s", 40)}, auth...), 400, "BAD_REQUEST")
	signalingtest.ExpectErr(t, "no origins", e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "x"}, auth...), 422, "VALIDATION_FAILED")
	signalingtest.ExpectErr(t, "an existing id", e.Do("POST", "/v1/admin/widgets",
		map[string]any{"display_title": "x", "allowed_origins": []string{origin}, "public_key": "pk_demo", "id": "wdg_demo"}, auth...), 422, "VALIDATION_FAILED")

	// PUT replaces the settings; id, key and secret stay (a different id
	// or key in the body is refused: TestAdminWidgetPutReadOnly).
	r = e.Do("PUT", "/v1/admin/widgets/"+id, map[string]any{"display_title": "Shop help", "allowed_origins": []string{origin},
		"public_key": key, "id": id}, auth...)
	if r.Status != http.StatusOK || r.Str("display_title") != "Shop help" || r.Str("id") != id || r.Str("public_key") != key ||
		r.Body["has_identity_secret"] != true {
		t.Fatalf("put: %d %s", r.Status, r.Raw)
	}
	if r := e.ResolveWidget(key, origin); r.Body["widget"].(map[string]any)["display_title"] != "Shop help" {
		t.Fatalf("resolve after put: %s", r.Raw)
	}
	signalingtest.ExpectErr(t, "invalid put", e.Do("PUT", "/v1/admin/widgets/"+id, map[string]any{"display_title": "", "launcher_label": strings.Repeat("l", 41),
		"allowed_origins": []string{origin}}, auth...), 422, "VALIDATION_FAILED")
	signalingtest.ExpectErr(t, "put unknown widget", e.Do("PUT", "/v1/admin/widgets/wdg_nope", map[string]any{"display_title": "x",
		"allowed_origins": []string{origin}}, auth...), 404, "WIDGET_NOT_FOUND")

	// Rotation without grace: the old key stops at once.
	r = e.Do("POST", "/v1/admin/widgets/"+id+"/rotate-key", nil, auth...)
	newKey := r.Str("public_key")
	if r.Status != http.StatusOK || !strings.HasPrefix(newKey, "pk_") || newKey == key || r.Body["previous_key_valid_until"] != nil {
		t.Fatalf("rotate: %d %s", r.Status, r.Raw)
	}
	signalingtest.ExpectErr(t, "old key after rotation", e.ResolveWidget(key, origin), 401, "UNKNOWN_WIDGET_KEY")
	if r := e.ResolveWidget(newKey, origin); r.Status != http.StatusOK {
		t.Fatalf("new key: %d %s", r.Status, r.Raw)
	}
	// With grace both work until it ends.
	r = e.Do("POST", "/v1/admin/widgets/"+id+"/rotate-key", map[string]any{"grace_seconds": 60}, auth...)
	graceKey := r.Str("public_key")
	until, err := time.Parse(time.RFC3339Nano, r.Str("previous_key_valid_until"))
	if r.Status != http.StatusOK || graceKey == newKey || err != nil || until.Before(time.Now().Add(30*time.Second)) {
		t.Fatalf("rotate with grace: %d %s", r.Status, r.Raw)
	}
	for _, k := range []string{newKey, graceKey} {
		if r := e.ResolveWidget(k, origin); r.Status != http.StatusOK {
			t.Fatalf("key %s during grace: %d %s", k, r.Status, r.Raw)
		}
	}
	if r := e.Do("GET", "/v1/admin/widgets/"+id, nil, auth...); r.Str("public_key") != graceKey || r.Str("previous_key_valid_until") == "" {
		t.Fatalf("get after rotation: %s", r.Raw)
	}
	signalingtest.ExpectErr(t, "grace over a day", e.Do("POST", "/v1/admin/widgets/"+id+"/rotate-key", map[string]any{"grace_seconds": 86401}, auth...), 422, "VALIDATION_FAILED")

	// Readiness.
	r = e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Dev only", "allow_dev_origins": true}, auth...)
	if r.Status != http.StatusCreated {
		t.Fatalf("create dev widget: %d %s", r.Status, r.Raw)
	}
	devID := r.Str("id")
	r = e.Do("GET", "/v1/admin/widgets/"+devID+"/readiness", nil, auth...)
	failed, _ := r.Body["failed_checks"].([]any)
	if r.Status != http.StatusOK || r.Body["ready"] != false || !slices.Contains(failed, any("allowed_origins_configured")) {
		t.Fatalf("dev-only readiness: %d %s", r.Status, r.Raw)
	}
	if c := readinessCheck(t, r, "allowed_origins_configured"); c["passed"] != false || c["reason"] == nil {
		t.Fatalf("allowed_origins_configured = %v", c)
	}
	agenttest.Poll(t, 10*time.Second, "the echo agent in wdg_demo's readiness", func() bool {
		r = e.Do("GET", "/v1/admin/widgets/wdg_demo/readiness", nil, auth...)
		return r.Status == http.StatusOK && readinessCheck(t, r, "agent_available")["passed"] == true
	})
	for _, name := range []string{"widget_live", "identity_configured", "voice_available"} {
		if c := readinessCheck(t, r, name); c["passed"] != true || c["reason"] != nil {
			t.Fatalf("wdg_demo %s = %v", name, c)
		}
	}
	// The shop widget (a real origin, the echo agent) is ready.
	if r := e.Do("GET", "/v1/admin/widgets/"+id+"/readiness", nil, auth...); r.Body["ready"] != true || len(r.Body["failed_checks"].([]any)) != 0 {
		t.Fatalf("shop readiness: %s", r.Raw)
	}

	// Delete: gone from the API and from pages at once.
	if r := e.Do("DELETE", "/v1/admin/widgets/"+id, nil, auth...); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Raw)
	}
	signalingtest.ExpectErr(t, "get deleted", e.Do("GET", "/v1/admin/widgets/"+id, nil, auth...), 404, "WIDGET_NOT_FOUND")
	signalingtest.ExpectErr(t, "delete twice", e.Do("DELETE", "/v1/admin/widgets/"+id, nil, auth...), 404, "WIDGET_NOT_FOUND")
	signalingtest.ExpectErr(t, "resolve deleted", e.ResolveWidget(graceKey, origin), 401, "UNKNOWN_WIDGET_KEY")
	signalingtest.ExpectErr(t, "resolve deleted, old key in grace", e.ResolveWidget(newKey, origin), 401, "UNKNOWN_WIDGET_KEY")
}

func TestAdminTenantIsolation(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	global, _ := e.newAdminKey("", broker.Scopes...)
	gauth := []string{"Authorization", "Bearer " + global}
	tenant, tenantInfo := e.newAdminKey("example", broker.Scopes...)
	tauth := []string{"Authorization", "Bearer " + tenant}

	// Something to list: a conversation and a lead on each widget.
	demo := e.NewSession(nil)
	ex := e.MustCreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, nil)
	for _, s := range []session{demo, ex} {
		r := e.Do("POST", "/v1/sessions/"+s.ID+"/captures", map[string]any{"kind": "name", "value": "Jane", "source": "agent_asked"},
			"Authorization", "Bearer "+s.Token)
		if r.Status != http.StatusCreated {
			t.Fatalf("capture: %d %s", r.Status, r.Raw)
		}
	}
	convIDs := func(r response) []string { return ids(r, "conversations") }
	leadConvs := func(r response) []string {
		var out []string
		for _, l := range r.Body["leads"].([]any) {
			out = append(out, l.(map[string]any)["conversation_id"].(string))
		}
		slices.Sort(out)
		return out
	}
	both := sorted(demo.ConversationID, ex.ConversationID)

	// The global key sees everything.
	if r := e.Do("GET", "/v1/admin/conversations", nil, gauth...); !slices.Equal(convIDs(r), both) {
		t.Fatalf("global conversations: %s", r.Raw)
	}
	if r := e.Do("GET", "/v1/admin/leads", nil, gauth...); !slices.Equal(leadConvs(r), both) {
		t.Fatalf("global leads: %s", r.Raw)
	}
	if r := e.Do("GET", "/v1/admin/conversations?widget=wdg_demo", nil, gauth...); !slices.Equal(convIDs(r), []string{demo.ConversationID}) {
		t.Fatalf("global conversations of wdg_demo: %s", r.Raw)
	}
	signalingtest.ExpectErr(t, "bad limit", e.Do("GET", "/v1/admin/conversations?limit=0", nil, gauth...), 422, "VALIDATION_FAILED")

	// The tenant key sees its tenant only.
	r := e.Do("GET", "/v1/admin/widgets", nil, tauth...)
	if got := ids(r, "widgets"); r.Status != http.StatusOK || !slices.Equal(got, []string{signalingtest.ExampleID}) {
		t.Fatalf("tenant widgets: %v (%d)", got, r.Status)
	}
	if r := e.Do("GET", "/v1/admin/widgets/"+signalingtest.ExampleID, nil, tauth...); r.Status != http.StatusOK {
		t.Fatalf("own widget: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("GET", "/v1/admin/conversations", nil, tauth...); !slices.Equal(convIDs(r), []string{ex.ConversationID}) {
		t.Fatalf("tenant conversations: %s", r.Raw)
	}
	if r := e.Do("GET", "/v1/admin/leads", nil, tauth...); !slices.Equal(leadConvs(r), []string{ex.ConversationID}) {
		t.Fatalf("tenant leads: %s", r.Raw)
	}
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/admin/widgets/wdg_demo", nil},
		{"PUT", "/v1/admin/widgets/wdg_demo", map[string]any{"display_title": "mine now", "allow_dev_origins": true}},
		{"DELETE", "/v1/admin/widgets/wdg_demo", nil},
		{"POST", "/v1/admin/widgets/wdg_demo/rotate-key", nil},
		{"GET", "/v1/admin/widgets/wdg_demo/readiness", nil},
		{"POST", "/v1/admin/widgets/wdg_demo/secret-keys", nil},
		{"GET", "/v1/admin/conversations?widget=wdg_demo", nil},
		{"GET", "/v1/admin/leads?widget=wdg_demo", nil},
	} {
		signalingtest.ExpectErr(t, "tenant "+tc.method+" "+tc.path, e.Do(tc.method, tc.path, tc.body, tauth...), 404, "WIDGET_NOT_FOUND")
	}
	// Nothing of wdg_demo changed.
	if r := e.Do("GET", "/v1/admin/widgets/wdg_demo", nil, gauth...); r.Str("display_title") != "Parley demo" || r.Str("public_key") != configs.DemoWidgetKey {
		t.Fatalf("wdg_demo changed: %s", r.Raw)
	}

	// What a tenant key creates belongs to its tenant.
	r = e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Example shop", "allowed_origins": []string{"example.com"}}, tauth...)
	if r.Status != http.StatusCreated || r.Str("tenant") != "example" {
		t.Fatalf("tenant create: %d %s", r.Status, r.Raw)
	}
	signalingtest.ExpectErr(t, "create in another tenant", e.Do("POST", "/v1/admin/widgets",
		map[string]any{"display_title": "x", "allowed_origins": []string{"example.com"}, "tenant": "default"}, tauth...), 403, "MISSING_SCOPE")
	// A tenant key cannot move its widget to another tenant.
	r = e.Do("PUT", "/v1/admin/widgets/"+signalingtest.ExampleID, map[string]any{"display_title": "moved",
		"allowed_origins": []string{"example.com"}, "tenant": "default"}, tauth...)
	if r.Status != http.StatusOK || r.Str("tenant") != "example" {
		t.Fatalf("tenant put: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("GET", "/v1/admin/widgets/"+signalingtest.ExampleID, nil, gauth...); r.Str("tenant") != "example" {
		t.Fatalf("a tenant key moved its widget to another tenant: %s", r.Raw)
	}

	// Keys: a tenant key makes keys of its tenant only and cannot touch others.
	signalingtest.ExpectErr(t, "key for another tenant", e.Do("POST", "/v1/admin/keys",
		map[string]any{"scopes": []string{broker.ScopeOpsRead}, "tenant": "default"}, tauth...), 403, "MISSING_SCOPE")
	r = e.Do("POST", "/v1/admin/keys", map[string]any{"scopes": []string{broker.ScopeOpsRead}}, tauth...)
	if info, _ := r.Body["info"].(map[string]any); r.Status != http.StatusCreated || info["tenant"] != "example" {
		t.Fatalf("tenant key create: %d %s", r.Status, r.Raw)
	}
	_, globalInfo := e.newAdminKey("", broker.ScopeOpsRead)
	signalingtest.ExpectErr(t, "revoke another tenant's key", e.Do("DELETE", "/v1/admin/keys/"+globalInfo.ID, nil, tauth...), 404, "KEY_NOT_FOUND")
	r = e.Do("GET", "/v1/admin/keys", nil, tauth...)
	for _, k := range r.Body["keys"].([]any) {
		if k.(map[string]any)["tenant"] != "example" {
			t.Fatalf("tenant key listing shows %v", k)
		}
	}
	if got := ids(r, "keys"); !slices.Contains(got, tenantInfo.ID) || slices.Contains(got, globalInfo.ID) {
		t.Fatalf("tenant key listing: %v", got)
	}
}

// TestAdminWidgetPutReadOnly: PUT accepts the read-only fields of a widget
// (id, public_key and the fields only responses carry) when they hold the
// stored values, so a widget read with GET can be sent back, and refuses a
// changed one with 422 VALIDATION_FAILED naming it; nothing is stored then.
func TestAdminWidgetPutReadOnly(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	_, auth := e.newFullAdmin()
	// A rotation with grace, so previous_key_valid_until is shown too.
	if r := e.Do("POST", "/v1/admin/widgets/wdg_demo/rotate-key", map[string]any{"grace_seconds": 600}, auth...); r.Status != 200 {
		t.Fatalf("rotate: %d %s", r.Status, r.Raw)
	}
	g := e.Do("GET", "/v1/admin/widgets/wdg_demo", nil, auth...)
	if g.Status != 200 || g.Body["previous_key_valid_until"] == nil {
		t.Fatalf("get: %d %s", g.Status, g.Raw)
	}
	changes := map[string]any{
		"id":                       "wdg_other",
		"public_key":               "pk_chosen",
		"has_identity_secret":      !g.Body["has_identity_secret"].(bool),
		"previous_key_valid_until": "2030-01-01T00:00:00Z",
		"embed_snippet":            "<script src=\"https://evil.example/widget.js\"></script>",
		"created_at":               "2020-01-01T00:00:00Z",
		"updated_at":               "2020-01-01T00:00:00Z",
	}
	for _, field := range slices.Sorted(maps.Keys(changes)) {
		body := maps.Clone(g.Body)
		body["welcome_text"] = "changed with " + field
		body[field] = changes[field]
		r := e.Do("PUT", "/v1/admin/widgets/wdg_demo", body, auth...)
		signalingtest.ExpectErr(t, "PUT with a changed "+field, r, 422, "VALIDATION_FAILED")
		fields, _ := r.Body["error"].(map[string]any)["details"].(map[string]any)["fields"].([]any)
		if len(fields) != 1 || fields[0].(map[string]any)["field"] != field {
			t.Errorf("PUT with a changed %s: fields %v, want just %s", field, fields, field)
		}
	}
	// Several at once are all named.
	body := maps.Clone(g.Body)
	body["created_at"], body["public_key"] = changes["created_at"], changes["public_key"]
	r := e.Do("PUT", "/v1/admin/widgets/wdg_demo", body, auth...)
	signalingtest.ExpectErr(t, "PUT with two changed fields", r, 422, "VALIDATION_FAILED")
	if msg := r.Body["error"].(map[string]any)["message"]; msg != "2 field(s) are invalid" {
		t.Errorf("message %v", msg)
	}
	if r := e.Do("GET", "/v1/admin/widgets/wdg_demo", nil, auth...); r.Raw != g.Raw {
		t.Fatalf("a refused PUT changed the widget:\n%s\n%s", g.Raw, r.Raw)
	}
	// The unchanged round trip is accepted; so is leaving them out.
	body = maps.Clone(g.Body)
	body["welcome_text"] = "round trip"
	r = e.Do("PUT", "/v1/admin/widgets/wdg_demo", body, auth...)
	if r.Status != 200 || r.Str("welcome_text") != "round trip" || r.Str("public_key") != g.Str("public_key") {
		t.Fatalf("round trip: %d %s", r.Status, r.Raw)
	}
	for _, field := range slices.Collect(maps.Keys(changes)) {
		delete(body, field)
	}
	body["welcome_text"] = "without read-only fields"
	if r := e.Do("PUT", "/v1/admin/widgets/wdg_demo", body, auth...); r.Status != 200 || r.Str("welcome_text") != "without read-only fields" {
		t.Fatalf("without read-only fields: %d %s", r.Status, r.Raw)
	}
}

// TestAdminWidgetVoice: a widget's voice settings round-trip through the
// admin API with their defaults filled in, and bad ones are refused with
// 422 naming each field.
func TestAdminWidgetVoice(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	_, auth := e.newFullAdmin()
	const origin = "https://voice.example.org"

	r := e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Voice", "allowed_origins": []string{origin},
		"voice": map[string]any{"vad": map[string]any{"threshold_dbov": -52.5, "hangover_ms": 600}, "barge_in": "off"}}, auth...)
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	id := r.Str("id")
	voice := func(r response) map[string]any {
		t.Helper()
		v, ok := r.Body["voice"].(map[string]any)
		if !ok {
			t.Fatalf("no voice in %s", r.Raw)
		}
		return v
	}
	check := func(what string, v map[string]any, threshold float64, minSpeech, hangover float64, bargeIn string, bargeInMin float64) {
		t.Helper()
		vad, _ := v["vad"].(map[string]any)
		if vad["threshold_dbov"] != threshold || vad["min_speech_ms"] != minSpeech || vad["hangover_ms"] != hangover ||
			v["barge_in"] != bargeIn || v["barge_in_min_ms"] != bargeInMin {
			t.Fatalf("%s: voice = %v", what, v)
		}
	}
	check("created", voice(r), -52.5, 60, 600, "off", 300)
	got := e.Do("GET", "/v1/admin/widgets/"+id, nil, auth...)
	check("read back", voice(got), -52.5, 60, 600, "off", 300)

	// What GET shows can be PUT back, changed.
	body := got.Body
	body["voice"] = map[string]any{"vad": map[string]any{"threshold_dbov": -40, "min_speech_ms": 100, "hangover_ms": 300},
		"barge_in": "auto", "barge_in_min_ms": 450}
	r = e.Do("PUT", "/v1/admin/widgets/"+id, body, auth...)
	if r.Status != http.StatusOK {
		t.Fatalf("put: %d %s", r.Status, r.Raw)
	}
	check("put", voice(r), -40, 100, 300, "auto", 450)

	// Bad settings: 422, every field named.
	r = e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Bad", "allowed_origins": []string{origin},
		"voice": map[string]any{"vad": map[string]any{"threshold_dbov": 6, "min_speech_ms": 5000, "hangover_ms": -1},
			"barge_in": "sometimes", "barge_in_min_ms": 99999}}, auth...)
	signalingtest.ExpectErr(t, "bad voice settings", r, 422, "VALIDATION_FAILED")
	var fields []string
	details, _ := r.Body["error"].(map[string]any)["details"].(map[string]any)
	list, _ := details["fields"].([]any)
	for _, f := range list {
		fields = append(fields, f.(map[string]any)["field"].(string))
	}
	slices.Sort(fields)
	want := []string{"voice.barge_in", "voice.barge_in_min_ms", "voice.vad.hangover_ms", "voice.vad.min_speech_ms", "voice.vad.threshold_dbov"}
	if !slices.Equal(fields, want) {
		t.Fatalf("fields = %v, want %v (%s)", fields, want, r.Raw)
	}
	signalingtest.ExpectErr(t, "unknown voice field", e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "x",
		"allowed_origins": []string{origin}, "voice": map[string]any{"vad": map[string]any{"threshold": -40}}}, auth...), 400, "BAD_REQUEST")

	// The demo widget, created from the config without voice settings,
	// shows the defaults.
	check("demo widget", voice(e.Do("GET", "/v1/admin/widgets/wdg_demo", nil, auth...)), -45, 60, 400, "auto", 300)
}
