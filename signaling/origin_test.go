package signaling

import (
	"strings"
	"testing"
)

func TestParseOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want origin
		ok   bool
	}{
		{"http://a.com", origin{"http", "a.com", "80"}, true},
		{"https://a.com", origin{"https", "a.com", "443"}, true},
		{"http://a.com:80", origin{"http", "a.com", "80"}, true},
		{"https://a.com:443", origin{"https", "a.com", "443"}, true},
		{"http://a.com:8080", origin{"http", "a.com", "8080"}, true},
		{"https://a.com:80", origin{"https", "a.com", "80"}, true},
		{"http://a.com/", origin{"http", "a.com", "80"}, true},
		{"HTTPS://WWW.Example.COM:8443", origin{"https", "www.example.com", "8443"}, true},
		{"http://localhost:3000", origin{"http", "localhost", "3000"}, true},
		{"http://127.0.0.1:5173", origin{"http", "127.0.0.1", "5173"}, true},
		{"http://[::1]:3000", origin{"http", "::1", "3000"}, true},
		{"https://[2001:db8::1]", origin{"https", "2001:db8::1", "443"}, true},
		{"https://xn--bcher-kva.example", origin{"https", "xn--bcher-kva.example", "443"}, true},

		{"", origin{}, false},
		{"null", origin{}, false},
		{"NULL", origin{}, false}, // no scheme
		{"a.com", origin{}, false},
		{"//a.com", origin{}, false},
		{"ftp://a.com", origin{}, false},
		{"file:///etc/passwd", origin{}, false},
		{"javascript://a.com", origin{}, false},
		{"chrome-extension://abcdef", origin{}, false},
		{"http://", origin{}, false},
		{"http://:80", origin{}, false},
		{"http:a.com", origin{}, false},
		{"http:/a.com", origin{}, false},
		{"http://a.com/path", origin{}, false},
		{"http://evil.com/http://localhost", origin{}, false},
		{"http://a.com?x=1", origin{}, false},
		{"http://a.com#frag", origin{}, false},
		{"http://user@a.com", origin{}, false},
		{"http://user:pass@a.com", origin{}, false},
		{"http://a.com@evil.com", origin{}, false},
		{"http://a.com:abc", origin{}, false},
		{"http://a.com:-1", origin{}, false},
		{"http://a b.com", origin{}, false},
		{"http://a.com\r\nX: y", origin{}, false},
		{"http://a.com\x00", origin{}, false},
		{" http://a.com", origin{}, false},
		{"http://" + strings.Repeat("a", 2048), origin{}, false},
	}
	for _, tt := range tests {
		got, ok := parseOrigin(tt.in)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("parseOrigin(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestOriginAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		patterns []string
		origin   string
		want     bool
	}{
		{"exact", []string{"https://a.com"}, "https://a.com", true},
		{"exact with port", []string{"http://a.com:8080"}, "http://a.com:8080", true},
		{"default http port in origin", []string{"http://a.com"}, "http://a.com:80", true},
		{"default http port in pattern", []string{"http://a.com:80"}, "http://a.com", true},
		{"default https port in origin", []string{"https://a.com"}, "https://a.com:443", true},
		{"default https port in pattern", []string{"https://a.com:443"}, "https://a.com", true},
		{"trailing slash in origin", []string{"https://a.com"}, "https://a.com/", true},
		{"upper case origin", []string{"https://a.com"}, "HTTPS://A.COM", true},
		{"upper case pattern", []string{"HTTPS://A.Com"}, "https://a.com", true},
		{"second pattern", []string{"https://b.com", "https://a.com"}, "https://a.com", true},
		{"any port", []string{"http://localhost:*"}, "http://localhost:3000", true},
		{"any port, default port", []string{"http://localhost:*"}, "http://localhost", true},
		{"any port, upper case", []string{"HTTP://LOCALHOST:*"}, "http://localhost:1", true},
		{"any port ipv6", []string{"http://[::1]:*"}, "http://[::1]:8080", true},
		{"ipv4", []string{"http://127.0.0.1:*"}, "http://127.0.0.1:5173", true},

		{"other port", []string{"http://a.com"}, "http://a.com:8080", false},
		{"other explicit port", []string{"http://a.com:8080"}, "http://a.com:8081", false},
		{"https default port is not http's", []string{"https://a.com"}, "https://a.com:80", false},
		{"http default port is not https's", []string{"http://a.com"}, "http://a.com:443", false},
		{"scheme mismatch", []string{"https://a.com"}, "http://a.com", false},
		{"scheme mismatch same port", []string{"https://a.com:8443"}, "http://a.com:8443", false},
		{"scheme mismatch any port", []string{"https://localhost:*"}, "http://localhost:3000", false},
		{"host mismatch", []string{"https://a.com"}, "https://b.com", false},
		{"subdomain", []string{"https://a.com"}, "https://www.a.com", false},
		{"parent domain", []string{"https://www.a.com"}, "https://a.com", false},
		{"suffix trick", []string{"https://a.com"}, "https://a.com.evil.com", false},
		{"prefix trick", []string{"https://a.com"}, "https://evila.com", false},
		{"any port suffix trick", []string{"http://localhost:*"}, "http://localhost.evil.com", false},
		{"any port suffix trick with port", []string{"http://localhost:*"}, "http://localhost.evil.com:3000", false},
		{"any port prefix trick", []string{"http://localhost:*"}, "http://evillocalhost:3000", false},
		{"pattern in path", []string{"http://localhost:*"}, "http://evil.com/http://localhost", false},
		{"pattern in userinfo", []string{"http://localhost:*"}, "http://localhost@evil.com", false},
		{"pattern in userinfo with port", []string{"http://localhost:*"}, "http://localhost:80@evil.com", false},
		{"pattern in query", []string{"https://a.com"}, "https://evil.com?https://a.com", false},
		{"null", []string{"https://a.com"}, "null", false},
		{"null with null pattern", []string{"null"}, "null", false},
		{"empty origin", []string{"https://a.com"}, "", false},
		{"no patterns", nil, "https://a.com", false},
		{"empty pattern", []string{""}, "https://a.com", false},
		{"star pattern", []string{"*"}, "https://a.com", false},
		{"broken pattern", []string{"https://[::1"}, "https://a.com", false},
		{"path in origin", []string{"https://a.com"}, "https://a.com/x", false},
	}
	for _, tt := range tests {
		if got := originAllowed(tt.patterns, tt.origin); got != tt.want {
			t.Errorf("%s: originAllowed(%q, %q) = %v, want %v", tt.name, tt.patterns, tt.origin, got, tt.want)
		}
	}
}

