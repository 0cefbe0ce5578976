package signaling

import (
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/parley-rtc/parley/configs"
)

// Kinds of limited requests, one per configs.LimitsConfig entry.
const (
	limitResolve  = "resolve"
	limitSessions = "sessions"
	limitMessages = "messages"
	limitCaptures = "captures"
	limitUploads  = "uploads"
)

// Scopes of a refusal.
const (
	scopeIP     = "ip"
	scopeWidget = "widget"
)

// defaultMaxBuckets bounds the buckets of one kind and scope; beyond it the
// least recently used bucket is dropped.
const defaultMaxBuckets = 100_000

// limitResult is the outcome of one rate-limit check.
type limitResult struct {
	// OK is true when the request may proceed (and has taken a token).
	OK bool
	// Limit is the size (N) of the tighter bucket; 0 when nothing limits
	// this kind.
	Limit int
	// Remaining is the whole tokens left in the tighter bucket after this
	// request (0 when refused).
	Remaining int
	// RetryAfter is how long until the request would pass, when refused.
	RetryAfter time.Duration
	// Scope is the refusing bucket, "ip" or "widget"; empty when OK.
	Scope string
}

// setHeaders writes X-RateLimit-Limit and X-RateLimit-Remaining, and
// Retry-After (whole seconds, rounded up, at least 1) when refused. An
// unlimited kind (Limit 0) gets no X-RateLimit headers: "Limit: 0" would
// read as "nothing allowed".
func (res limitResult) setHeaders(h http.Header) {
	if res.Limit > 0 {
		h.Set("X-RateLimit-Limit", strconv.Itoa(res.Limit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(res.Remaining))
	}
	if !res.OK {
		h.Set("Retry-After", strconv.FormatInt(retryAfterSeconds(res.RetryAfter), 10))
	}
}

// err is nil when the request passed and ErrRateLimited otherwise.
func (res limitResult) err() error {
	if res.OK {
		return nil
	}
	by := "this IP address"
	if res.Scope == scopeWidget {
		by = "this widget"
	}
	return fmt.Errorf("%w: too many requests from %s; retry in %ds", ErrRateLimited, by, retryAfterSeconds(res.RetryAfter))
}

// retryAfterSeconds rounds d up to whole seconds, at least 1. Float noise
// of the token arithmetic under a millisecond is not rounded up: a wait of
// 120.000000001 s is "120", not "121".
func retryAfterSeconds(d time.Duration) int64 {
	s := int64((d - time.Millisecond + time.Second) / time.Second)
	return max(s, 1)
}

// rateLimiter holds token buckets (golang.org/x/time/rate) per kind of
// request: one per client IP and one per widget. A request must pass both,
// and a refused request takes no token from either. IPv6 clients are keyed
// by their /64, the block one subscriber usually holds, so rotating
// addresses inside it does not buy new buckets.
//
// Memory is bounded: at most maxBuckets buckets per kind and scope (the
// least recently used is dropped beyond that), and sweep drops buckets idle
// long enough to be full again, which are then identical to a new bucket.
type rateLimiter struct {
	now        func() time.Time
	kinds      map[string]*kindLimiter // fixed after newRateLimiter
	maxBuckets int                     // per kind and scope; tests lower it
}

// kindLimiter is the buckets of one kind; mu guards both sets, so that a
// request checks and takes from its two buckets atomically. Lock order: mu,
// then a rate.Limiter's own mutex (a leaf, taken inside its methods).
type kindLimiter struct {
	mu      sync.Mutex
	ips     bucketSet[netip.Addr]
	widgets bucketSet[string]
}

// newRateLimiter builds the buckets' rules from cfg; now is the clock (nil:
// time.Now).
func newRateLimiter(cfg configs.LimitsConfig, now func() time.Time) (*rateLimiter, error) {
	if now == nil {
		now = time.Now
	}
	l := &rateLimiter{now: now, kinds: make(map[string]*kindLimiter, 5), maxBuckets: defaultMaxBuckets}
	for _, k := range []struct {
		name string
		rc   configs.RateConfig
	}{
		{limitResolve, cfg.Resolve}, {limitSessions, cfg.Sessions}, {limitMessages, cfg.Messages},
		{limitCaptures, cfg.Captures}, {limitUploads, cfg.Uploads},
	} {
		perIP, err := configs.ParseRate(k.rc.PerIP)
		if err != nil {
			return nil, fmt.Errorf("signaling: limits.%s.per_ip: %w", k.name, err)
		}
		perWidget, err := configs.ParseRate(k.rc.PerWidget)
		if err != nil {
			return nil, fmt.Errorf("signaling: limits.%s.per_widget: %w", k.name, err)
		}
		l.kinds[k.name] = &kindLimiter{
			ips:     newBucketSet[netip.Addr](perIP),
			widgets: newBucketSet[string](perWidget),
		}
	}
	return l, nil
}

// allow checks a request of kind from ip for widget and, if both buckets
// have a token, takes one from each. An unknown kind is not limited (kinds
// are the constants above, so this cannot happen by a typo).
func (l *rateLimiter) allow(kind string, ip netip.Addr, widget string) limitResult {
	k := l.kinds[kind]
	if k == nil {
		return limitResult{OK: true}
	}
	now := l.now()
	key := ipKey(ip)

	k.mu.Lock()
	defer k.mu.Unlock()
	var checks [2]bucketCheck
	n := 0
	if b := k.ips.get(key, now, l.maxBuckets); b != nil {
		checks[n] = bucketCheck{scope: scopeIP, n: k.ips.rate.N, lim: b.lim}
		n++
	}
	if b := k.widgets.get(widget, now, l.maxBuckets); b != nil {
		checks[n] = bucketCheck{scope: scopeWidget, n: k.widgets.rate.N, lim: b.lim}
		n++
	}
	if n == 0 {
		return limitResult{OK: true}
	}

	// Look at both before taking from either: a refusal costs nothing.
	var refused *bucketCheck
	var wait time.Duration
	for i := range checks[:n] {
		c := &checks[i]
		c.tokens = c.lim.TokensAt(now)
		if c.tokens < 1 {
			// The time the limiter itself needs to grow one token.
			d := time.Duration(min((1-c.tokens)/float64(c.lim.Limit())*float64(time.Second), math.MaxInt64/2))
			if refused == nil || d > wait {
				refused, wait = c, max(d, 1)
			}
		}
	}
	if refused != nil {
		return limitResult{Limit: refused.n, RetryAfter: wait, Scope: refused.scope}
	}

	res := limitResult{OK: true, Remaining: math.MaxInt}
	for i := range checks[:n] {
		c := &checks[i]
		c.lim.AllowN(now, 1) // true: it had a token and mu is held
		left := int(math.Floor(c.tokens - 1))
		if left < res.Remaining || left == res.Remaining && c.n < res.Limit {
			res.Limit, res.Remaining = c.n, max(left, 0)
		}
	}
	return res
}

// bucketCheck is one bucket a request must pass.
type bucketCheck struct {
	scope  string
	n      int
	lim    *rate.Limiter
	tokens float64
}

// sweep drops buckets idle for at least their period, which have refilled
// and so equal a new bucket. The owner calls it periodically.
func (l *rateLimiter) sweep() {
	now := l.now()
	for _, k := range l.kinds {
		k.mu.Lock()
		k.ips.sweep(now)
		k.widgets.sweep(now)
		k.mu.Unlock()
	}
}

// buckets reports how many buckets kind holds, for tests and metrics.
func (l *rateLimiter) buckets(kind string) (ips, widgets int) {
	k := l.kinds[kind]
	if k == nil {
		return 0, 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.ips.m), len(k.widgets.m)
}

// ipKey is the bucket key of a client address: IPv4 as is, IPv6 by its /64.
// The zero Addr (an unparsable RemoteAddr) is a bucket of its own.
func ipKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64) // cannot fail for a valid IPv6 address and 64
		return p.Addr()
	}
	return a
}

