// Package configs defines Parley's single typed configuration and loads it.
//
// A Config is built in layers, each overriding the one before:
//
//  1. Default values (see Default).
//  2. An optional YAML file, decoded strictly: unknown keys are rejected and
//     the error names the key and its line.
//  3. PARLEY_* environment variables: every scalar field is reachable as
//     PARLEY_ followed by its YAML path upper-cased and joined with "_"
//     (PARLEY_LISTEN, PARLEY_NATS_DEDUP_WINDOW, PARLEY_ECHO_AGENT_ENABLED, …).
//  4. Command-line flags, only those explicitly set.
//
// The result is then normalised and checked by Validate, which reports every
// problem at once as "field.path: problem" lines.
package configs

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// Default values that other packages may want to refer to.
const (
	// DefaultAgent is the agent name the echo agent registers as and the
	// agent widgets dispatch to when none is configured.
	DefaultAgent = "echo"
	// DemoWidgetKey is the public key of the built-in demo widget.
	DemoWidgetKey = "pk_demo"
)

// Config is the whole Parley configuration.
type Config struct {
	// Listen is the HTTP listen address (host:port).
	Listen string `yaml:"listen"`
	// PublicURL is the optional external base URL used for links; empty
	// means derive it from Listen.
	PublicURL string `yaml:"public_url"`
	// DataDir is where Parley keeps its state (JetStream storage).
	DataDir string `yaml:"data_dir"`
	// Log configures logging.
	Log LogConfig `yaml:"log"`
	// NATS configures the embedded or external NATS connection.
	NATS NATSConfig `yaml:"nats"`
	// Agents configures agent dispatch.
	Agents AgentsConfig `yaml:"agents"`
	// Sessions configures session lifetimes.
	Sessions SessionsConfig `yaml:"sessions"`
	// Chat configures text chat.
	Chat ChatConfig `yaml:"chat"`
	// Security holds secrets; it redacts itself when printed or logged.
	Security SecurityConfig `yaml:"security"`
	// EchoAgent configures the built-in echo agent worker.
	EchoAgent EchoAgentConfig `yaml:"echo_agent"`
	// Media configures voice (WebRTC).
	Media MediaConfig `yaml:"media"`
	// Limits are the abuse limits of the public API.
	Limits LimitsConfig `yaml:"limits"`
	// LiveKit configures the LiveKit voice transport.
	LiveKit LiveKitConfig `yaml:"livekit"`
	// Ops configures room state and operator views.
	Ops OpsConfig `yaml:"ops"`
	// Retention bounds how long conversations are kept.
	Retention RetentionConfig `yaml:"retention"`
	// Speech configures the speech engines of agents.speech.
	Speech SpeechConfig `yaml:"speech"`
	// Widgets lists the embeddable widgets. A list given in the YAML file
	// replaces the default demo widget.
	Widgets []WidgetConfig `yaml:"widgets"`
}

// LogConfig configures the process logger.
type LogConfig struct {
	// Level is one of debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is one of auto, json, text; auto means text on a TTY and JSON
	// otherwise.
	Format string `yaml:"format"`
}

