package signaling

import (
	"context"
	"encoding/hex"
	"net/netip"
	"time"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// sharedRates are the limits counted across brokers, per kind.
type sharedRates map[string]struct{ ip, widget configs.Rate }

func newSharedRates(cfg configs.LimitsConfig) sharedRates {
	out := sharedRates{}
	for kind, rc := range map[string]configs.RateConfig{limitResolve: cfg.Resolve, limitSessions: cfg.Sessions,
		limitMessages: cfg.Messages, limitCaptures: cfg.Captures, limitUploads: cfg.Uploads} {
		ip, _ := configs.ParseRate(rc.PerIP) // validated by configs
		widget, _ := configs.ParseRate(rc.PerWidget)
		out[kind] = struct{ ip, widget configs.Rate }{ip, widget}
	}
	return out
}

// allowRate applies a limit: this broker's token buckets first (no
// network), then the window shared by every broker (a KV counter), so the
// limit holds for the deployment, not per broker. If the shared store is
// unreachable the local decision stands.
func (s *Server) allowRate(ctx context.Context, kind string, ip netip.Addr, widgetID string) limitResult {
	res := s.limiter.allow(kind, ip, widgetID)
	if res.OK {
		rates := s.shared[kind]
		now := time.Now()
		for _, c := range []struct {
			scope, id string
			rate      configs.Rate
		}{{scopeIP, sharedIPKey(ip), rates.ip}, {scopeWidget, widgetID, rates.widget}} {
			if c.rate.Unlimited() || c.rate.Per > broker.RateWindowMax() || c.id == "" {
				continue
			}
			n, end, err := s.sessions.CountRate(ctx, kind+"."+c.scope+"."+c.id, c.rate.Per, now)
			if err != nil {
				s.log.Warn("shared rate limit unavailable; local limit only", "kind", kind, "err", err)
				continue
			}
			if n > c.rate.N {
				res = limitResult{OK: false, Limit: c.rate.N, Remaining: 0, RetryAfter: end.Sub(now), Scope: c.scope}
				break
			}
			res.Remaining = min(res.Remaining, c.rate.N-n)
		}
	}
	if !res.OK {
		s.metrics.rateLimited.WithLabelValues(kind).Inc()
	}
	return res
}

// sharedIPKey is a client IP as a KV key token, grouped like the local
// buckets (IPv6 per /64).
func sharedIPKey(ip netip.Addr) string {
	a := ipKey(ip)
	if !a.IsValid() {
		return "unknown"
	}
	b := a.As16()
	return hex.EncodeToString(b[:])
}
