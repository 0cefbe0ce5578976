package signaling_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// Helpers for sites, keys and sessions shared by the handler tests.

// withExampleWidget adds pk_example, as configs/parley.example.yaml defines
// it, to the test config's widgets.
func withExampleWidget(t testing.TB) func(*configs.Config) {
	t.Helper()
	w := signalingtest.ExampleWidget(t, filepath.Join("..", "configs", "parley.example.yaml"))
	return func(c *configs.Config) { c.Widgets = append(c.Widgets, w) }
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

// newFullAdmin creates an admin key for every tenant with every scope, as
// most admin tests use, and returns it with its Authorization header as
// Do's header arguments.
func (e *env) newFullAdmin() (string, []string) {
	e.t.Helper()
	ak, _ := e.newAdminKey("", broker.Scopes...)
	return ak, []string{"Authorization", "Bearer " + ak}
}

// newSecretKey creates a secret key for a widget through the admin API.
func (e *env) newSecretKey(ak, widgetID string) (string, string) {
	e.t.Helper()
	r := e.Do("POST", "/v1/admin/widgets/"+widgetID+"/secret-keys", nil, "Authorization", "Bearer "+ak)
	info, _ := r.Body["info"].(map[string]any)
	if r.Status != http.StatusCreated || !strings.HasPrefix(r.Str("key"), "sk_") || info["id"] == nil {
		e.t.Fatalf("create secret key: %d %s", r.Status, r.Raw)
	}
	if info["widget_id"] != widgetID || info["kind"] != broker.KeySecret {
		e.t.Fatalf("secret key info = %v", info)
	}
	return r.Str("key"), info["id"].(string)
}

// voiceConfig lets voice legs use loopback addresses.
func voiceConfig(c *configs.Config) { c.Media.IncludeLoopback = true }
