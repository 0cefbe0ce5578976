package signaling

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-rtc/parley/configs"
)

// limitClock is a settable clock for rate-limit tests.
type limitClock struct {
	mu sync.Mutex
	t  time.Time
}

func newLimitClock() *limitClock {
	return &limitClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *limitClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *limitClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// unlimited is a LimitsConfig with no limits, to set one kind on.
func unlimited() configs.LimitsConfig {
	return configs.LimitsConfig{Resolve: configs.RateConfig{PerIP: "0", PerWidget: "0"}}
}

func newTestLimiter(t *testing.T, kind, perIP, perWidget string) (*rateLimiter, *limitClock) {
	t.Helper()
	cfg := unlimited()
	rc := configs.RateConfig{PerIP: perIP, PerWidget: perWidget}
	switch kind {
	case limitResolve:
		cfg.Resolve = rc
	case limitSessions:
		cfg.Sessions = rc
	case limitMessages:
		cfg.Messages = rc
	case limitCaptures:
		cfg.Captures = rc
	case limitUploads:
		cfg.Uploads = rc
	default:
		t.Fatalf("kind %q", kind)
	}
	clock := newLimitClock()
	l, err := newRateLimiter(cfg, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	return l, clock
}

var (
	ipA = netip.MustParseAddr("198.51.100.1")
	ipB = netip.MustParseAddr("198.51.100.2")
)

func ipN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestRateLimitBurstThenRefusal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind, perIP string
		n           int
		retry       time.Duration // Per/N
		header      string
	}{
		{limitResolve, "60/1m", 60, time.Second, "1"},
		{limitSessions, "30/1h", 30, 2 * time.Minute, "120"},
		{limitCaptures, "60/1h", 60, time.Minute, "60"},
		{limitMessages, "7/1s", 7, time.Second / 7, "1"},
		{limitUploads, "3/10s", 3, 10 * time.Second / 3, "4"},
	}
	for _, tt := range tests {
		t.Run(tt.kind+" "+tt.perIP, func(t *testing.T) {
			t.Parallel()
			l, _ := newTestLimiter(t, tt.kind, tt.perIP, "0")
			for i := range tt.n {
				res := l.allow(tt.kind, ipA, "w1")
				if !res.OK || res.Limit != tt.n || res.Remaining != tt.n-1-i || res.Scope != "" {
					t.Fatalf("request %d: %+v", i+1, res)
				}
			}
			res := l.allow(tt.kind, ipA, "w1")
			if res.OK || res.Scope != scopeIP || res.Limit != tt.n || res.Remaining != 0 {
				t.Fatalf("over the burst: %+v", res)
			}
			if d := res.RetryAfter - tt.retry; d < -time.Microsecond || d > time.Microsecond {
				t.Fatalf("RetryAfter %v, want %v", res.RetryAfter, tt.retry)
			}
			h := http.Header{}
			res.setHeaders(h)
			if h.Get("Retry-After") != tt.header || h.Get("X-RateLimit-Limit") != fmt.Sprint(tt.n) || h.Get("X-RateLimit-Remaining") != "0" {
				t.Fatalf("headers %v", h)
			}
			if err := res.err(); !errors.Is(err, ErrRateLimited) || !strings.Contains(err.Error(), "retry in "+tt.header+"s") {
				t.Fatalf("err() = %v", err)
			}
			// Another IP is not affected.
			if res := l.allow(tt.kind, ipB, "w1"); !res.OK {
				t.Fatalf("other IP: %+v", res)
			}
		})
	}
}

func TestRateLimitRefill(t *testing.T) {
	t.Parallel()
	l, clock := newTestLimiter(t, limitResolve, "60/1m", "0")
	for range 60 {
		l.allow(limitResolve, ipA, "w")
	}
	if l.allow(limitResolve, ipA, "w").OK {
		t.Fatal("61st allowed")
	}
	clock.advance(time.Second + time.Microsecond)
	if res := l.allow(limitResolve, ipA, "w"); !res.OK || res.Remaining != 0 {
		t.Fatalf("after 1s: %+v", res)
	}
	if res := l.allow(limitResolve, ipA, "w"); res.OK || res.RetryAfter > time.Second {
		t.Fatalf("second after 1s: %+v", res)
	}
	clock.advance(30*time.Second + time.Microsecond)
	for i := range 30 {
		if res := l.allow(limitResolve, ipA, "w"); !res.OK {
			t.Fatalf("after 30s, request %d: %+v", i+1, res)
		}
	}
	if l.allow(limitResolve, ipA, "w").OK {
		t.Fatal("31st after 30s allowed")
	}
	// Idle for long: the bucket holds a burst, never more.
	clock.advance(24 * time.Hour)
	for i := range 60 {
		if res := l.allow(limitResolve, ipA, "w"); !res.OK || res.Remaining != 59-i {
			t.Fatalf("after a day, request %d: %+v", i+1, res)
		}
	}
	if l.allow(limitResolve, ipA, "w").OK {
		t.Fatal("burst exceeded after a long idle")
	}
}

