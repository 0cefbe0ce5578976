package configs

import (
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// LiveKitConfig connects Parley to a LiveKit SFU (cluster): Parley issues
// participant tokens to the widget and joins rooms itself to bridge audio
// to and from agents over NATS.
type LiveKitConfig struct {
	// URL is the LiveKit server's WebSocket URL (ws:// or wss://); empty
	// disables the LiveKit transport.
	URL string `yaml:"url"`
	// APIKey and APISecret are the LiveKit API credentials. The secret
	// signs tokens and webhooks: never logged, never sent to a browser.
	APIKey    string `yaml:"api_key"`
	APISecret string `yaml:"api_secret"`
	// TokenTTL is the lifetime of visitor participant tokens (LiveKit's
	// own default of 6 h is too long for a public page).
	TokenTTL time.Duration `yaml:"token_ttl"`
	// RoomPrefix starts every room name Parley creates.
	RoomPrefix string `yaml:"room_prefix"`
	// EmptyTimeout closes a room this long after its last participant left.
	EmptyTimeout time.Duration `yaml:"empty_timeout"`
}

// Enabled reports whether a LiveKit server is configured.
func (l LiveKitConfig) Enabled() bool { return l.URL != "" }

// String implements fmt.Stringer without revealing the secret.
func (l LiveKitConfig) String() string {
	return fmt.Sprintf("{URL:%s APIKey:%s APISecret:%s TokenTTL:%s RoomPrefix:%s EmptyTimeout:%s}",
		l.URL, l.APIKey, redactIfSet(l.APISecret), l.TokenTTL, l.RoomPrefix, l.EmptyTimeout)
}

// GoString implements fmt.GoStringer without revealing the secret.
func (l LiveKitConfig) GoString() string { return "configs.LiveKitConfig" + l.String() }

// LogValue implements slog.LogValuer without revealing the secret.
func (l LiveKitConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", l.URL), slog.String("api_key", l.APIKey),
		slog.String("api_secret", redactIfSet(l.APISecret)), logDuration("token_ttl", l.TokenTTL),
		slog.String("room_prefix", l.RoomPrefix), logDuration("empty_timeout", l.EmptyTimeout))
}

func (l *LiveKitConfig) validate(ps *problems) {
	if l.URL != "" {
		u, err := url.Parse(l.URL)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.add("livekit.url", "must be a ws://, wss://, http:// or https:// URL, got %q", l.URL)
		}
		if l.APIKey == "" {
			ps.add("livekit.api_key", "is required with livekit.url")
		}
		if len(l.APISecret) < 8 {
			ps.add("livekit.api_secret", "is required with livekit.url (at least 8 characters)")
		}
	}
	if d := l.TokenTTL; d < time.Minute || d > 24*time.Hour {
		ps.add("livekit.token_ttl", "must be between 1m and 24h, got %s", d)
	}
	if l.RoomPrefix != "" && !isToken(l.RoomPrefix) {
		ps.add("livekit.room_prefix", "must be letters, digits, '_' or '-', got %q", l.RoomPrefix)
	}
	ps.positive("livekit.empty_timeout", l.EmptyTimeout)
}

// OpsConfig configures room state for operators.
type OpsConfig struct {
	// RoomUpdateInterval coalesces room state updates: at most one per
	// room per interval (never on the media path).
	RoomUpdateInterval time.Duration `yaml:"room_update_interval"`
	// RecentEvents is how many recent conversation events a room's detail
	// shows.
	RecentEvents int `yaml:"recent_events"`
	// MetricsListen is a second address (host:port) that serves only
	// /metrics, without a key, for a Prometheus on the same host or an
	// internal network: bind it to loopback or such a network, never a
	// public address. Empty: no second listener. On the main address
	// /metrics always needs an admin key of every tenant with ops:read,
	// since it names every tenant's agents and traffic.
	MetricsListen string `yaml:"metrics_listen"`
	// Pprof serves Go's runtime profiles (/debug/pprof/: heap, CPU,
	// goroutines) on the metrics_listen address, for finding where a
	// loaded broker's memory and CPU go (`parley bench chat
	// --server-profile`). Off by default; it needs metrics_listen, and is
	// never served on the main address.
	Pprof bool `yaml:"pprof"`
}

func (o *OpsConfig) validate(ps *problems) {
	if d := o.RoomUpdateInterval; d < 10*time.Millisecond || d > time.Minute {
		ps.add("ops.room_update_interval", "must be between 10ms and 1m, got %s", d)
	}
	ps.intRange("ops.recent_events", o.RecentEvents, 0, 1000)
	if o.MetricsListen != "" {
		ps.hostPort("ops.metrics_listen", o.MetricsListen, 0)
	}
	if o.Pprof && o.MetricsListen == "" {
		ps.add("ops.pprof", "needs ops.metrics_listen: profiles are served on that address only")
	}
}