func TestMatchOriginDirect(t *testing.T) {
	t.Parallel()
	o := origin{"https", "a.com", "443"}
	for pattern, want := range map[string]bool{
		"https://a.com":     true,
		"https://a.com:443": true,
		"https://a.com:*":   true,
		"https://a.com:444": false,
		"http://a.com":      false,
		"https://b.com":     false,
		"https://a.com:*:*": false,
		"a.com":             false,
		"":                  false,
	} {
		if got := matchOrigin(pattern, o); got != want {
			t.Errorf("matchOrigin(%q, %+v) = %v, want %v", pattern, o, got, want)
		}
	}
}

func FuzzOriginAllowed(f *testing.F) {
	for _, s := range [][2]string{
		{"https://a.com", "https://a.com"},
		{"http://localhost:*", "http://localhost:3000"},
		{"http://localhost:*", "http://localhost.evil.com"},
		{"http://localhost:*", "http://evil.com/http://localhost"},
		{"https://a.com:443", "HTTPS://A.COM"},
		{"http://[::1]:*", "http://[::1]:1"},
		{"null", "null"},
		{"", ""},
		{"http://a.com", "http://user@a.com:80"},
		{"https://a.com", "https://a.com%2f@evil.com"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, header string) {
		allowed := originAllowed([]string{pattern}, header)
		if !allowed {
			return
		}
		// An allowed origin is a bare scheme://host[:port] whose host is the
		// pattern's host.
		o, ok := parseOrigin(header)
		if !ok {
			t.Fatalf("allowed %q, which does not parse", header)
		}
		if o.scheme != "http" && o.scheme != "https" {
			t.Fatalf("allowed scheme %q", o.scheme)
		}
		rest := strings.TrimSuffix(strings.TrimPrefix(strings.ToLower(header), o.scheme+"://"), "/")
		if strings.ContainsAny(rest, "/@\\") {
			t.Fatalf("allowed %q with user info or a path", header)
		}
		if !matchOrigin(pattern, o) {
			t.Fatalf("originAllowed and matchOrigin disagree on %q / %q", pattern, header)
		}
	})
}