func TestRateLimitPerWidgetAcrossIPs(t *testing.T) {
	t.Parallel()
	l, clock := newTestLimiter(t, limitSessions, "100/1m", "10/1m")
	for i := range 10 {
		if res := l.allow(limitSessions, ipN(i), "w1"); !res.OK || res.Limit != 10 || res.Remaining != 9-i {
			t.Fatalf("IP %d: %+v", i, res)
		}
	}
	res := l.allow(limitSessions, ipN(99), "w1")
	if res.OK || res.Scope != scopeWidget || res.Limit != 10 {
		t.Fatalf("11th IP: %+v", res)
	}
	if d := res.RetryAfter - 6*time.Second; d < -time.Microsecond || d > time.Microsecond {
		t.Fatalf("RetryAfter %v", res.RetryAfter)
	}
	if err := res.err(); !errors.Is(err, ErrRateLimited) || !strings.Contains(err.Error(), "this widget") {
		t.Fatalf("err() = %v", err)
	}
	// Another widget has its own bucket.
	if res := l.allow(limitSessions, ipN(99), "w2"); !res.OK {
		t.Fatalf("other widget: %+v", res)
	}
	clock.advance(6 * time.Second)
	if res := l.allow(limitSessions, ipN(99), "w1"); !res.OK {
		t.Fatalf("after refill: %+v", res)
	}
}

func TestRateLimitRefusalConsumesNothing(t *testing.T) {
	t.Parallel()
	t.Run("IP refusal keeps the widget's tokens", func(t *testing.T) {
		t.Parallel()
		l, _ := newTestLimiter(t, limitResolve, "2/1m", "5/1m")
		for range 2 {
			if !l.allow(limitResolve, ipA, "w").OK {
				t.Fatal("refused within the IP burst")
			}
		}
		for range 10 {
			if res := l.allow(limitResolve, ipA, "w"); res.OK || res.Scope != scopeIP {
				t.Fatalf("over the IP limit: %+v", res)
			}
		}
		// The widget bucket lost 2 tokens, not 12.
		for i := range 3 {
			if res := l.allow(limitResolve, ipN(i), "w"); !res.OK {
				t.Fatalf("widget token %d: %+v", i+3, res)
			}
		}
		if res := l.allow(limitResolve, ipN(7), "w"); res.OK || res.Scope != scopeWidget {
			t.Fatalf("6th widget request: %+v", res)
		}
	})
	t.Run("widget refusal keeps the IP's tokens", func(t *testing.T) {
		t.Parallel()
		l, clock := newTestLimiter(t, limitResolve, "5/1m", "1/1m")
		if !l.allow(limitResolve, ipA, "w").OK {
			t.Fatal("first refused")
		}
		for range 10 {
			if res := l.allow(limitResolve, ipB, "w"); res.OK || res.Scope != scopeWidget {
				t.Fatalf("over the widget limit: %+v", res)
			}
		}
		k := l.kinds[limitResolve]
		if tok := k.ips.m[ipKey(ipB)].lim.TokensAt(clock.now()); tok != 5 {
			t.Fatalf("refused IP's bucket has %v tokens, want 5", tok)
		}
		clock.advance(time.Minute)
		if res := l.allow(limitResolve, ipB, "w"); !res.OK || res.Limit != 1 || res.Remaining != 0 {
			t.Fatalf("after refill: %+v", res)
		}
	})
	t.Run("both refuse: the longer wait", func(t *testing.T) {
		t.Parallel()
		l, _ := newTestLimiter(t, limitResolve, "1/1m", "2/1h")
		l.allow(limitResolve, ipA, "w")
		if res := l.allow(limitResolve, ipA, "w"); res.OK || res.Scope != scopeIP || res.RetryAfter != time.Minute {
			t.Fatalf("IP refusal: %+v", res)
		}
		l.allow(limitResolve, ipB, "w")
		res := l.allow(limitResolve, ipA, "w")
		if res.OK || res.Scope != scopeWidget || res.Limit != 2 || res.RetryAfter < 30*time.Minute-time.Millisecond {
			t.Fatalf("both refuse: %+v", res)
		}
	})
}

