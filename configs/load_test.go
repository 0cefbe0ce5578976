package configs

import (
	"errors"
	"flag"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPrecedence(t *testing.T) {
	t.Parallel()
	const file = "listen: 127.0.0.1:1001\necho_agent: {enabled: false, workers: 2}\n"
	tests := []struct {
		name        string
		file        string
		env         map[string]string
		args        []string
		listen      string
		echo        bool
		echoWorkers int
	}{
		{"defaults", "", nil, nil, "127.0.0.1:8080", true, 1},
		{"file", file, nil, nil, "127.0.0.1:1001", false, 2},
		{"env over file", file, map[string]string{
			"PARLEY_LISTEN": "127.0.0.1:1002", "PARLEY_ECHO_AGENT_ENABLED": "true",
		}, nil, "127.0.0.1:1002", true, 2},
		{"flags over env", file, map[string]string{
			"PARLEY_LISTEN": "127.0.0.1:1002", "PARLEY_ECHO_AGENT_ENABLED": "true", "PARLEY_ECHO_AGENT_WORKERS": "5",
		}, []string{"--listen", "127.0.0.1:1003", "--echo-agent=false"}, "127.0.0.1:1003", false, 5},
		{"unset flags keep env", "", map[string]string{"PARLEY_ECHO_AGENT_WORKERS": "7"},
			[]string{"-echo-workers=8"}, "127.0.0.1:8080", true, 8},
		{"flag equal to default still wins", file, nil, []string{"--listen=127.0.0.1:8080"}, "127.0.0.1:8080", false, 2},
		{"other env ignored", file, map[string]string{"LISTEN": "x", "parley_listen": "y"}, nil, "127.0.0.1:1001", false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := load(t, tt.file, tt.env, tt.args...)
			if cfg.Listen != tt.listen || cfg.EchoAgent.Enabled != tt.echo || cfg.EchoAgent.Workers != tt.echoWorkers {
				t.Errorf("got listen=%q echo=%v workers=%d, want %q %v %d",
					cfg.Listen, cfg.EchoAgent.Enabled, cfg.EchoAgent.Workers, tt.listen, tt.echo, tt.echoWorkers)
			}
		})
	}
}

func TestAllFlags(t *testing.T) {
	t.Parallel()
	cfg := load(t, "", nil,
		"--listen", ":9999", "--data-dir", "/d", "--nats-url", "nats://x:4222",
		"--nats-listen", "0.0.0.0:0", "--log-level", "warn", "--log-format", "text",
		"--public-url", "http://x.test", "--echo-agent=false", "--echo-workers", "3")
	want := Default()
	want.Listen, want.DataDir, want.PublicURL = ":9999", "/d", "http://x.test"
	want.NATS.URL, want.NATS.Listen = "nats://x:4222", "0.0.0.0:0"
	want.Log = LogConfig{Level: "warn", Format: "text"}
	want.EchoAgent.Enabled, want.EchoAgent.Workers = false, 3
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
	usage := FlagUsage()
	for _, name := range []string{"listen", "data-dir", "nats-url", "nats-listen", "log-level",
		"log-format", "public-url", "echo-agent", "echo-workers"} {
		if !strings.Contains(usage, "-"+name) {
			t.Errorf("FlagUsage lacks -%s:\n%s", name, usage)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"config is the caller's", []string{"--config", "x.yaml"}, "config"},
		{"unknown", []string{"--bogus"}, "bogus"},
		{"bad int", []string{"--echo-workers", "many"}, "echo-workers"},
		{"bad bool", []string{"--echo-agent=perhaps"}, "echo-agent"},
		{"positional", []string{"--listen", ":1", "serve"}, "serve"},
		{"help", []string{"-h"}, "help"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadWith("", tt.args, nil)
			if !errors.Is(err, ErrFlag) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrFlag mentioning %q", err, tt.want)
			}
		})
	}
	if _, err := LoadWith("", []string{"--help"}, nil); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: err = %v, want flag.ErrHelp", err)
	}
}