// NATSConfig configures the NATS connection and JetStream usage. Its String
// and GoString methods redact credentials embedded in URL.
type NATSConfig struct {
	// URL is one or more external NATS URLs, comma separated; empty means
	// start an embedded nats-server.
	URL string `yaml:"url"`
	// Listen is the embedded server's client listen address (host:port);
	// port 0 or -1 picks a random port.
	Listen string `yaml:"listen"`
	// Prefix is the subject prefix, a single NATS token.
	Prefix string `yaml:"prefix"`
	// Replicas is the JetStream stream/KV replica count, 1..5, or
	// ReplicasAuto ("auto"): 3 on a JetStream cluster that can place three,
	// otherwise 1.
	Replicas Replicas `yaml:"replicas"`
	// DedupWindow is the JetStream duplicate window used for
	// client_message_id deduplication, at least MinDedupWindow.
	DedupWindow time.Duration `yaml:"dedup_window"`
	// StartTimeout bounds how long Start retries connecting and setting up
	// streams while NATS or JetStream is unavailable or recovering.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// Sync is the embedded server's store sync policy: SyncInterval (fsync
	// every SyncInterval) or SyncAlways (fsync every write before the ack).
	Sync string `yaml:"sync"`
	// SyncInterval is how often the embedded server fsyncs with Sync
	// "interval".
	SyncInterval time.Duration `yaml:"sync_interval"`
	// MaxConsumers caps the consumers on the conversation stream. No
	// conversation keeps one (live events travel on core NATS); each read
	// of a log (history, a WebSocket catching up, a gap) holds a
	// short-lived one, so this bounds concurrent reads, well above
	// nats-server's own default of 1 000.
	MaxConsumers int `yaml:"max_consumers"`
	// MaxStoreBytes caps the embedded server's JetStream file store; 0
	// keeps nats-server's default (75% of the free disk, at most 1 TB).
	// When the store is full, writes are refused and /readyz fails.
	MaxStoreBytes int64 `yaml:"max_store_bytes"`
	// CredentialsFile is an optional .creds file for an external NATS.
	CredentialsFile string `yaml:"credentials_file"`
	// NkeySeedFile is an optional file holding a user nkey seed ("SU…")
	// for an external NATS.
	NkeySeedFile string `yaml:"nkey_seed_file"`
	// User and Password authenticate to an external NATS (or put them in
	// URL as nats://user:password@host). Password is never logged.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Token is an authentication token for an external NATS (or in URL as
	// nats://token@host). Never logged.
	Token string `yaml:"token"`
	// TLS configures the client side of TLS to an external NATS: a private
	// CA and a client certificate.
	TLS NATSClientTLS `yaml:"tls"`
	// ListenTLS secures the embedded server's client listener.
	ListenTLS NATSListenTLS `yaml:"listen_tls"`
	// AllowInsecureListen lets the embedded server listen on a
	// non-loopback address without TLS.
	AllowInsecureListen bool `yaml:"allow_insecure_listen"`
}

// AgentsConfig configures how sessions are dispatched to agent workers.
type AgentsConfig struct {
	// DispatchTimeout is how long a dispatch request waits for a worker to
	// accept.
	DispatchTimeout time.Duration `yaml:"dispatch_timeout"`
	// DispatchRetryMax is the maximum backoff between dispatch retries.
	DispatchRetryMax time.Duration `yaml:"dispatch_retry_max"`
	// HeartbeatTimeout is how long a worker may go without a heartbeat
	// before it is considered dead.
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout"`
	// AudioFormats maps an agent name to the audio format it speaks and
	// hears: "opus" (default: frames as received from WebRTC, no
	// transcoding) or "pcm_s16le/16000", "pcm_s16le/24000",
	// "pcm_s16le/48000" (the broker decodes and encodes Opus).
	AudioFormats map[string]string `yaml:"audio_formats"`
	// BargeIn maps an agent name to "auto" (the default) or "off": off
	// keeps the visitor's speech from cutting the agent's audio, whatever
	// its widgets say (an agent that handles interruptions itself).
	BargeIn map[string]string `yaml:"barge_in"`
	// Speech maps an agent name to its speech pipeline (AgentSpeech): the
	// broker hears and speaks for an agent that works in text. Default:
	// the demo echo agent's, offline.
	Speech map[string]AgentSpeech `yaml:"speech"`
	// MaxDeltaBytes bounds the text of one text_delta an agent appends.
	MaxDeltaBytes int `yaml:"max_delta_bytes"`
	// MaxReplyBytes bounds the text of an agent's text_done (a whole
	// reply) and of a transcript.
	MaxReplyBytes int `yaml:"max_reply_bytes"`
	// MaxActionBytes bounds the data of an agent's action.
	MaxActionBytes int `yaml:"max_action_bytes"`
}

// SessionsConfig configures session lifetimes.
type SessionsConfig struct {
	// TTL is the session lifetime.
	TTL time.Duration `yaml:"ttl"`
	// ResumeWindow is how long a resume token stays valid.
	ResumeWindow time.Duration `yaml:"resume_window"`
	// ChallengeTTL is how long a session challenge stays valid (10s..1h).
	ChallengeTTL time.Duration `yaml:"challenge_ttl"`
	// IdleTimeout ends a session (reason "idle") that has had no leg (no
	// WebSocket, voice leg or HTTP request) and no event in its
	// conversation for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// SweepInterval is how often each broker looks for idle and expired
	// sessions.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// RecordGrace keeps a session record this long past its TTL (so an
	// ended session answers SESSION_ENDED, not SESSION_NOT_FOUND); the
	// sessions bucket drops a record ttl + record_grace after its last
	// change.
	RecordGrace time.Duration `yaml:"record_grace"`
}