func TestRateLimitRemainingIsTheTighterBucket(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, limitMessages, "10/1m", "5/1m")
	if res := l.allow(limitMessages, ipA, "w"); !res.OK || res.Limit != 5 || res.Remaining != 4 {
		t.Fatalf("%+v", res)
	}
	l2, _ := newTestLimiter(t, limitMessages, "3/1m", "50/1m")
	if res := l2.allow(limitMessages, ipA, "w"); !res.OK || res.Limit != 3 || res.Remaining != 2 {
		t.Fatalf("%+v", res)
	}
	// Equal remaining: the smaller limit is shown.
	l3, _ := newTestLimiter(t, limitMessages, "4/1m", "2/1m")
	l3.allow(limitMessages, ipB, "w")
	l3.allow(limitMessages, ipA, "x")
	l3.allow(limitMessages, ipA, "x")
	if res := l3.allow(limitMessages, ipA, "w"); !res.OK || res.Limit != 2 || res.Remaining != 0 {
		t.Fatalf("%+v", res)
	}
}

func TestRateLimitUnlimited(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, limitUploads, "0", "")
	for range 1000 {
		res := l.allow(limitUploads, ipA, "w")
		if !res.OK || res.Limit != 0 {
			t.Fatalf("%+v", res)
		}
		h := http.Header{}
		res.setHeaders(h)
		if len(h) != 0 {
			t.Fatalf("headers for unlimited: %v", h)
		}
		if res.err() != nil {
			t.Fatal(res.err())
		}
	}
	if ips, widgets := l.buckets(limitUploads); ips != 0 || widgets != 0 {
		t.Fatalf("unlimited kind keeps %d+%d buckets", ips, widgets)
	}
	// One side unlimited: the other still limits.
	l, _ = newTestLimiter(t, limitUploads, "0", "3/1m")
	for i := range 3 {
		if res := l.allow(limitUploads, ipN(i), "w"); !res.OK || res.Limit != 3 {
			t.Fatalf("%+v", res)
		}
	}
	if res := l.allow(limitUploads, ipN(9), "w"); res.OK || res.Scope != scopeWidget {
		t.Fatalf("%+v", res)
	}
	l, _ = newTestLimiter(t, limitUploads, "1/1m", "0")
	l.allow(limitUploads, ipA, "w")
	if res := l.allow(limitUploads, ipA, "other"); res.OK || res.Scope != scopeIP {
		t.Fatalf("%+v", res)
	}
	// An unknown kind is not limited.
	if res := l.allow("nonsense", ipA, "w"); !res.OK || res.Limit != 0 {
		t.Fatalf("%+v", res)
	}
}

