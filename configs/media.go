package configs

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MediaConfig configures voice: WebRTC networking, ICE servers handed to
// browsers, and media timers.
type MediaConfig struct {
	// UDPPort, when > 0, carries all voice legs on one UDP port (ICE UDP
	// mux); 0 uses an ephemeral port per leg within port_min..port_max.
	UDPPort int `yaml:"udp_port"`
	// PortMin and PortMax bound the ephemeral ports (0 and 0: any).
	PortMin int `yaml:"port_min"`
	PortMax int `yaml:"port_max"`
	// NAT1To1IPs are public IPs advertised for this host behind a 1:1 NAT.
	NAT1To1IPs []string `yaml:"nat_1to1_ips"`
	// Interfaces limits ICE gathering to these network interfaces.
	Interfaces []string `yaml:"interfaces"`
	// IncludeLoopback gathers loopback candidates (a host whose only
	// interface is lo, and tests).
	IncludeLoopback bool `yaml:"include_loopback"`
	// STUNURLs are STUN servers handed to browsers ("stun:host:port").
	STUNURLs []string `yaml:"stun_urls"`
	// TURN configures a TURN server handed to browsers.
	TURN TURNConfig `yaml:"turn"`
	// JitterWindow is how long a gap in the microphone stream is waited
	// for before the frame counts as lost (10ms..200ms).
	JitterWindow time.Duration `yaml:"jitter_window"`
	// SilenceTimeout ends a voice leg that received no audio for this long;
	// the conversation goes on in chat.
	SilenceTimeout time.Duration `yaml:"silence_timeout"`
	// DisconnectedTimeout and FailedTimeout are the ICE timers.
	DisconnectedTimeout time.Duration `yaml:"disconnected_timeout"`
	FailedTimeout       time.Duration `yaml:"failed_timeout"`
	// PlayoutQueueFrames bounds the agent audio queued for a visitor, in
	// 20 ms frames (a leg's queue grows to it as frames wait).
	PlayoutQueueFrames int `yaml:"playout_queue_frames"`
}

// TURNConfig is a TURN server using the TURN REST API credential scheme
// (coturn's use-auth-secret): each session gets a username
// "<expiry>:<session id>" and a password HMAC-SHA1(secret, username), valid
// for CredentialTTL. The secret never leaves the server.
type TURNConfig struct {
	// URLs are "turn:host:port?transport=udp" / "turns:…" URLs; empty: none.
	URLs []string `yaml:"urls"`
	// Secret is the shared secret configured in the TURN server.
	Secret string `yaml:"secret"`
	// CredentialTTL is how long issued credentials stay valid.
	CredentialTTL time.Duration `yaml:"credential_ttl"`
}

// String implements fmt.Stringer without revealing the secret.
func (t TURNConfig) String() string {
	return fmt.Sprintf("{URLs:%v Secret:%s CredentialTTL:%s}", t.URLs, redactIfSet(t.Secret), t.CredentialTTL)
}

// GoString implements fmt.GoStringer without revealing the secret.
func (t TURNConfig) GoString() string { return "configs.TURNConfig" + t.String() }

// LogValue implements slog.LogValuer without revealing the secret.
func (t TURNConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.Any("urls", t.URLs), slog.String("secret", redactIfSet(t.Secret)),
		logDuration("credential_ttl", t.CredentialTTL))
}

