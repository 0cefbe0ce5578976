package configs

import (
	"strings"
	"testing"
)

func validWidget() WidgetConfig {
	w := WidgetConfig{Key: "pk_site", AllowedOrigins: []string{"https://App.Example.com"}, IdentitySecret: strings.Repeat("s", 32)}
	w.Normalize()
	return w
}

func TestWidgetNormalize(t *testing.T) {
	t.Parallel()
	w := validWidget()
	if w.ID != "wdg_site" || w.Tenant != "default" || w.DisplayTitle != "pk_site" || w.LauncherLabel != "Chat with us" ||
		w.Mode != "both" || w.Theme != "auto" || w.LauncherPosition != "bottom-right" || w.IdentityPolicy != "both" ||
		w.Agent != "echo" || w.AllowedOrigins[0] != "https://app.example.com" || w.Colors.Primary == "" || !w.IsLive() {
		t.Fatalf("normalized = %+v", w)
	}
	if ps := w.Validate(); len(ps) != 0 {
		t.Fatalf("valid widget: %v", ps)
	}
}

func TestWidgetValidate(t *testing.T) {
	t.Parallel()
	tests := []problemCase[WidgetConfig]{
		{"key prefix", func(w *WidgetConfig) { w.Key = "site" }, "public_key"},
		{"id", func(w *WidgetConfig) { w.ID = "site" }, "id"},
		{"tenant", func(w *WidgetConfig) { w.Tenant = "a b" }, "tenant"},
		{"title empty", func(w *WidgetConfig) { w.DisplayTitle = "" }, "display_title"},
		{"title long", func(w *WidgetConfig) { w.DisplayTitle = strings.Repeat("x", 81) }, "display_title"},
		{"label long", func(w *WidgetConfig) { w.LauncherLabel = strings.Repeat("x", 41) }, "launcher_label"},
		{"welcome long", func(w *WidgetConfig) { w.WelcomeText = strings.Repeat("é", 121) }, "welcome_text"},
		{"mode", func(w *WidgetConfig) { w.Mode = "video" }, "mode"},
		{"theme", func(w *WidgetConfig) { w.Theme = "pink" }, "theme"},
		{"position", func(w *WidgetConfig) { w.LauncherPosition = "middle" }, "launcher_position"},
		{"policy", func(w *WidgetConfig) { w.IdentityPolicy = "anyone" }, "identity_policy"},
		{"color", func(w *WidgetConfig) { w.Colors.Primary = "blue" }, "colors.primary"},
		{"locale", func(w *WidgetConfig) { w.Translations = map[string]WidgetText{"french!": {}} }, "translations.french!"},
		{"translation long", func(w *WidgetConfig) {
			w.Translations = map[string]WidgetText{"fr": {LauncherLabel: strings.Repeat("x", 41)}}
		}, "translations.fr.launcher_label"},
		{"no origins", func(w *WidgetConfig) { w.AllowedOrigins = nil }, "allowed_origins"},
		{"too many origins", func(w *WidgetConfig) {
			w.AllowedOrigins = make([]string, 51)
			for i := range w.AllowedOrigins {
				w.AllowedOrigins[i] = "example.com"
			}
		}, "allowed_origins"},
		{"origin path", func(w *WidgetConfig) { w.AllowedOrigins = []string{"https://a.com/x"} }, "allowed_origins[0]"},
		{"public suffix", func(w *WidgetConfig) { w.AllowedOrigins = []string{"co.uk"} }, "allowed_origins[0]"},
		{"subdomain as domain", func(w *WidgetConfig) { w.AllowedOrigins = []string{"app.acme.com"} }, "allowed_origins[0]"},
		{"domain with port", func(w *WidgetConfig) { w.AllowedOrigins = []string{"acme.com:443"} }, "allowed_origins[0]"},
		{"ip as domain", func(w *WidgetConfig) { w.AllowedOrigins = []string{"10.0.0.1"} }, "allowed_origins[0]"},
		{"wildcard domain", func(w *WidgetConfig) { w.AllowedOrigins = []string{"*.acme.com"} }, "allowed_origins[0]"},
		{"agent", func(w *WidgetConfig) { w.Agent = "a.b" }, "agent"},
		{"identity secret short", func(w *WidgetConfig) { w.IdentitySecret = "short" }, "identity_secret"},
		{"nav id", func(w *WidgetConfig) { w.NavMap = []NavTarget{{ID: "a b", Path: "/", Label: "x"}} }, "nav_map[0].id"},
		{"nav dup", func(w *WidgetConfig) {
			w.NavMap = []NavTarget{{ID: "a", Path: "/", Label: "x"}, {ID: "a", Path: "/b", Label: "y"}}
		}, "nav_map[1].id"},
		{"nav external path", func(w *WidgetConfig) { w.NavMap = []NavTarget{{ID: "a", Path: "//evil.com", Label: "x"}} }, "nav_map[0].path"},
		{"nav url", func(w *WidgetConfig) { w.NavMap = []NavTarget{{ID: "a", Path: "https://evil.com/", Label: "x"}} }, "nav_map[0].path"},
		{"nav label", func(w *WidgetConfig) { w.NavMap = []NavTarget{{ID: "a", Path: "/"}} }, "nav_map[0].label"},
		{"trigger type", func(w *WidgetConfig) { w.Triggers = []TriggerRule{{Type: "mind_reading", Cooldown: "session"}} }, "triggers[0].type"},
		{"trigger pattern", func(w *WidgetConfig) { w.Triggers = []TriggerRule{{Type: "url_matches", Cooldown: "session"}} }, "triggers[0].pattern"},
		{"trigger scroll", func(w *WidgetConfig) {
			w.Triggers = []TriggerRule{{Type: "scroll_depth", Value: 101, Cooldown: "session"}}
		}, "triggers[0].value"},
		{"trigger cooldown", func(w *WidgetConfig) { w.Triggers = []TriggerRule{{Type: "exit_intent", Cooldown: "forever"}} }, "triggers[0].cooldown"},
		{"trigger days", func(w *WidgetConfig) { w.Triggers = []TriggerRule{{Type: "exit_intent", Cooldown: "days"}} }, "triggers[0].cooldown_days"},
	}
	runProblemCases(t, tests, wantOneWidgetProblem)
}

// wantOneWidgetProblem fails t unless validWidget, as edit leaves it, has
// exactly one problem, on field.
func wantOneWidgetProblem(t *testing.T, edit func(*WidgetConfig), field string) {
	t.Helper()
	w := validWidget()
	edit(&w)
	if ps := w.Validate(); len(ps) != 1 || ps[0].Field != field {
		t.Fatalf("problems = %+v, want exactly one for %s", ps, field)
	}
}

func TestAllowedOriginEntries(t *testing.T) {
	t.Parallel()
	for entry, ok := range map[string]bool{
		"example.com": true, "acme.co.uk": true, "https://app.example.com": true, "http://localhost:*": true,
		"co.uk": false, "com": false, "app.example.com": false, "example.com/": false, "": false, "https://*.example.com": false,
	} {
		if got := checkAllowedOrigin(entry) == ""; got != ok {
			t.Errorf("checkAllowedOrigin(%q) ok = %v, want %v (%s)", entry, got, ok, checkAllowedOrigin(entry))
		}
	}
}