// bucketSet is the buckets of one kind and scope, in least-recently-used
// order: a map for lookup and an intrusive list, head most recent.
type bucketSet[K comparable] struct {
	rate       configs.Rate
	limit      rate.Limit
	m          map[K]*bucket[K]
	head, tail *bucket[K]
}

type bucket[K comparable] struct {
	key        K
	lim        *rate.Limiter
	used       time.Time
	prev, next *bucket[K]
}

func newBucketSet[K comparable](r configs.Rate) bucketSet[K] {
	s := bucketSet[K]{rate: r, m: make(map[K]*bucket[K])}
	if !r.Unlimited() {
		s.limit = rate.Limit(float64(r.N) / r.Per.Seconds())
	}
	return s
}

// get returns key's bucket, created full if new, and marks it used; nil
// when the set is unlimited. Creating one beyond maxN drops the least
// recently used.
func (s *bucketSet[K]) get(key K, now time.Time, maxN int) *bucket[K] {
	if s.rate.Unlimited() {
		return nil
	}
	b := s.m[key]
	if b != nil {
		s.unlink(b)
	} else {
		for len(s.m) >= maxN && s.tail != nil {
			old := s.tail
			s.unlink(old)
			delete(s.m, old.key)
		}
		b = &bucket[K]{key: key, lim: rate.NewLimiter(s.limit, s.rate.N)}
		s.m[key] = b
	}
	b.used = now
	s.pushFront(b)
	return b
}

// sweep drops the buckets unused for at least the rate's period (in which
// N tokens, a full bucket, grow back), oldest first.
func (s *bucketSet[K]) sweep(now time.Time) {
	for b := s.tail; b != nil && now.Sub(b.used) >= s.rate.Per; b = s.tail {
		s.unlink(b)
		delete(s.m, b.key)
	}
}

func (s *bucketSet[K]) unlink(b *bucket[K]) {
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		s.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else {
		s.tail = b.prev
	}
	b.prev, b.next = nil, nil
}

func (s *bucketSet[K]) pushFront(b *bucket[K]) {
	b.next = s.head
	if s.head != nil {
		s.head.prev = b
	}
	s.head = b
	if s.tail == nil {
		s.tail = b
	}
}