func redactIfSet(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// defaultMedia returns the media defaults.
func defaultMedia() MediaConfig {
	return MediaConfig{
		NAT1To1IPs:          []string{},
		Interfaces:          []string{},
		STUNURLs:            []string{},
		TURN:                TURNConfig{URLs: []string{}, CredentialTTL: time.Hour},
		JitterWindow:        60 * time.Millisecond,
		SilenceTimeout:      30 * time.Second,
		DisconnectedTimeout: 5 * time.Second,
		FailedTimeout:       25 * time.Second,
		PlayoutQueueFrames:  500,
	}
}

// logValue lists the media settings for Config.LogValue.
func (m MediaConfig) logValue() slog.Value {
	return slog.GroupValue(
		slog.Int("udp_port", m.UDPPort), slog.Int("port_min", m.PortMin), slog.Int("port_max", m.PortMax),
		slog.Any("nat_1to1_ips", m.NAT1To1IPs), slog.Any("interfaces", m.Interfaces),
		slog.Bool("include_loopback", m.IncludeLoopback), slog.Any("stun_urls", m.STUNURLs),
		slog.Any("turn", m.TURN), logDuration("jitter_window", m.JitterWindow),
		logDuration("silence_timeout", m.SilenceTimeout),
		logDuration("disconnected_timeout", m.DisconnectedTimeout),
		logDuration("failed_timeout", m.FailedTimeout),
		slog.Int("playout_queue_frames", m.PlayoutQueueFrames))
}

// validate checks the media settings.
func (m *MediaConfig) validate(ps *problems) {
	ps.intRange("media.udp_port", m.UDPPort, 0, 65535)
	ps.intRange("media.port_min", m.PortMin, 0, 65535)
	ps.intRange("media.port_max", m.PortMax, 0, 65535)
	if (m.PortMin == 0) != (m.PortMax == 0) || m.PortMin > m.PortMax {
		ps.add("media.port_min", "port_min and port_max must both be 0 or a range with port_min <= port_max")
	}
	for i, ip := range m.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			ps.add(fmt.Sprintf("media.nat_1to1_ips[%d]", i), "%q is not an IP address", ip)
		}
	}
	for i, u := range m.STUNURLs {
		if !iceURL(u, "stun", "stuns") {
			ps.add(fmt.Sprintf("media.stun_urls[%d]", i), `%q is not a stun: or stuns: URL such as "stun:stun.example.com:3478"`, u)
		}
	}
	for i, u := range m.TURN.URLs {
		if !iceURL(u, "turn", "turns") {
			ps.add(fmt.Sprintf("media.turn.urls[%d]", i), `%q is not a turn: or turns: URL such as "turn:turn.example.com:3478?transport=udp"`, u)
		}
	}
	if len(m.TURN.URLs) > 0 && len(m.TURN.Secret) < 16 {
		ps.add("media.turn.secret", "must be set (at least 16 bytes) when turn.urls are given")
	}
	ps.positive("media.turn.credential_ttl", m.TURN.CredentialTTL)
	if d := m.JitterWindow; d < 10*time.Millisecond || d > 200*time.Millisecond {
		ps.add("media.jitter_window", "must be between 10ms and 200ms, got %s", d)
	}
	ps.positive("media.silence_timeout", m.SilenceTimeout)
	ps.positive("media.disconnected_timeout", m.DisconnectedTimeout)
	if m.FailedTimeout < m.DisconnectedTimeout {
		ps.add("media.failed_timeout", "must be at least disconnected_timeout")
	}
	ps.intRange("media.playout_queue_frames", m.PlayoutQueueFrames, 10, 30000)
}

// iceURL reports whether s is an RFC 7064/7065 URL with one of schemes.
func iceURL(s string, schemes ...string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Opaque == "" {
		return false
	}
	ok := false
	for _, sc := range schemes {
		ok = ok || u.Scheme == sc
	}
	host, port, err := net.SplitHostPort(u.Opaque)
	if err != nil {
		host, port = u.Opaque, ""
	}
	if !ok || host == "" || strings.ContainsAny(host, "/@ ") {
		return false
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	return true
}

// audioFormat reports whether s names an agent audio format: "opus",
// "opus/48000/2", or "pcm_s16le/<16000|24000|48000>[/1]".
func audioFormat(s string) bool {
	switch s {
	case "opus", "opus/48000/2":
		return true
	}
	rest, ok := strings.CutPrefix(s, "pcm_s16le/")
	if !ok {
		return false
	}
	rate, ch, _ := strings.Cut(rest, "/")
	return (rate == "16000" || rate == "24000" || rate == "48000") && (ch == "" || ch == "1")
}