// ChatConfig configures text chat.
type ChatConfig struct {
	// MaxMessageChars is the maximum message length in characters (runes),
	// 1..100000.
	MaxMessageChars int `yaml:"max_message_chars"`
	// ReplyTimeout bounds how long POST messages with wait=true waits for
	// the agent's reply.
	ReplyTimeout time.Duration `yaml:"reply_timeout"`
	// PingIdle is how long a chat WebSocket may be silent before the
	// server pings it; PingTimeout is how long the ping may go unanswered
	// before the socket is closed as dead (defaults 20 s and 25 s: a dead
	// socket is dropped after 45 s, as Galène does).
	PingIdle    time.Duration `yaml:"ping_idle"`
	PingTimeout time.Duration `yaml:"ping_timeout"`
}

// SecurityConfig holds secrets. Its String, GoString and LogValue methods
// redact the signing key, so printing or logging it never reveals it.
type SecurityConfig struct {
	// SigningKey is an optional HMAC key of at least 32 bytes; empty means
	// a key is generated and kept in JetStream KV.
	SigningKey string `yaml:"signing_key"`
	// TrustedProxies are the IPs/CIDRs of reverse proxies whose
	// X-Forwarded-For is believed; from anyone else it is ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// BootstrapTokenTTL is the lifetime of tokens from POST /v1/tokens.
	BootstrapTokenTTL time.Duration `yaml:"bootstrap_token_ttl"`
	// UserTokenTTL is the lifetime of tokens from POST /v1/user-tokens.
	UserTokenTTL time.Duration `yaml:"user_token_ttl"`
	// ClockSkew is how far in the future a visitor JWT's iat may be.
	ClockSkew time.Duration `yaml:"clock_skew"`
}

// EchoAgentConfig configures the in-process echo agent worker.
type EchoAgentConfig struct {
	// Enabled runs the echo agent worker in-process.
	Enabled bool `yaml:"enabled"`
	// Workers is the number of echo workers, 0..64.
	Workers int `yaml:"workers"`
	// Agent is the agent name the echo worker registers as.
	Agent string `yaml:"agent"`
	// Assistant, when its base URL is set, makes the in-process agent
	// answer with an OpenAI-compatible chat model (what `parley agent
	// assistant` runs) instead of echoing: the demo becomes a real
	// assistant in chat and voice.
	Assistant AssistantConfig `yaml:"assistant"`
}

// AssistantConfig points the in-process agent at an OpenAI-compatible
// chat-completions endpoint. The key is never in the configuration:
// api_key_file, or PARLEY_ASSISTANT_API_KEY / OPENAI_API_KEY.
type AssistantConfig struct {
	// BaseURL is the API root, e.g. https://api.openai.com/v1 or a local
	// server's http://127.0.0.1:11434/v1; empty: the echo agent.
	BaseURL string `yaml:"base_url"`
	// Model is the model name (empty: gpt-4o-mini).
	Model string `yaml:"model"`
	// APIKeyFile holds the key.
	APIKeyFile string `yaml:"api_key_file"`
	// System is the system prompt (empty: a short-answers website
	// assistant whose replies may be spoken).
	System string `yaml:"system"`
}

// Default returns a Config holding every default value, including the demo
// widget. Each call returns fresh slices, so callers may modify the result.
func Default() Config {
	return Config{
		Listen:  "127.0.0.1:8080",
		DataDir: "./parley-data",
		Log:     LogConfig{Level: "info", Format: "auto"},
		NATS: NATSConfig{
			Listen:       "127.0.0.1:4222",
			Prefix:       "parley",
			Replicas:     ReplicasAuto,
			DedupWindow:  2 * time.Minute,
			StartTimeout: 2 * time.Minute,
			Sync:         SyncInterval,
			SyncInterval: 2 * time.Minute,
			MaxConsumers: 100_000,
		},
		Agents: AgentsConfig{
			DispatchTimeout:  2 * time.Second,
			DispatchRetryMax: 5 * time.Second,
			HeartbeatTimeout: 1500 * time.Millisecond,
			AudioFormats:     map[string]string{},
			// The demo echo agent plays the visitor's audio back while they
			// speak: a barge-in would cut the echo after barge_in_min_ms.
			BargeIn:        map[string]string{DefaultAgent: BargeInOff},
			Speech:         defaultAgentSpeech(),
			MaxDeltaBytes:  agentbridge.DefaultMaxDeltaBytes,
			MaxReplyBytes:  agentbridge.DefaultMaxReplyBytes,
			MaxActionBytes: agentbridge.DefaultMaxActionBytes,
		},
		Sessions: SessionsConfig{
			TTL:           24 * time.Hour,
			ResumeWindow:  24 * time.Hour,
			ChallengeTTL:  2 * time.Minute,
			IdleTimeout:   time.Minute,
			SweepInterval: 15 * time.Second,
			RecordGrace:   time.Hour,
		},
		Chat: ChatConfig{
			MaxMessageChars: 4000,
			ReplyTimeout:    60 * time.Second,
			PingIdle:        20 * time.Second,
			PingTimeout:     25 * time.Second,
		},
		EchoAgent: EchoAgentConfig{Enabled: true, Workers: 1, Agent: DefaultAgent},
		Media:     defaultMedia(),
		Limits:    defaultLimits(),
		LiveKit:   LiveKitConfig{TokenTTL: 10 * time.Minute, RoomPrefix: "parley-", EmptyTimeout: 5 * time.Minute},
		Ops:       OpsConfig{RoomUpdateInterval: 250 * time.Millisecond, RecentEvents: 50},
		Security: SecurityConfig{TrustedProxies: []string{}, BootstrapTokenTTL: 10 * time.Minute,
			UserTokenTTL: 5 * time.Minute, ClockSkew: 30 * time.Second},
		Widgets:   []WidgetConfig{demoWidget()},
		Retention: defaultRetention(),
		Speech:    SpeechConfig{Enabled: true, Timeout: DefaultSpeechTimeout},
	}
}

