package media

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"regexp"
)

// Client IP addresses are never logged (docs/SECURITY.md). Parley's own log
// lines carry none, but text it does not write — pion's ICE logs, which
// name every candidate, and net/http's server errors ("TLS handshake error
// from 203.0.113.7:51234") — does. AddrRedactor rewrites such text before
// it reaches the log: each IP address becomes "ip-" and 8 hex digits of a
// keyed hash, so the lines of one address can still be followed within a
// process, but the address cannot be read back (the key is random per
// process; an unkeyed hash of an IPv4 address is reversed by trying all
// 2³² of them).

// addrPattern finds IPv4 and IPv6 literals (and some strings that only
// look like them, such as times; netip decides).
var addrPattern = regexp.MustCompile(`(?:[0-9a-fA-F]{0,4}:){2,7}(?:[0-9a-fA-F]{0,4}|\d{1,3}(?:\.\d{1,3}){3})|\d{1,3}(?:\.\d{1,3}){3}`)

// AddrRedactor is an slog.Handler that hides the IP addresses in the
// message and the string attributes of each record before passing it on.
type AddrRedactor struct {
	next slog.Handler
	key  []byte
}

// NewAddrRedactor wraps next with a fresh random key.
func NewAddrRedactor(next slog.Handler) *AddrRedactor {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	return &AddrRedactor{next: next, key: key}
}

// Redact returns s with every IP address replaced by its keyed hash.
func (h *AddrRedactor) Redact(s string) string {
	if !addrPattern.MatchString(s) {
		return s
	}
	return addrPattern.ReplaceAllStringFunc(s, func(m string) string {
		a, err := netip.ParseAddr(m)
		if err != nil {
			return m
		}
		mac := hmac.New(sha256.New, h.key)
		mac.Write(a.AsSlice())
		return "ip-" + hex.EncodeToString(mac.Sum(nil)[:4])
	})
}

// Enabled implements slog.Handler.
func (h *AddrRedactor) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *AddrRedactor) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *AddrRedactor) attr(a slog.Attr) slog.Attr {
	switch v := a.Value.Resolve(); v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.Redact(v.String()))
	case slog.KindGroup:
		attrs := v.Group()
		out := make([]any, len(attrs))
		for i, g := range attrs {
			out[i] = h.attr(g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, h.Redact(err.Error()))
		}
		return slog.Attr{Key: a.Key, Value: v}
	default:
		return slog.Attr{Key: a.Key, Value: v}
	}
}

// WithAttrs implements slog.Handler.
func (h *AddrRedactor) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &AddrRedactor{next: h.next.WithAttrs(red), key: h.key}
}

// WithGroup implements slog.Handler.
func (h *AddrRedactor) WithGroup(name string) slog.Handler {
	return &AddrRedactor{next: h.next.WithGroup(name), key: h.key}
}
