package configs

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestValidateRules(t *testing.T) {
	t.Parallel()
	widget := func(c *Config) *WidgetConfig { return &c.Widgets[0] }
	origins := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "https://example.com:" + strconv.Itoa(i+1)
		}
		return out
	}
	tests := []problemCase[Config]{
		{"listen no port", func(c *Config) { c.Listen = "localhost" }, "listen"},
		{"listen named port", func(c *Config) { c.Listen = "localhost:http" }, "listen"},
		{"listen port range", func(c *Config) { c.Listen = "127.0.0.1:70000" }, "listen"},
		{"listen random port is not -1", func(c *Config) { c.Listen = "127.0.0.1:-1" }, "listen"},
		{"public url scheme", func(c *Config) { c.PublicURL = "ftp://example.com" }, "public_url"},
		{"public url relative", func(c *Config) { c.PublicURL = "example.com" }, "public_url"},
		{"public url query", func(c *Config) { c.PublicURL = "https://example.com/?a=1" }, "public_url"},
		{"public url userinfo", func(c *Config) { c.PublicURL = "https://u:p@example.com" }, "public_url"},
		{"data dir empty", func(c *Config) { c.DataDir = " " }, "data_dir"},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, "log.level"},
		{"agent delta limit zero", func(c *Config) { c.Agents.MaxDeltaBytes = 0 }, "agents.max_delta_bytes"},
		{"agent reply limit too big", func(c *Config) { c.Agents.MaxReplyBytes = 1 << 20 }, "agents.max_reply_bytes"},
		{"agent action limit negative", func(c *Config) { c.Agents.MaxActionBytes = -1 }, "agents.max_action_bytes"},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"nats listen", func(c *Config) { c.NATS.Listen = "4222" }, "nats.listen"},
		{"nats listen port", func(c *Config) { c.NATS.Listen = "127.0.0.1:-2" }, "nats.listen"},
		{"nats url empty entry", func(c *Config) { c.NATS.URL = "nats://a:4222," }, "nats.url"},
		{"nats url scheme", func(c *Config) { c.NATS.URL = "http://a:4222" }, "nats.url"},
		{"nats url no host", func(c *Config) { c.NATS.URL = "nats://:4222" }, "nats.url"},
		{"nats credentials without url", func(c *Config) { c.NATS.CredentialsFile = "x.creds" }, "nats.credentials_file"},
		{"nats prefix dot", func(c *Config) { c.NATS.Prefix = "a.b" }, "nats.prefix"},
		{"nats prefix wildcard", func(c *Config) { c.NATS.Prefix = "a>" }, "nats.prefix"},
		{"nats prefix empty", func(c *Config) { c.NATS.Prefix = "" }, "nats.prefix"},
		{"nats replicas low", func(c *Config) { c.NATS.Replicas = -1 }, "nats.replicas"},
		{"nats replicas above 1 on the embedded server", func(c *Config) { c.NATS.Replicas = 3 }, "nats.replicas"},
		{"nats dedup window below a minute", func(c *Config) { c.NATS.DedupWindow = 59 * time.Second }, "nats.dedup_window"},
		{"nats start timeout", func(c *Config) { c.NATS.StartTimeout = 0 }, "nats.start_timeout"},
		{"nats sync", func(c *Config) { c.NATS.Sync = "sometimes" }, "nats.sync"},
		{"nats sync always with an external server", func(c *Config) { c.NATS.URL = "nats://n1:4222"; c.NATS.Sync = SyncAlways }, "nats.sync"},
		{"nats sync interval", func(c *Config) { c.NATS.SyncInterval = time.Millisecond }, "nats.sync_interval"},
		{"nats replicas high", func(c *Config) { c.NATS.Replicas = 6 }, "nats.replicas"},
		{"nats dedup window", func(c *Config) { c.NATS.DedupWindow = 999 * time.Millisecond }, "nats.dedup_window"},
		{"nats max consumers unset", func(c *Config) { c.NATS.MaxConsumers = 0 }, "nats.max_consumers"},
		{"nats max consumers low", func(c *Config) { c.NATS.MaxConsumers = 9 }, "nats.max_consumers"},
		{"nats max store tiny", func(c *Config) { c.NATS.MaxStoreBytes = 1000 }, "nats.max_store_bytes"},
		{"nats max store negative", func(c *Config) { c.NATS.MaxStoreBytes = -1 }, "nats.max_store_bytes"},
		{"nats max store with external nats", func(c *Config) { c.NATS.URL = "nats://a:4222"; c.NATS.MaxStoreBytes = 1 << 30 }, "nats.max_store_bytes"},
		{"dispatch timeout", func(c *Config) { c.Agents.DispatchTimeout = 0 }, "agents.dispatch_timeout"},
		{"dispatch retry max", func(c *Config) { c.Agents.DispatchRetryMax = -time.Second }, "agents.dispatch_retry_max"},
		{"heartbeat timeout", func(c *Config) { c.Agents.HeartbeatTimeout = 0 }, "agents.heartbeat_timeout"},
		{"session ttl", func(c *Config) { c.Sessions.TTL = 0 }, "sessions.ttl"},
		{"resume window", func(c *Config) { c.Sessions.ResumeWindow = -1 }, "sessions.resume_window"},
		{"challenge ttl low", func(c *Config) { c.Sessions.ChallengeTTL = 9 * time.Second }, "sessions.challenge_ttl"},
		{"challenge ttl high", func(c *Config) { c.Sessions.ChallengeTTL = time.Hour + 1 }, "sessions.challenge_ttl"},
		{"max message chars low", func(c *Config) { c.Chat.MaxMessageChars = 0 }, "chat.max_message_chars"},
		{"max message chars high", func(c *Config) { c.Chat.MaxMessageChars = 100001 }, "chat.max_message_chars"},
		{"reply timeout", func(c *Config) { c.Chat.ReplyTimeout = 0 }, "chat.reply_timeout"},
		{"signing key short", func(c *Config) { c.Security.SigningKey = strings.Repeat("s", 31) }, "security.signing_key"},
		{"audio format", func(c *Config) { c.Agents.AudioFormats = map[string]string{"a": "pcm_s16le/8000"} }, "agents.audio_formats.a"},
		{"audio format codec", func(c *Config) { c.Agents.AudioFormats = map[string]string{"a": "mp3"} }, "agents.audio_formats.a"},
		{"audio format agent name", func(c *Config) { c.Agents.AudioFormats = map[string]string{"a.b": "opus"} }, "agents.audio_formats key"},
		{"media udp port", func(c *Config) { c.Media.UDPPort = 70000 }, "media.udp_port"},
		{"media port range half", func(c *Config) { c.Media.PortMin = 10000 }, "media.port_min"},
		{"media port range order", func(c *Config) { c.Media.PortMin, c.Media.PortMax = 20000, 10000 }, "media.port_min"},
		{"media nat ip", func(c *Config) { c.Media.NAT1To1IPs = []string{"example.com"} }, "media.nat_1to1_ips[0]"},
		{"media stun url", func(c *Config) { c.Media.STUNURLs = []string{"http://stun.example.com"} }, "media.stun_urls[0]"},
		{"media turn url", func(c *Config) {
			c.Media.TURN.URLs = []string{"stun:x:3478"}
			c.Media.TURN.Secret = strings.Repeat("s", 16)
		}, "media.turn.urls[0]"},
		{"media turn secret", func(c *Config) { c.Media.TURN.URLs = []string{"turn:turn.example.com:3478"} }, "media.turn.secret"},
		{"media turn ttl", func(c *Config) { c.Media.TURN.CredentialTTL = 0 }, "media.turn.credential_ttl"},
		{"media jitter low", func(c *Config) { c.Media.JitterWindow = 5 * time.Millisecond }, "media.jitter_window"},
		{"media jitter high", func(c *Config) { c.Media.JitterWindow = time.Second }, "media.jitter_window"},
		{"media silence", func(c *Config) { c.Media.SilenceTimeout = 0 }, "media.silence_timeout"},
		{"media failed before disconnected", func(c *Config) { c.Media.FailedTimeout = time.Second }, "media.failed_timeout"},
		{"media playout queue", func(c *Config) { c.Media.PlayoutQueueFrames = 1 }, "media.playout_queue_frames"},
		{"limit per ip", func(c *Config) { c.Limits.Resolve.PerIP = "sixty" }, "limits.resolve.per_ip"},
		{"limit per widget", func(c *Config) { c.Limits.Uploads.PerWidget = "5/forever" }, "limits.uploads.per_widget"},
		{"upload size", func(c *Config) { c.Limits.MaxUploadBytes = 10 }, "limits.max_upload_bytes"},
		{"trusted proxies", func(c *Config) { c.Security.TrustedProxies = []string{"proxy.local"} }, "security.trusted_proxies"},
		{"bootstrap ttl", func(c *Config) { c.Security.BootstrapTokenTTL = 0 }, "security.bootstrap_token_ttl"},
		{"user token ttl", func(c *Config) { c.Security.UserTokenTTL = 0 }, "security.user_token_ttl"},
		{"clock skew", func(c *Config) { c.Security.ClockSkew = time.Hour }, "security.clock_skew"},
		{"livekit url", func(c *Config) {
			c.LiveKit = LiveKitConfig{URL: "ftp://x", APIKey: "k", APISecret: "secret-123", TokenTTL: time.Hour, EmptyTimeout: time.Minute}
		}, "livekit.url"},
		{"livekit key", func(c *Config) { c.LiveKit.URL, c.LiveKit.APISecret = "ws://127.0.0.1:7880", "secret-123" }, "livekit.api_key"},
		{"livekit secret", func(c *Config) { c.LiveKit.URL, c.LiveKit.APIKey = "ws://127.0.0.1:7880", "devkey" }, "livekit.api_secret"},
		{"livekit ttl", func(c *Config) { c.LiveKit.TokenTTL = 48 * time.Hour }, "livekit.token_ttl"},
		{"livekit prefix", func(c *Config) { c.LiveKit.RoomPrefix = "a b" }, "livekit.room_prefix"},
		{"ops interval", func(c *Config) { c.Ops.RoomUpdateInterval = time.Hour }, "ops.room_update_interval"},
		{"ops recent", func(c *Config) { c.Ops.RecentEvents = -1 }, "ops.recent_events"},
		{"voice transport", func(c *Config) { widget(c).VoiceTransport = "sip" }, "widgets[0].voice_transport"},
		{"echo workers low", func(c *Config) { c.EchoAgent.Workers = -1 }, "echo_agent.workers"},
		{"echo workers high", func(c *Config) { c.EchoAgent.Workers = 65 }, "echo_agent.workers"},
		{"echo agent name", func(c *Config) { c.EchoAgent.Agent = "echo.v2" }, "echo_agent.agent"},
		{"no widgets", func(c *Config) { c.Widgets = nil }, "widgets"},
		{"widget key prefix", func(c *Config) { widget(c).Key = "demo" }, "widgets[0].public_key"},
		{"widget key short", func(c *Config) { widget(c).Key = "pk_" }, "widgets[0].public_key"},
		{"widget key long", func(c *Config) { widget(c).Key = "pk_" + strings.Repeat("a", 62) }, "widgets[0].public_key"},
		{"widget key chars", func(c *Config) { widget(c).Key = "pk_a.b" }, "widgets[0].public_key"},
		{"widget key duplicate", func(c *Config) {
			c.Widgets = append(c.Widgets, c.Widgets[0])
		}, "widgets[1].public_key"},
		{"widget title empty", func(c *Config) { widget(c).DisplayTitle = "" }, "widgets[0].display_title"},
		{"widget title long", func(c *Config) { widget(c).DisplayTitle = strings.Repeat("é", 81) }, "widgets[0].display_title"},
		{"welcome text long", func(c *Config) { widget(c).WelcomeText = strings.Repeat("ü", 121) }, "widgets[0].welcome_text"},
		{"widget agent", func(c *Config) { widget(c).Agent = "" }, "widgets[0].agent"},
		{"widget agent chars", func(c *Config) { widget(c).Agent = "a*" }, "widgets[0].agent"},
		{"no origins", func(c *Config) { widget(c).AllowedOrigins, widget(c).AllowDevOrigins = nil, false }, "widgets[0].allowed_origins"},
		{"too many origins", func(c *Config) { widget(c).AllowedOrigins = origins(51) }, "widgets[0].allowed_origins"},
		{"bad origin", func(c *Config) {
			widget(c).AllowedOrigins = []string{"https://ok.example", "https://example.com/path"}
		}, "widgets[0].allowed_origins[1]"},
	}
	runProblemCases(t, tests, wantOneProblem)
}