func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		res  limitResult
		want map[string]string
	}{
		{limitResult{OK: true, Limit: 60, Remaining: 59}, map[string]string{"X-Ratelimit-Limit": "60", "X-Ratelimit-Remaining": "59"}},
		{limitResult{OK: true, Limit: 1, Remaining: 0}, map[string]string{"X-Ratelimit-Limit": "1", "X-Ratelimit-Remaining": "0"}},
		{limitResult{Limit: 30, RetryAfter: 2 * time.Minute, Scope: scopeIP}, map[string]string{"X-Ratelimit-Limit": "30", "X-Ratelimit-Remaining": "0", "Retry-After": "120"}},
		{limitResult{Limit: 30, RetryAfter: 1500 * time.Millisecond, Scope: scopeIP}, map[string]string{"X-Ratelimit-Limit": "30", "X-Ratelimit-Remaining": "0", "Retry-After": "2"}},
		{limitResult{Limit: 30, RetryAfter: time.Nanosecond, Scope: scopeWidget}, map[string]string{"X-Ratelimit-Limit": "30", "X-Ratelimit-Remaining": "0", "Retry-After": "1"}},
		{limitResult{Limit: 30, Scope: scopeWidget}, map[string]string{"X-Ratelimit-Limit": "30", "X-Ratelimit-Remaining": "0", "Retry-After": "1"}},
		{limitResult{OK: true}, map[string]string{}},
	}
	for _, tt := range tests {
		h := http.Header{}
		tt.res.setHeaders(h)
		if len(h) != len(tt.want) {
			t.Errorf("%+v: headers %v, want %v", tt.res, h, tt.want)
		}
		for k, v := range tt.want {
			if h.Get(k) != v {
				t.Errorf("%+v: %s = %q, want %q", tt.res, k, h.Get(k), v)
			}
		}
	}
	for _, tt := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 1}, {-time.Second, 1}, {time.Nanosecond, 1}, {time.Second, 1}, {time.Second + 2*time.Millisecond, 2},
		{119900 * time.Millisecond, 120}, {2*time.Minute + time.Nanosecond, 120}, {2*time.Minute + 2*time.Millisecond, 121},
	} {
		if got := retryAfterSeconds(tt.d); got != tt.want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

func TestRateLimitIPKeys(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, limitResolve, "1/1h", "0")
	tests := []struct {
		first, second string
		shared        bool
	}{
		{"2001:db8::1", "2001:db8::ffff:1", true},     // one /64
		{"2001:db8:0:1::1", "2001:db8:0:2::1", false}, // two /64s
		{"203.0.113.1", "::ffff:203.0.113.1", true},   // 4in6 is its IPv4
		{"203.0.113.2", "203.0.113.3", false},
		{"", "", true}, // the zero Addr is one bucket
	}
	for _, tt := range tests {
		parse := func(s string) netip.Addr {
			if s == "" {
				return netip.Addr{}
			}
			return netip.MustParseAddr(s)
		}
		if !l.allow(limitResolve, parse(tt.first), "w").OK {
			t.Fatalf("%s: first refused", tt.first)
		}
		if got := l.allow(limitResolve, parse(tt.second), "w").OK; got == tt.shared {
			t.Errorf("%q then %q: second allowed = %v, want shared bucket = %v", tt.first, tt.second, got, tt.shared)
		}
	}
	if l.allow(limitResolve, netip.MustParseAddr("fe80::1%eth0"), "w").OK != true ||
		l.allow(limitResolve, netip.MustParseAddr("fe80::2"), "w").OK != false {
		t.Error("zone not dropped from the key")
	}
}

func TestRateLimitSweepFreesMemory(t *testing.T) {
	t.Parallel()
	l, clock := newTestLimiter(t, limitMessages, "60/1m", "600/1m")
	for i := range 1000 {
		l.allow(limitMessages, ipN(i), fmt.Sprint("w", i%3))
	}
	if ips, widgets := l.buckets(limitMessages); ips != 1000 || widgets != 3 {
		t.Fatalf("buckets %d/%d", ips, widgets)
	}
	clock.advance(30 * time.Second)
	l.allow(limitMessages, ipN(5), "w0")
	l.sweep()
	if ips, widgets := l.buckets(limitMessages); ips != 1000 || widgets != 3 {
		t.Fatalf("after 30s: %d/%d buckets, want all kept", ips, widgets)
	}
	clock.advance(30 * time.Second)
	l.sweep()
	if ips, widgets := l.buckets(limitMessages); ips != 1 || widgets != 1 {
		t.Fatalf("after 1m: %d/%d buckets, want the one used 30s ago", ips, widgets)
	}
	clock.advance(30 * time.Second)
	l.sweep()
	if ips, widgets := l.buckets(limitMessages); ips != 0 || widgets != 0 {
		t.Fatalf("after 1m30s: %d/%d buckets", ips, widgets)
	}
	// A swept bucket is a fresh, full one.
	for i := range 60 {
		if res := l.allow(limitMessages, ipN(5), "w0"); !res.OK {
			t.Fatalf("request %d after sweep: %+v", i+1, res)
		}
	}
}

