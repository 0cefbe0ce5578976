package signaling

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/configs"
)

func mustPrefixes(t testing.TB, list ...string) []netip.Prefix {
	t.Helper()
	ps, err := configs.ParsePrefixes(list)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func requestFrom(remote string, xff ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/widget/resolve", nil)
	r.RemoteAddr = remote
	for _, v := range xff {
		r.Header.Add("X-Forwarded-For", v)
	}
	return r
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	proxies := []string{"10.0.0.0/8", "fd00::/8", "192.0.2.1"}
	many := func(n int, entry string) string {
		return strings.TrimSuffix(strings.Repeat(entry+", ", n), ", ")
	}
	tests := []struct {
		name    string
		trusted []string
		remote  string
		xff     []string
		want    string // "" = the zero Addr
	}{
		// No proxies configured: X-Forwarded-For is never believed.
		{"direct", nil, "203.0.113.7:5555", nil, "203.0.113.7"},
		{"direct spoofing XFF", nil, "203.0.113.7:5555", []string{"1.2.3.4"}, "203.0.113.7"},
		{"direct spoofing a proxy chain", nil, "203.0.113.7:5555", []string{"1.2.3.4, 10.0.0.1"}, "203.0.113.7"},
		{"no port", nil, "203.0.113.7", nil, "203.0.113.7"},
		{"invalid remote", nil, "garbage", []string{"1.2.3.4"}, ""},
		{"empty remote", nil, "", nil, ""},
		{"remote host name", nil, "proxy.example:80", nil, ""},
		{"remote port out of range", nil, "203.0.113.7:99999", nil, ""},

		// Proxies configured, but this peer is not one of them.
		{"untrusted peer spoofing", proxies, "203.0.113.7:5555", []string{"1.2.3.4"}, "203.0.113.7"},

		// Through trusted proxies.
		{"one proxy", proxies, "10.0.0.1:80", []string{"198.51.100.9"}, "198.51.100.9"},
		{"client-written entries are skipped", proxies, "10.0.0.1:80", []string{"6.6.6.6, 1.2.3.4, 198.51.100.9"}, "198.51.100.9"},
		{"proxy chain", proxies, "10.0.0.1:80", []string{"6.6.6.6, 198.51.100.9, 10.0.0.2, 192.0.2.1"}, "198.51.100.9"},
		{"client pretends to be a proxy", proxies, "10.0.0.1:80", []string{"10.9.9.9, 198.51.100.9"}, "198.51.100.9"},
		{"repeated header lines", proxies, "10.0.0.1:80", []string{"6.6.6.6, 198.51.100.9", "10.0.0.2"}, "198.51.100.9"},
		{"repeated header lines, last decides", proxies, "10.0.0.1:80", []string{"198.51.100.9", "203.0.113.5"}, "203.0.113.5"},
		{"no XFF", proxies, "10.0.0.1:80", nil, "10.0.0.1"},
		{"empty XFF", proxies, "10.0.0.1:80", []string{""}, "10.0.0.1"},
		{"only proxies: the left-most", proxies, "10.0.0.1:80", []string{"10.0.0.7, 10.0.0.2"}, "10.0.0.7"},

		// Garbage entries are skipped.
		{"garbage right", proxies, "10.0.0.1:80", []string{"198.51.100.9, not-an-ip"}, "198.51.100.9"},
		{"garbage between", proxies, "10.0.0.1:80", []string{"198.51.100.9, unknown, , 10.0.0.2"}, "198.51.100.9"},
		{"only garbage", proxies, "10.0.0.1:80", []string{"unknown, _hidden, 999.1.1.1"}, "10.0.0.1"},
		{"commas only", proxies, "10.0.0.1:80", []string{",,,"}, "10.0.0.1"},
		{"IPv4 with leading zeros", proxies, "10.0.0.1:80", []string{"198.51.100.9, 010.000.000.001"}, "198.51.100.9"},

		// Ports and IPv6.
		{"XFF with port", proxies, "10.0.0.1:80", []string{"198.51.100.9:4711"}, "198.51.100.9"},
		{"IPv6 direct", nil, "[2001:db8::1]:443", nil, "2001:db8::1"},
		{"IPv6 zone dropped", nil, "[fe80::1%eth0]:443", nil, "fe80::1"},
		{"IPv6 proxy", proxies, "[fd00::1]:443", []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv6 XFF bracketed with port", proxies, "[fd00::1]:443", []string{"[2001:db8::7]:1234"}, "2001:db8::7"},
		{"IPv6 XFF bracketed", proxies, "[fd00::1]:443", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"bracketed IPv4 is garbage", proxies, "10.0.0.1:80", []string{"198.51.100.9, [1.2.3.4]"}, "198.51.100.9"},

		// IPv4-mapped IPv6 (a dual-stack listener) is unmapped.
		{"4in6 direct", nil, "[::ffff:203.0.113.7]:80", nil, "203.0.113.7"},
		{"4in6 trusted proxy", proxies, "[::ffff:10.0.0.1]:80", []string{"198.51.100.9"}, "198.51.100.9"},
		{"4in6 XFF", proxies, "10.0.0.1:80", []string{"::ffff:198.51.100.9"}, "198.51.100.9"},
		{"4in6 XFF of a proxy", proxies, "10.0.0.1:80", []string{"198.51.100.9, ::ffff:10.0.0.2"}, "198.51.100.9"},
		{"4in6 trusted prefix", []string{"::ffff:10.0.0.0/104"}, "10.0.0.1:80", []string{"198.51.100.9"}, "198.51.100.9"},

		// Caps: 64 entries, 4 KiB, read from the right.
		{"63 proxies then the client", proxies, "10.0.0.1:80", []string{"198.51.100.9, " + many(63, "10.0.0.2")}, "198.51.100.9"},
		{"client beyond 64 entries", proxies, "10.0.0.1:80", []string{"198.51.100.9, " + many(64, "10.0.0.2")}, "10.0.0.2"},
		{"long garbage left of the client", proxies, "10.0.0.1:80", []string{strings.Repeat("x", 8000) + ", 198.51.100.9"}, "198.51.100.9"},
		{"client beyond 4 KiB", proxies, "10.0.0.1:80", []string{"198.51.100.9," + strings.Repeat(" ", 5000) + ", 10.0.0.2"}, "10.0.0.2"},
		{"many header lines", proxies, "10.0.0.1:80", append([]string{"198.51.100.9"}, strings.Split(many(70, "10.0.0.2"), ", ")...), "10.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newClientIPs(mustPrefixes(t, tt.trusted...))
			got := c.of(requestFrom(tt.remote, tt.xff...))
			var want netip.Addr
			if tt.want != "" {
				want = netip.MustParseAddr(tt.want)
			}
			if got != want {
				t.Fatalf("of(%q, %q) = %v, want %v", tt.remote, tt.xff, got, want)
			}
		})
	}
}

func TestClientIPTrustedPrefixesCopied(t *testing.T) {
	t.Parallel()
	ps := mustPrefixes(t, "10.0.0.0/8")
	c := newClientIPs(ps)
	ps[0] = netip.MustParsePrefix("0.0.0.0/0") // the caller's slice is not shared
	if got := c.of(requestFrom("203.0.113.7:1", "1.2.3.4")); got != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("got %v", got)
	}
}

