package configs

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// LimitsConfig holds the abuse limits of the public API.
type LimitsConfig struct {
	// Resolve limits POST /v1/widget/resolve.
	Resolve RateConfig `yaml:"resolve"`
	// Sessions limits POST /v1/sessions.
	Sessions RateConfig `yaml:"sessions"`
	// Messages limits visitor messages (HTTP and WebSocket).
	Messages RateConfig `yaml:"messages"`
	// Captures limits POST /v1/sessions/{id}/captures.
	Captures RateConfig `yaml:"captures"`
	// Uploads limits POST /v1/sessions/{id}/uploads.
	Uploads RateConfig `yaml:"uploads"`
	// MaxUploadBytes bounds one upload (default 10 MiB).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// BodyTimeout bounds reading a request's body, so a client trickling
	// bytes cannot hold a connection (default 10s); uploads get
	// UploadTimeout (default 2m).
	BodyTimeout   time.Duration `yaml:"body_timeout"`
	UploadTimeout time.Duration `yaml:"upload_timeout"`
	// PerSession caps what one session token can hold or do.
	PerSession SessionLimits `yaml:"per_session"`
	// Conversations caps the conversations agent workers hold at once,
	// so that one widget or tenant cannot take every worker's slots.
	Conversations ConversationLimits `yaml:"conversations"`
}

// ConversationLimits caps live conversations: those an agent worker holds,
// from a visitor's first message or call until the worker lets the
// conversation go. A session that has sent nothing holds no slot. A
// conversation over a cap is not refused: what the visitor sent is
// stored, the visitor is told CONVERSATION_LIMIT, and it is dispatched as
// soon as the cap allows.
type ConversationLimits struct {
	// PerWidget caps the live conversations of one widget (default 0: no
	// fixed cap; a widget's max_conversations overrides it).
	PerWidget int `yaml:"per_widget"`
	// PerTenant caps the live conversations of all a tenant's widgets
	// (default 0: no cap).
	PerTenant int `yaml:"per_tenant"`
	// FairShareReserve is the share of an agent's capacity (the sum its
	// live workers declare) kept for widgets holding less than their fair
	// share, the capacity divided by the widgets using the agent: a widget
	// at or past its fair share gets a new conversation only while more
	// than this share of the capacity is free (default 0.2; 0: no fair
	// sharing). A widget alone on its agent may use all of it.
	FairShareReserve float64 `yaml:"fair_share_reserve"`
}

// SessionLimits caps one session (on each broker).
type SessionLimits struct {
	// WebSockets is the most live WebSockets of one session (default 4;
	// 0: no cap).
	WebSockets int `yaml:"websockets"`
	// ModeSwitches limits mode switches, voice offers and LiveKit joins
	// of one session, "N/duration" (default "20/1m"; "0": none), since
	// each switch is stored in the conversation's log.
	ModeSwitches string `yaml:"mode_switches"`
}

// RateConfig is a pair of token-bucket limits, each "N/duration" (e.g.
// "60/1m", "30/1h"), or "0" for none.
type RateConfig struct {
	// PerIP limits each client IP.
	PerIP string `yaml:"per_ip"`
	// PerWidget limits each widget, across all its visitors.
	PerWidget string `yaml:"per_widget"`
}

// Rate is a parsed limit: N events per Per (0 N: unlimited).
type Rate struct {
	N   int
	Per time.Duration
}

// Unlimited reports whether the rate sets no limit.
func (r Rate) Unlimited() bool { return r.N <= 0 }

// String formats the rate as "N/duration".
func (r Rate) String() string {
	if r.Unlimited() {
		return "0"
	}
	return strconv.Itoa(r.N) + "/" + r.Per.String()
}

// ParseRate parses "N/duration" ("60/1m", "30/1h"; "/min", "/hour" and
// "/sec" are accepted too) or "0"/"" (unlimited).
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return Rate{}, nil
	}
	n, per, ok := strings.Cut(s, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 0 || count > 1_000_000_000 {
		return Rate{}, fmt.Errorf(`want "N/duration" such as "60/1m", got %q`, s)
	}
	var d time.Duration
	switch per {
	case "s", "sec", "second":
		d = time.Second
	case "m", "min", "minute":
		d = time.Minute
	case "h", "hour":
		d = time.Hour
	default:
		if d, err = time.ParseDuration(per); err != nil || d <= 0 {
			return Rate{}, fmt.Errorf(`want "N/duration" such as "60/1m", got %q`, s)
		}
	}
	return Rate{N: count, Per: d}, nil
}