// demoWidget is the built-in widget of `parley serve`: chat and voice with
// the echo agent, embeddable from localhost and 127.0.0.1 on any port.
func demoWidget() WidgetConfig {
	w := WidgetConfig{
		Key:             DemoWidgetKey,
		DisplayTitle:    "Parley demo",
		LauncherLabel:   "Talk to us",
		WelcomeText:     "Hi! Type a message and the echo agent will answer.",
		Agent:           DefaultAgent,
		AllowDevOrigins: true,
	}
	w.Normalize()
	return w
}

// Widget returns the widget with the given public key, if configured.
func (c Config) Widget(key string) (WidgetConfig, bool) {
	for _, w := range c.Widgets {
		if w.Key == key {
			return w, true
		}
	}
	return WidgetConfig{}, false
}

const redacted = "[redacted]"

// redactedKey returns what may be shown in place of the signing key.
func (s SecurityConfig) redactedKey() string {
	if s.SigningKey == "" {
		return ""
	}
	return redacted
}

// String implements fmt.Stringer without revealing the signing key.
func (s SecurityConfig) String() string {
	return fmt.Sprintf("{SigningKey:%s}", s.redactedKey())
}

// GoString implements fmt.GoStringer without revealing the signing key.
func (s SecurityConfig) GoString() string {
	return fmt.Sprintf("configs.SecurityConfig{SigningKey:%q}", s.redactedKey())
}

// LogValue implements slog.LogValuer without revealing the signing key.
func (s SecurityConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("signing_key", s.redactedKey()))
}

// plainNATS is NATSConfig without its methods, for formatting.
type plainNATS NATSConfig

// redactedNATS returns n with credentials in URL redacted.
func (n NATSConfig) redactedNATS() plainNATS {
	n.URL = redactNATSURL(n.URL)
	n.Password, n.Token = redactIfSet(n.Password), redactIfSet(n.Token)
	return plainNATS(n)
}

// String implements fmt.Stringer without revealing credentials embedded in
// URL.
func (n NATSConfig) String() string {
	return fmt.Sprintf("%+v", n.redactedNATS())
}

// GoString implements fmt.GoStringer without revealing credentials embedded
// in URL.
func (n NATSConfig) GoString() string {
	s := fmt.Sprintf("%#v", n.redactedNATS())
	return "configs.NATSConfig" + strings.TrimPrefix(s, "configs.plainNATS")
}