// problemCase is a row of a validation table: edit breaks one thing of a
// valid T, and field names the problem that must follow.
type problemCase[T any] struct {
	name  string
	edit  func(*T)
	field string
}

// runProblemCases runs each case as a parallel subtest that checks it with
// want (wantOneProblem, wantOneWidgetProblem, or a table's own check).
func runProblemCases[T any](t *testing.T, cases []problemCase[T], want func(t *testing.T, edit func(*T), field string)) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want(t, tc.edit, tc.field)
		})
	}
}

// wantOneProblem fails t unless the default configuration, as edit leaves
// it, fails Validate with ErrInvalid and exactly one problem, on field,
// which the message names on a line of its own.
func wantOneProblem(t *testing.T, edit func(*Config), field string) {
	t.Helper()
	c := Default()
	edit(&c)
	err := c.Validate()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate() = %v, want ErrInvalid", err)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate() = %T, want *ValidationError", err)
	}
	if len(ve.Problems) != 1 || ve.Problems[0].Field != field {
		t.Errorf("problems = %+v, want exactly one for %s", ve.Problems, field)
	}
	if !strings.Contains(err.Error(), "\n  "+field+": ") {
		t.Errorf("message %q lacks a %q line", err, field+": ")
	}
}

func TestValidateBoundariesAccepted(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Listen = ":0"
	c.PublicURL = "https://chat.example.com/parley"
	c.NATS.Listen = "127.0.0.1:-1"
	c.NATS.Replicas = 1
	c.NATS.DedupWindow = time.Minute
	c.NATS.Sync = SyncAlways
	c.Sessions.ChallengeTTL = 10 * time.Second
	c.Chat.MaxMessageChars = 100000
	c.Security.SigningKey = strings.Repeat("k", 32)
	c.EchoAgent.Workers = 0
	c.Agents.MaxDeltaBytes, c.Agents.MaxReplyBytes, c.Agents.MaxActionBytes = 1, 128<<10, 128<<10
	c.Widgets[0].Key = "pk_" + strings.Repeat("A", 61)
	c.Widgets[0].DisplayTitle = strings.Repeat("é", 80)
	c.Widgets[0].WelcomeText = strings.Repeat("ü", 120)
	c.Widgets[0].AllowedOrigins = make([]string, 50)
	for i := range c.Widgets[0].AllowedOrigins {
		c.Widgets[0].AllowedOrigins[i] = "https://example.com:" + strconv.Itoa(i+1)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("boundary values rejected: %v", err)
	}
	// With an external NATS the embedded listen address is not checked.
	c.NATS.URL = "nats://n1:4222, tls://n2, n3:4222"
	c.NATS.Listen = "garbage"
	c.NATS.CredentialsFile = writeFile(t, "nats.creds")
	c.NATS.Replicas = 5
	c.NATS.Sync = SyncInterval
	if err := c.Validate(); err != nil {
		t.Fatalf("external NATS config rejected: %v", err)
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Listen = "nope"
	c.NATS.Replicas = -1
	c.Security.SigningKey = "tiny-secret"
	c.Widgets[0].AllowedOrigins = []string{"ftp://x"}
	err := c.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 4 {
		t.Fatalf("Validate() = %v, want 4 problems", err)
	}
	for _, f := range []string{"listen", "nats.replicas", "security.signing_key", "widgets[0].allowed_origins[0]"} {
		if !strings.Contains(err.Error(), f+": ") {
			t.Errorf("message lacks %s:\n%v", f, err)
		}
	}
	if strings.Contains(err.Error(), "tiny-secret") {
		t.Errorf("message reveals the signing key:\n%v", err)
	}
}

func TestOriginPatterns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		origin string
		ok     bool
	}{
		{"http://localhost:*", true},
		{"http://127.0.0.1:*", true},
		{"https://example.com", true},
		{"https://example.com:8443", true},
		{"HTTPS://Example.COM", true},
		{"http://[::1]:3000", true},
		{"http://[::1]:*", true},
		{"https://sub-1.example.co.uk", true},
		{"http://xn--bcher-kva.example", true},

		{"", false},
		{"null", false},
		{"*", false},
		{"example.com", false},
		{"//example.com", false},
		{"ftp://example.com", false},
		{"ws://example.com", false},
		{"javascript:alert(1)", false},
		{"https:example.com", false},
		{"https://", false},
		{"http://:*", false},
		{"http://:8080", false},
		{"https://example.com/", false},
		{"https://example.com/path", false},
		{"https://example.com?x=1", false},
		{"https://example.com?", false},
		{"https://example.com#frag", false},
		{"https://example.com#", false},
		{"https://user@example.com", false},
		{"https://user:pw@example.com", false},
		{"https://*.example.com", false},
		{"https://*", false},
		{"https://example.com:0", false},
		{"https://example.com:65536", false},
		{"https://example.com:", false},
		{"https://example.com:abc", false},
		{"https://example.com:80:*", false},
		{"https://example.com:**", false},
		{"https://exa mple.com", false},
		{" https://example.com", false},
		{"https://ex%61mple.com", false},
		{"https://exa_mple.com", false},
		{"https://example..com", false},
		{"https://.example.com", false},
		{"http://[1.2.3.4]", false},
		{"http://[::1", false},
		{`https://example.com\@evil.com`, false},
	}
	for _, tt := range tests {
		msg := checkOrigin(tt.origin)
		if got := msg == ""; got != tt.ok {
			t.Errorf("checkOrigin(%q) = %q, want ok=%v", tt.origin, msg, tt.ok)
		}
	}
}