// defaultLimits are the defaults (per IP from the seeds; per widget 100×).
func defaultLimits() LimitsConfig {
	return LimitsConfig{
		Resolve:        RateConfig{PerIP: "60/1m", PerWidget: "6000/1m"},
		Sessions:       RateConfig{PerIP: "30/1h", PerWidget: "3000/1h"},
		Messages:       RateConfig{PerIP: "60/1m", PerWidget: "6000/1m"},
		Captures:       RateConfig{PerIP: "60/1h", PerWidget: "6000/1h"},
		Uploads:        RateConfig{PerIP: "30/1m", PerWidget: "3000/1m"},
		MaxUploadBytes: 10 << 20,
		BodyTimeout:    10 * time.Second,
		UploadTimeout:  2 * time.Minute,
		PerSession:     SessionLimits{WebSockets: 4, ModeSwitches: "20/1m"},
		Conversations:  ConversationLimits{FairShareReserve: 0.2},
	}
}

func (l *LimitsConfig) validate(ps *problems) {
	for name, rc := range map[string]RateConfig{"resolve": l.Resolve, "sessions": l.Sessions,
		"messages": l.Messages, "captures": l.Captures, "uploads": l.Uploads} {
		if _, err := ParseRate(rc.PerIP); err != nil {
			ps.add("limits."+name+".per_ip", "%v", err)
		}
		if _, err := ParseRate(rc.PerWidget); err != nil {
			ps.add("limits."+name+".per_widget", "%v", err)
		}
	}
	if l.MaxUploadBytes < 1024 || l.MaxUploadBytes > 1<<30 {
		ps.add("limits.max_upload_bytes", "must be between 1024 and 1073741824, got %d", l.MaxUploadBytes)
	}
	if l.BodyTimeout < time.Second || l.BodyTimeout > 10*time.Minute {
		ps.add("limits.body_timeout", "must be between 1s and 10m, got %s", l.BodyTimeout)
	}
	if l.UploadTimeout < l.BodyTimeout || l.UploadTimeout > time.Hour {
		ps.add("limits.upload_timeout", "must be between limits.body_timeout and 1h, got %s", l.UploadTimeout)
	}
	ps.intRange("limits.per_session.websockets", l.PerSession.WebSockets, 0, 1000)
	if _, err := ParseRate(l.PerSession.ModeSwitches); err != nil {
		ps.add("limits.per_session.mode_switches", "%v", err)
	}
	ps.intRange("limits.conversations.per_widget", l.Conversations.PerWidget, 0, 10_000_000)
	ps.intRange("limits.conversations.per_tenant", l.Conversations.PerTenant, 0, 10_000_000)
	if r := l.Conversations.FairShareReserve; !(r >= 0 && r < 1) {
		ps.add("limits.conversations.fair_share_reserve", "must be at least 0 and less than 1, got %v", r)
	}
}

func (l LimitsConfig) logValue() slog.Value {
	attrs := []slog.Attr{slog.Int64("max_upload_bytes", l.MaxUploadBytes),
		logDuration("body_timeout", l.BodyTimeout), logDuration("upload_timeout", l.UploadTimeout),
		slog.Group("per_session", slog.Int("websockets", l.PerSession.WebSockets), slog.String("mode_switches", l.PerSession.ModeSwitches)),
		slog.Group("conversations", slog.Int("per_widget", l.Conversations.PerWidget), slog.Int("per_tenant", l.Conversations.PerTenant),
			slog.Float64("fair_share_reserve", l.Conversations.FairShareReserve))}
	for _, e := range []struct {
		name string
		rc   RateConfig
	}{{"resolve", l.Resolve}, {"sessions", l.Sessions}, {"messages", l.Messages}, {"captures", l.Captures}, {"uploads", l.Uploads}} {
		attrs = append(attrs, slog.Group(e.name, slog.String("per_ip", e.rc.PerIP), slog.String("per_widget", e.rc.PerWidget)))
	}
	return slog.GroupValue(attrs...)
}

// ParsePrefixes parses IPs and CIDRs ("10.0.0.0/8", "::1").
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