func TestRateLimitLRUBound(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, limitSessions, "1/1h", "0")
	l.maxBuckets = 3
	a, b, c, d, e := ipN(1), ipN(2), ipN(3), ipN(4), ipN(5)
	for _, ip := range []netip.Addr{a, b, c} {
		if !l.allow(limitSessions, ip, "w").OK {
			t.Fatal("first refused")
		}
	}
	if l.allow(limitSessions, a, "w").OK { // refused, and a is now the most recent
		t.Fatal("a allowed twice")
	}
	l.allow(limitSessions, d, "w") // evicts b
	l.allow(limitSessions, e, "w") // evicts c
	if ips, _ := l.buckets(limitSessions); ips != 3 {
		t.Fatalf("%d buckets, bound 3", ips)
	}
	if l.allow(limitSessions, a, "w").OK {
		t.Fatal("a was evicted though recently used")
	}
	if !l.allow(limitSessions, b, "w").OK { // a fresh bucket; evicts d
		t.Fatal("b was not evicted")
	}
	for i := range 100 {
		l.allow(limitSessions, ipN(100+i), "w")
		if ips, _ := l.buckets(limitSessions); ips > 3 {
			t.Fatalf("%d buckets, bound 3", ips)
		}
	}
	// The list and the map agree.
	k := l.kinds[limitSessions]
	n := 0
	for p := k.ips.head; p != nil; p = p.next {
		if k.ips.m[p.key] != p {
			t.Fatalf("list entry %v not in the map", p.key)
		}
		n++
	}
	if n != len(k.ips.m) || k.ips.tail.next != nil || k.ips.head.prev != nil {
		t.Fatalf("list of %d, map of %d", n, len(k.ips.m))
	}
}

func TestRateLimitConcurrent(t *testing.T) {
	t.Parallel()
	clock := newLimitClock()
	cfg := configs.LimitsConfig{
		Resolve:  configs.RateConfig{PerIP: "1000/1h", PerWidget: "500/1h"},
		Sessions: configs.RateConfig{PerIP: "3/1h", PerWidget: "0"},
		Messages: configs.RateConfig{PerIP: "0", PerWidget: "0"},
	}
	l, err := newRateLimiter(cfg, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	l.maxBuckets = 50
	var okWidget, okSessions atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				ip := ipN(g*1000 + i%20)
				if l.allow(limitResolve, ip, "w").OK {
					okWidget.Add(1)
				}
				if l.allow(limitSessions, ipN(i%40), "w").OK {
					okSessions.Add(1)
				}
				l.allow(limitMessages, ip, "w")
				if i%100 == 0 {
					l.sweep()
					l.buckets(limitResolve)
				}
			}
		})
	}
	wg.Wait()
	if okWidget.Load() != 500 {
		t.Fatalf("%d resolves allowed, want the widget's 500", okWidget.Load())
	}
	if okSessions.Load() != 3*40 {
		t.Fatalf("%d sessions allowed, want 3 for each of 40 IPs", okSessions.Load())
	}
	if ips, _ := l.buckets(limitResolve); ips > 50 {
		t.Fatalf("%d buckets over the bound", ips)
	}
}

func TestRateLimitConfigErrors(t *testing.T) {
	t.Parallel()
	cfg := unlimited()
	cfg.Sessions.PerIP = "ten per hour"
	if _, err := newRateLimiter(cfg, nil); err == nil || !strings.Contains(err.Error(), "limits.sessions.per_ip") {
		t.Fatalf("err = %v", err)
	}
	cfg = unlimited()
	cfg.Uploads.PerWidget = "5/0s"
	if _, err := newRateLimiter(cfg, nil); err == nil || !strings.Contains(err.Error(), "limits.uploads.per_widget") {
		t.Fatalf("err = %v", err)
	}
	// The real clock by default.
	cfg = unlimited()
	cfg.Resolve.PerIP = "1/1h"
	l, err := newRateLimiter(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !l.allow(limitResolve, ipA, "w").OK || l.allow(limitResolve, ipA, "w").OK {
		t.Fatal("real-clock limiter: want one allowed, then refused")
	}
}

func TestRateLimitDefaults(t *testing.T) {
	t.Parallel()
	// The defaults of configs (seed 001 §8.2) build, and limit per IP.
	l, err := newRateLimiter(configs.Default().Limits, newLimitClock().now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if res := l.allow(limitSessions, ipA, "w"); !res.OK || res.Limit != 30 || res.Remaining != 29-i {
			t.Fatalf("session %d: %+v", i+1, res)
		}
	}
	if res := l.allow(limitSessions, ipA, "w"); res.OK || res.RetryAfter != 2*time.Minute {
		t.Fatalf("31st session: %+v", res)
	}
}

func BenchmarkRateLimitAllow(b *testing.B) {
	l, err := newRateLimiter(configs.Default().Limits, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.allow(limitMessages, ipN(i%1000), "w")
		i++
	}
}