func TestMediaSettingsAccepted(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Agents.AudioFormats = map[string]string{"a": "opus", "b": "pcm_s16le/16000", "c": "pcm_s16le/24000/1", "d": "opus/48000/2"}
	c.Media.UDPPort = 3478
	c.Media.NAT1To1IPs = []string{"203.0.113.7", "2001:db8::1"}
	c.Media.STUNURLs = []string{"stun:stun.example.com:3478", "stuns:stun.example.com"}
	c.Media.TURN = TURNConfig{URLs: []string{"turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349?transport=tcp"},
		Secret: strings.Repeat("s", 32), CredentialTTL: time.Hour}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if s := c.Media.TURN.String() + c.Media.TURN.GoString(); strings.Contains(s, c.Media.TURN.Secret) {
		t.Fatalf("TURN secret printed: %s", s)
	}
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Rate{
		"60/1m": {60, time.Minute}, "30/1h": {30, time.Hour}, "5/sec": {5, time.Second}, "10/min": {10, time.Minute},
		"2/hour": {2, time.Hour}, "100/30s": {100, 30 * time.Second}, "0": {}, "": {},
	} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"60", "x/1m", "-1/1m", "60/0s", "60/fortnight", "60/-1m"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
	if r, _ := ParseRate("60/1m"); r.String() != "60/1m0s" || r.Unlimited() {
		t.Errorf("String = %q", r.String())
	}
	ps, err := ParsePrefixes([]string{"10.0.0.0/8", "192.0.2.1", "::1", "fd00::/8"})
	if err != nil || len(ps) != 4 || ps[1].Bits() != 32 {
		t.Errorf("ParsePrefixes = %v, %v", ps, err)
	}
}
