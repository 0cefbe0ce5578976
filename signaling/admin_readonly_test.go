package signaling_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestAdminWidgetPutReadOnly: PUT accepts the read-only fields of a widget
// (id, public_key and the fields only responses carry) when they hold the
// stored values, so a widget read with GET can be sent back, and refuses a
// changed one with 422 VALIDATION_FAILED naming it; nothing is stored then.
func TestAdminWidgetPutReadOnly(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ak, _ := e.newAdminKey("", broker.Scopes...)
	auth := []string{"Authorization", "Bearer " + ak}
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