func BenchmarkClientIP(b *testing.B) {
	c := newClientIPs(mustPrefixes(b, "10.0.0.0/8", "fd00::/8"))
	r := requestFrom("10.0.0.1:80", "6.6.6.6, 198.51.100.9, 10.0.0.2")
	b.ReportAllocs()
	for b.Loop() {
		if !c.of(r).IsValid() {
			b.Fatal("invalid")
		}
	}
}

func FuzzClientIP(f *testing.F) {
	c := newClientIPs(mustPrefixes(f, "10.0.0.0/8", "fd00::/8", "::ffff:192.0.2.0/120"))
	f.Add("203.0.113.7:5555", "1.2.3.4")
	f.Add("10.0.0.1:80", "6.6.6.6, 198.51.100.9, 10.0.0.2")
	f.Add("[fd00::1]:443", "[2001:db8::7]:1234, unknown")
	f.Add("[::ffff:10.0.0.1]:80", "::ffff:198.51.100.9")
	f.Add("[fe80::1%eth0]:1", ",,,")
	f.Add("garbage", "1.2.3.4")
	f.Add("10.0.0.1:80", strings.Repeat("10.0.0.2,", 100))
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": strings.Split(xff, "\n")}}
		got := c.of(r)
		if got.Zone() != "" || got.Is4In6() {
			t.Fatalf("of(%q, %q) = %v: not normalised", remote, xff, got)
		}
		ap, err := netip.ParseAddrPort(remote)
		if err != nil {
			return
		}
		peer := ap.Addr().Unmap().WithZone("")
		if !c.isTrusted(peer) {
			if got != peer {
				t.Fatalf("of(%q, %q) = %v: an untrusted peer chose its IP", remote, xff, got)
			}
			return
		}
		if !got.IsValid() {
			t.Fatalf("of(%q, %q) = zero behind a trusted proxy", remote, xff)
		}
		if got == peer {
			return
		}
		for _, e := range strings.FieldsFunc(xff, func(r rune) bool { return r == ',' || r == '\n' }) {
			if parseHostIP(strings.TrimSpace(e)) == got {
				return
			}
		}
		t.Fatalf("of(%q, %q) = %v, which is neither the peer nor an entry", remote, xff, got)
	})
}
