package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// envMap returns a getenv function backed by m.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// writeConfig writes content to a fresh file and returns its path.
func writeConfig(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "parley.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// load loads content (no file when "") with env and args, failing on error.
func load(t *testing.T, content string, env map[string]string, args ...string) Config {
	t.Helper()
	path := ""
	if content != "" {
		path = writeConfig(t, content)
	}
	cfg, err := LoadWith(path, args, envMap(env))
	if err != nil {
		t.Fatalf("LoadWith: %v", err)
	}
	return cfg
}

func TestDefaultValidates(t *testing.T) {
	t.Parallel()
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if got := load(t, "", nil); !reflect.DeepEqual(got, Default()) {
		t.Errorf("Load with no sources = %+v, want Default()", got)
	}
	w, ok := d.Widget(DemoWidgetKey)
	if !ok || !w.IsLive() || w.Agent != "echo" || w.DisplayTitle != "Parley demo" {
		t.Errorf("demo widget = %+v, %v", w, ok)
	}
	if _, ok := d.Widget("pk_nope"); ok {
		t.Error("Widget(pk_nope) found")
	}
	// Default returns fresh slices each time.
	d.Widgets[0].DisplayTitle = "changed"
	d.Media.STUNURLs = append(d.Media.STUNURLs, "changed")
	if Default().Widgets[0].DisplayTitle == "changed" || len(Default().Media.STUNURLs) != 0 {
		t.Error("Default shares data between calls")
	}
}

func TestLoadProcessEnv(t *testing.T) {
	t.Parallel()
	// Load reads the real environment; with no PARLEY_PUBLIC_URL-breaking
	// values present it must at least accept explicit flags.
	cfg, err := Load("", []string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir()})
	if err != nil {
		t.Skipf("process environment holds PARLEY_* values that do not validate: %v", err)
	}
	if cfg.Listen != "127.0.0.1:0" {
		t.Errorf("Listen = %q", cfg.Listen)
	}
}

func TestEmptyFileKeepsDefaults(t *testing.T) {
	t.Parallel()
	for _, content := range []string{"", "\n", "# only a comment\n", "---\n", "~\n"} {
		path := writeConfig(t, content)
		cfg, err := LoadWith(path, nil, nil)
		if err != nil {
			t.Fatalf("%q: %v", content, err)
		}
		if !reflect.DeepEqual(cfg, Default()) {
			t.Errorf("%q: got %+v, want defaults", content, cfg)
		}
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, key, line string
	}{
		{"top level", "listen: 127.0.0.1:1\nbogus: 1\n", `"bogus"`, "line 2"},
		{"nested flow", "nats: {bogus: 1}\n", `"nats.bogus"`, "line 1"},
		{"nested block", "log:\n  level: info\n  colour: red\n", `"log.colour"`, "line 3"},
		{"misspelt duration", "agents:\n  dispatch_timout: 2s\n", `"agents.dispatch_timout"`, "line 2"},
		{"widget", "widgets:\n  - public_key: pk_site\n    colour: red\n", `"widgets[].colour"`, "line 3"},
		{"camel case", "dataDir: /tmp\n", `"dataDir"`, "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadWith(writeConfig(t, tt.yaml), nil, nil)
			if !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("err = %v, want ErrUnknownKey", err)
			}
			if errors.Is(err, ErrFile) || errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v also matches another sentinel", err)
			}
			for _, want := range []string{tt.key, tt.line, "parley.yaml"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %q, want it to contain %s", err, want)
				}
			}
		})
	}
}

func TestFileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, want string
	}{
		{"syntax", "listen: [\n", "yaml"},
		{"wrong type", "nats: {replicas: many}\n", "line 1"},
		{"bare number duration", "chat: {reply_timeout: 60}\n", "time.Duration"},
		{"bad duration", "chat: {reply_timeout: soon}\n", "soon"},
		{"duplicate key", "listen: a:1\nlisten: b:2\n", "already"},
		{"two documents", "listen: a:1\n---\nlisten: b:2\n", "more than one YAML document"},
		{"top-level list", "- listen\n", "configs.Config"},
		{"widgets not a list", "widgets: pk_demo\n", "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadWith(writeConfig(t, tt.yaml), nil, nil)
			if !errors.Is(err, ErrFile) || errors.Is(err, ErrUnknownKey) {
				t.Fatalf("err = %v, want ErrFile only", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to contain %q", err, tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		_, err := LoadWith(filepath.Join(t.TempDir(), "nope.yaml"), nil, nil)
		if !errors.Is(err, ErrFile) || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want ErrFile and fs.ErrNotExist", err)
		}
	})
}

func TestDefaultsKeptForKeysNotInFile(t *testing.T) {
	t.Parallel()
	cfg := load(t, "nats:\n  prefix: acme\nchat:\n  reply_timeout: 5s\n", nil)
	want := Default()
	want.NATS.Prefix = "acme"
	want.Chat.ReplyTimeout = 5 * time.Second
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestFileOverrides(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "nats.creds")
	if err := os.WriteFile(creds, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := load(t, strings.ReplaceAll(`
listen: 0.0.0.0:9000
public_url: https://chat.example.com/
data_dir: /var/lib/parley
log: {level: DEBUG, format: json}
nats:
  url: nats://n1:4222,nats://n2:4222
  listen: 127.0.0.1:-1
  prefix: acme
  replicas: 3
  dedup_window: 1h
  max_consumers: 5000
  credentials_file: CREDS
agents: {dispatch_timeout: 1s, dispatch_retry_max: 10s, heartbeat_timeout: 4s, max_delta_bytes: 1000, max_reply_bytes: 2000, max_action_bytes: 3000}
sessions: {ttl: 1h, resume_window: 30m, challenge_ttl: 30s}
chat: {max_message_chars: 500, reply_timeout: 5s}
security: {signing_key: 0123456789abcdef0123456789abcdef}
echo_agent: {enabled: false, workers: 0, agent: echo2}
`, "CREDS", creds), nil)
	want := Default()
	want.Listen = "0.0.0.0:9000"
	want.PublicURL = "https://chat.example.com"
	want.DataDir = "/var/lib/parley"
	want.Log = LogConfig{Level: "debug", Format: "json"}
	want.NATS = NATSConfig{
		URL: "nats://n1:4222,nats://n2:4222", Listen: "127.0.0.1:-1", Prefix: "acme",
		Replicas: 3, DedupWindow: time.Hour, MaxConsumers: 5000, CredentialsFile: creds,
		StartTimeout: 2 * time.Minute, Sync: SyncInterval, SyncInterval: 2 * time.Minute,
	}
	want.Agents = AgentsConfig{DispatchTimeout: time.Second, DispatchRetryMax: 10 * time.Second, HeartbeatTimeout: 4 * time.Second, AudioFormats: map[string]string{},
		BargeIn:       map[string]string{DefaultAgent: BargeInOff}, // the default: the file sets none
		Speech:        defaultAgentSpeech(),                        // the same
		MaxDeltaBytes: 1000, MaxReplyBytes: 2000, MaxActionBytes: 3000}
	want.Sessions.TTL, want.Sessions.ResumeWindow, want.Sessions.ChallengeTTL = time.Hour, 30*time.Minute, 30*time.Second
	want.Chat.MaxMessageChars, want.Chat.ReplyTimeout = 500, 5*time.Second
	want.Security.SigningKey = "0123456789abcdef0123456789abcdef"
	want.EchoAgent = EchoAgentConfig{Enabled: false, Workers: 0, Agent: "echo2"}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestSecretRedacted(t *testing.T) {
	t.Parallel()
	const key = "super-secret-signing-key-0123456789"
	cfg := Default()
	cfg.Security.SigningKey = key
	cfg.NATS.URL = "nats://alice:hunter2@n1:4222, nats://tok3n@n2:4222"

	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
		slog.New(h).Info("config", "config", cfg)
	}
	buf.WriteString(fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.Security))
	out := buf.String()
	for _, secret := range []string{key, "hunter2", "tok3n", "alice"} {
		if strings.Contains(out, secret) {
			t.Errorf("output contains %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "[redacted]") || !strings.Contains(out, "n2:4222") {
		t.Errorf("output lacks redaction marker or host:\n%s", out)
	}
	// Unset key: nothing to redact.
	cfg.Security.SigningKey = ""
	if got := cfg.Security.LogValue().String(); strings.Contains(got, "redacted") {
		t.Errorf("empty key logged as %q", got)
	}
}

func TestWidgetsReplaceDefault(t *testing.T) {
	t.Parallel()
	cfg := load(t, `
widgets:
  - public_key: pk_site
    allowed_origins: ["HTTPS://Example.COM", "http://localhost:*"]
  - public_key: pk_off
    display_title: Paused
    agent: support
    allowed_origins: ["https://example.org:8443"]
    live: false
`, nil)
	if len(cfg.Widgets) != 2 {
		t.Fatalf("widgets = %+v, want exactly the 2 from the file", cfg.Widgets)
	}
	if _, ok := cfg.Widget(DemoWidgetKey); ok {
		t.Error("demo widget still present")
	}
	site, ok := cfg.Widget("pk_site")
	if !ok || site.DisplayTitle != "pk_site" || site.Agent != "echo" || !site.IsLive() ||
		!slices.Equal(site.AllowedOrigins, []string{"https://example.com", "http://localhost:*"}) {
		t.Errorf("pk_site = %+v", site)
	}
	off, ok := cfg.Widget("pk_off")
	if !ok || off.DisplayTitle != "Paused" || off.Agent != "support" || off.IsLive() {
		t.Errorf("pk_off = %+v", off)
	}

	for _, empty := range []string{"widgets: []\n", "widgets:\n"} {
		_, err := LoadWith(writeConfig(t, empty), nil, nil)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "widgets: at least one") {
			t.Errorf("%q: err = %v", empty, err)
		}
	}
}

// yamlPaths lists the dotted YAML path of every leaf of t, with "[]" for
// slice elements.
func yamlPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		p := joinPath(prefix, yamlName(f))
		ft := f.Type
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			out = append(out, yamlPaths(ft.Elem(), p+"[]")...)
		} else if ft.Kind() == reflect.Struct && !isDuration(ft) {
			out = append(out, yamlPaths(ft, p)...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

// hasPath reports whether the decoded YAML v holds the dotted path p.
func hasPath(v any, p string) bool {
	if p == "" {
		return true
	}
	head, rest, _ := strings.Cut(p, ".")
	name, isList := strings.CutSuffix(head, "[]")
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	child, ok := m[name]
	if !ok {
		return false
	}
	if isList {
		items, ok := child.([]any)
		return ok && slices.ContainsFunc(items, func(it any) bool { return hasPath(it, rest) })
	}
	return hasPath(child, rest)
}

func TestExampleFile(t *testing.T) {
	t.Parallel()
	cfg, err := LoadWith("parley.example.yaml", nil, nil)
	if err != nil {
		t.Fatalf("example does not load: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The example shows the defaults, and a second widget for docs and
	// tests.
	want := Default()
	want.Widgets[0].Live = cfg.Widgets[0].Live
	want.Widgets[0].Uploads = cfg.Widgets[0].Uploads
	if len(cfg.Widgets) != 2 || cfg.Widgets[1].Key != "pk_example" || cfg.Widgets[1].IdentitySecret == "" {
		t.Fatalf("example widgets = %+v", cfg.Widgets)
	}
	want.Widgets = append(want.Widgets, cfg.Widgets[1])
	if !reflect.DeepEqual(cfg, want) || !cfg.Widgets[0].IsLive() || !cfg.Widgets[0].AllowsUploads() {
		t.Errorf("example differs from defaults:\n got %+v\nwant %+v", cfg, want)
	}
	// It documents every key.
	data, err := os.ReadFile("parley.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range yamlPaths(reflect.TypeFor[Config](), "") {
		if !hasPath(doc, p) {
			t.Errorf("example lacks key %s", p)
		}
	}
}