// LogValue implements slog.LogValuer. It logs every setting under its YAML
// name and replaces Security.SigningKey with "[redacted]" when it is set.
func (c Config) LogValue() slog.Value {
	widgets := make([]slog.Attr, 0, len(c.Widgets))
	for i, w := range c.Widgets {
		widgets = append(widgets, slog.Group(fmt.Sprint(i),
			slog.String("key", w.Key),
			slog.String("id", w.ID),
			slog.String("display_title", w.DisplayTitle),
			slog.String("identity_secret", redactIfSet(w.IdentitySecret)),
			slog.String("agent", w.Agent),
			slog.Any("allowed_origins", w.AllowedOrigins),
			slog.Bool("live", w.IsLive()),
		))
	}
	return slog.GroupValue(
		slog.String("listen", c.Listen),
		slog.String("public_url", c.PublicURL),
		slog.String("data_dir", c.DataDir),
		slog.Group("log",
			slog.String("level", c.Log.Level),
			slog.String("format", c.Log.Format)),
		slog.Group("nats",
			slog.String("url", redactNATSURL(c.NATS.URL)),
			slog.String("listen", c.NATS.Listen),
			slog.String("prefix", c.NATS.Prefix),
			slog.String("replicas", c.NATS.Replicas.String()),
			logDuration("dedup_window", c.NATS.DedupWindow),
			logDuration("start_timeout", c.NATS.StartTimeout),
			slog.String("sync", c.NATS.Sync),
			logDuration("sync_interval", c.NATS.SyncInterval),
			slog.Int("max_consumers", c.NATS.MaxConsumers),
			slog.Int64("max_store_bytes", c.NATS.MaxStoreBytes),
			slog.String("credentials_file", c.NATS.CredentialsFile),
			slog.Attr{Key: "auth", Value: c.NATS.authLogValue()}),
		slog.Group("agents",
			logDuration("dispatch_timeout", c.Agents.DispatchTimeout),
			logDuration("dispatch_retry_max", c.Agents.DispatchRetryMax),
			logDuration("heartbeat_timeout", c.Agents.HeartbeatTimeout),
			slog.Any("audio_formats", c.Agents.AudioFormats),
			slog.Any("barge_in", c.Agents.BargeIn),
			slog.Any("speech", c.Agents.Speech),
			slog.Int("max_delta_bytes", c.Agents.MaxDeltaBytes),
			slog.Int("max_reply_bytes", c.Agents.MaxReplyBytes),
			slog.Int("max_action_bytes", c.Agents.MaxActionBytes)),
		slog.Group("sessions",
			logDuration("ttl", c.Sessions.TTL),
			logDuration("resume_window", c.Sessions.ResumeWindow),
			logDuration("challenge_ttl", c.Sessions.ChallengeTTL),
			logDuration("idle_timeout", c.Sessions.IdleTimeout),
			logDuration("sweep_interval", c.Sessions.SweepInterval),
			logDuration("record_grace", c.Sessions.RecordGrace)),
		slog.Group("chat",
			slog.Int("max_message_chars", c.Chat.MaxMessageChars),
			logDuration("reply_timeout", c.Chat.ReplyTimeout),
			logDuration("ping_idle", c.Chat.PingIdle),
			logDuration("ping_timeout", c.Chat.PingTimeout)),
		slog.Group("security",
			slog.String("signing_key", c.Security.redactedKey()),
			slog.Any("trusted_proxies", c.Security.TrustedProxies),
			logDuration("bootstrap_token_ttl", c.Security.BootstrapTokenTTL),
			logDuration("user_token_ttl", c.Security.UserTokenTTL),
			logDuration("clock_skew", c.Security.ClockSkew)),
		slog.Attr{Key: "limits", Value: c.Limits.logValue()},
		slog.Any("livekit", c.LiveKit),
		slog.Group("ops",
			logDuration("room_update_interval", c.Ops.RoomUpdateInterval),
			slog.Int("recent_events", c.Ops.RecentEvents), slog.String("metrics_listen", c.Ops.MetricsListen), slog.Bool("pprof", c.Ops.Pprof)),
		slog.Group("retention",
			logDuration("conversation_max_age", c.Retention.ConversationMaxAge),
			logDuration("log_max_age", c.Retention.LogMaxAge),
			slog.Int64("uploads_max_bytes", c.Retention.UploadsMaxBytes),
			logDuration("sweep_interval", c.Retention.SweepInterval)),
		slog.Group("echo_agent",
			slog.Bool("enabled", c.EchoAgent.Enabled),
			slog.Int("workers", c.EchoAgent.Workers),
			slog.String("agent", c.EchoAgent.Agent),
			slog.String("assistant_base_url", c.EchoAgent.Assistant.BaseURL),
			slog.String("assistant_model", c.EchoAgent.Assistant.Model),
			slog.Bool("assistant_api_key_file", c.EchoAgent.Assistant.APIKeyFile != "")),
		slog.Attr{Key: "media", Value: c.Media.logValue()},
		slog.Attr{Key: "speech", Value: c.Speech.logValue()},
		slog.Attr{Key: "widgets", Value: slog.GroupValue(widgets...)},
	)
}