func TestEnvReachesEveryScalar(t *testing.T) {
	t.Parallel()
	var cfg Config
	var names []string
	for _, f := range envFields(&cfg) {
		names = append(names, f.name)
	}
	want := []string{
		"PARLEY_LISTEN", "PARLEY_PUBLIC_URL", "PARLEY_DATA_DIR",
		"PARLEY_LOG_LEVEL", "PARLEY_LOG_FORMAT",
		"PARLEY_NATS_URL", "PARLEY_NATS_LISTEN", "PARLEY_NATS_PREFIX", "PARLEY_NATS_REPLICAS",
		"PARLEY_NATS_DEDUP_WINDOW", "PARLEY_NATS_START_TIMEOUT", "PARLEY_NATS_SYNC", "PARLEY_NATS_SYNC_INTERVAL",
		"PARLEY_NATS_MAX_CONSUMERS", "PARLEY_NATS_MAX_STORE_BYTES", "PARLEY_NATS_CREDENTIALS_FILE",
		"PARLEY_NATS_NKEY_SEED_FILE", "PARLEY_NATS_USER", "PARLEY_NATS_PASSWORD", "PARLEY_NATS_TOKEN",
		"PARLEY_NATS_TLS_CA_FILE", "PARLEY_NATS_TLS_CERT_FILE", "PARLEY_NATS_TLS_KEY_FILE",
		"PARLEY_NATS_LISTEN_TLS_CERT_FILE", "PARLEY_NATS_LISTEN_TLS_KEY_FILE", "PARLEY_NATS_ALLOW_INSECURE_LISTEN",
		"PARLEY_AGENTS_DISPATCH_TIMEOUT", "PARLEY_AGENTS_DISPATCH_RETRY_MAX", "PARLEY_AGENTS_HEARTBEAT_TIMEOUT",
		"PARLEY_AGENTS_MAX_DELTA_BYTES", "PARLEY_AGENTS_MAX_REPLY_BYTES", "PARLEY_AGENTS_MAX_ACTION_BYTES",
		"PARLEY_SESSIONS_TTL", "PARLEY_SESSIONS_RESUME_WINDOW", "PARLEY_SESSIONS_CHALLENGE_TTL",
		"PARLEY_SESSIONS_IDLE_TIMEOUT", "PARLEY_SESSIONS_SWEEP_INTERVAL", "PARLEY_SESSIONS_RECORD_GRACE",
		"PARLEY_CHAT_MAX_MESSAGE_CHARS", "PARLEY_CHAT_REPLY_TIMEOUT", "PARLEY_CHAT_PING_IDLE", "PARLEY_CHAT_PING_TIMEOUT",
		"PARLEY_SECURITY_SIGNING_KEY", "PARLEY_SECURITY_BOOTSTRAP_TOKEN_TTL", "PARLEY_SECURITY_USER_TOKEN_TTL", "PARLEY_SECURITY_CLOCK_SKEW",
		"PARLEY_ECHO_AGENT_ENABLED", "PARLEY_ECHO_AGENT_WORKERS", "PARLEY_ECHO_AGENT_AGENT",
		"PARLEY_ECHO_AGENT_ASSISTANT_BASE_URL", "PARLEY_ECHO_AGENT_ASSISTANT_MODEL", "PARLEY_ECHO_AGENT_ASSISTANT_API_KEY_FILE",
		"PARLEY_ECHO_AGENT_ASSISTANT_SYSTEM",
		"PARLEY_MEDIA_UDP_PORT", "PARLEY_MEDIA_PORT_MIN", "PARLEY_MEDIA_PORT_MAX", "PARLEY_MEDIA_INCLUDE_LOOPBACK",
		"PARLEY_MEDIA_TURN_SECRET", "PARLEY_MEDIA_TURN_CREDENTIAL_TTL", "PARLEY_MEDIA_JITTER_WINDOW",
		"PARLEY_MEDIA_SILENCE_TIMEOUT", "PARLEY_MEDIA_DISCONNECTED_TIMEOUT", "PARLEY_MEDIA_FAILED_TIMEOUT",
		"PARLEY_MEDIA_PLAYOUT_QUEUE_FRAMES",
		"PARLEY_LIMITS_RESOLVE_PER_IP", "PARLEY_LIMITS_RESOLVE_PER_WIDGET", "PARLEY_LIMITS_SESSIONS_PER_IP",
		"PARLEY_LIMITS_SESSIONS_PER_WIDGET", "PARLEY_LIMITS_MESSAGES_PER_IP", "PARLEY_LIMITS_MESSAGES_PER_WIDGET",
		"PARLEY_LIMITS_CAPTURES_PER_IP", "PARLEY_LIMITS_CAPTURES_PER_WIDGET", "PARLEY_LIMITS_UPLOADS_PER_IP",
		"PARLEY_LIMITS_UPLOADS_PER_WIDGET", "PARLEY_LIMITS_MAX_UPLOAD_BYTES", "PARLEY_LIMITS_BODY_TIMEOUT", "PARLEY_LIMITS_UPLOAD_TIMEOUT",
		"PARLEY_LIMITS_PER_SESSION_WEBSOCKETS", "PARLEY_LIMITS_PER_SESSION_MODE_SWITCHES",
		"PARLEY_LIMITS_CONVERSATIONS_PER_WIDGET", "PARLEY_LIMITS_CONVERSATIONS_PER_TENANT", "PARLEY_LIMITS_CONVERSATIONS_FAIR_SHARE_RESERVE",
		"PARLEY_LIVEKIT_URL", "PARLEY_LIVEKIT_API_KEY", "PARLEY_LIVEKIT_API_SECRET", "PARLEY_LIVEKIT_TOKEN_TTL",
		"PARLEY_LIVEKIT_ROOM_PREFIX", "PARLEY_LIVEKIT_EMPTY_TIMEOUT", "PARLEY_OPS_ROOM_UPDATE_INTERVAL", "PARLEY_OPS_RECENT_EVENTS", "PARLEY_OPS_METRICS_LISTEN", "PARLEY_OPS_PPROF",
		"PARLEY_RETENTION_CONVERSATION_MAX_AGE", "PARLEY_RETENTION_LOG_MAX_AGE", "PARLEY_RETENTION_UPLOADS_MAX_BYTES",
		"PARLEY_RETENTION_SWEEP_INTERVAL",
		"PARLEY_SPEECH_ENABLED", "PARLEY_SPEECH_TIMEOUT", "PARLEY_SPEECH_OPENAI_BASE_URL", "PARLEY_SPEECH_OPENAI_API_KEY_FILE",
		"PARLEY_SPEECH_OPENAI_STT_MODEL", "PARLEY_SPEECH_OPENAI_TTS_MODEL", "PARLEY_SPEECH_OPENAI_VOICE",
	}
	if !slices.Equal(names, want) {
		t.Errorf("env names:\n got %v\nwant %v", names, want)
	}

	cfg = load(t, "", map[string]string{
		"PARLEY_NATS_DEDUP_WINDOW":       "30m",
		"PARLEY_AGENTS_DISPATCH_TIMEOUT": " 1500ms ",
		"PARLEY_SECURITY_SIGNING_KEY":    strings.Repeat("k", 32),
		"PARLEY_ECHO_AGENT_ENABLED":      "0",
		"PARLEY_NATS_REPLICAS":           "3",
		"PARLEY_NATS_URL":                "nats://n1:4222",
		"PARLEY_LOG_LEVEL":               "ERROR",
		"PARLEY_PUBLIC_URL":              "",
	})
	if cfg.NATS.DedupWindow != 30*time.Minute || cfg.Agents.DispatchTimeout != 1500*time.Millisecond ||
		cfg.Security.SigningKey != strings.Repeat("k", 32) || cfg.EchoAgent.Enabled ||
		cfg.NATS.Replicas != 3 || cfg.Log.Level != "error" {
		t.Errorf("env not applied: %+v", cfg)
	}
	cfg = load(t, "", map[string]string{"PARLEY_NATS_REPLICAS": "auto", "PARLEY_NATS_SYNC": "always"})
	if cfg.NATS.Replicas != ReplicasAuto || cfg.NATS.Sync != SyncAlways {
		t.Errorf("replicas %v sync %q, want auto always", cfg.NATS.Replicas, cfg.NATS.Sync)
	}
}

func TestBadEnvValue(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, value string }{
		{"PARLEY_NATS_REPLICAS", "many"},
		{"PARLEY_ECHO_AGENT_ENABLED", "maybe"},
		{"PARLEY_NATS_DEDUP_WINDOW", "20"},
		{"PARLEY_CHAT_MAX_MESSAGE_CHARS", ""},
		{"PARLEY_SESSIONS_TTL", "1 day"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadWith("", nil, envMap(map[string]string{tt.name: tt.value}))
			if !errors.Is(err, ErrEnv) || !strings.Contains(err.Error(), tt.name) {
				t.Fatalf("err = %v, want ErrEnv naming %s", err, tt.name)
			}
		})
	}
	// An env value that parses but does not validate is ErrInvalid.
	_, err := LoadWith("", nil, envMap(map[string]string{"PARLEY_NATS_REPLICAS": "9"}))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "nats.replicas") {
		t.Errorf("err = %v, want ErrInvalid naming nats.replicas", err)
	}
}
