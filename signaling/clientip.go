package signaling

import (
	"net/http"
	"net/netip"
	"strings"
)

// X-Forwarded-For is read right to left, and only so far: the entries a
// chain of trusted proxies appends are at the right end, so a longer header
// only adds entries the client wrote itself.
const (
	maxForwardedEntries = 64
	maxForwardedBytes   = 4 << 10
)

// clientIPs finds a request's client IP: RemoteAddr, or — only when
// RemoteAddr is a trusted proxy — the right-most X-Forwarded-For entry that
// is not itself a trusted proxy (the rule of RFC 7239 §5.2 and MDN's
// "X-Forwarded-For: selecting an IP address": every entry left of the one
// the outermost trusted proxy appended was written by the client and can be
// anything). Garbage entries are skipped; only the right-most 64 entries and
// 4 KiB of the header are read.
//
// A client that reaches the server directly can never choose its IP: with
// no trusted proxies configured X-Forwarded-For is ignored.
type clientIPs struct{ trusted []netip.Prefix }

// newClientIPs returns a resolver trusting the proxies in trusted (as
// parsed by configs.ParsePrefixes; IPv4-mapped IPv6 prefixes are
// normalised to IPv4).
func newClientIPs(trusted []netip.Prefix) *clientIPs {
	ps := make([]netip.Prefix, 0, len(trusted))
	for _, p := range trusted {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		ps = append(ps, p.Masked())
	}
	return &clientIPs{trusted: ps}
}

// isTrusted reports whether a (unmapped, without zone) is a trusted proxy.
func (c *clientIPs) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// of returns r's client IP, unmapped (::ffff:192.0.2.1 becomes 192.0.2.1)
// and without IPv6 zone; an unparsable RemoteAddr gives the zero Addr.
func (c *clientIPs) of(r *http.Request) netip.Addr {
	remote := parseHostIP(r.RemoteAddr)
	if !remote.IsValid() || len(c.trusted) == 0 || !c.isTrusted(remote) {
		return remote
	}
	// Walk X-Forwarded-For right to left, across repeated header lines
	// (which are one list, in order: RFC 9110 §5.3).
	client := remote // the left-most trusted hop seen so far
	values := r.Header.Values("X-Forwarded-For")
	entries, budget := 0, maxForwardedBytes
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			if entries == maxForwardedEntries || budget <= 0 {
				return client
			}
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			budget -= len(entry) + 1
			if budget < 0 {
				return client // cut mid-entry: what is left is over the cap
			}
			entries++
			a := parseHostIP(strings.TrimSpace(entry))
			if !a.IsValid() {
				continue // garbage (or "unknown"): skip it
			}
			if !c.isTrusted(a) {
				return a
			}
			client = a
		}
	}
	return client
}

// parseHostIP parses "ip", "ip:port", "[ipv6]" or "[ipv6]:port" into an
// unmapped address without zone; anything else gives the zero Addr.
func parseHostIP(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		switch {
		case perr == nil:
			a = ap.Addr()
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']':
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil || !a.Is6() {
				return netip.Addr{}
			}
		default:
			return netip.Addr{}
		}
	}
	return a.Unmap().WithZone("")
}
