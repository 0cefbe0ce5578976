package signaling

import (
	"net/url"
	"strings"
)

// origin is a parsed browser Origin: scheme, host and explicit port.
type origin struct {
	scheme, host, port string
}

// parseOrigin parses an Origin header value ("scheme://host[:port]"). The
// opaque origin "null" and anything with a path, query or user info is
// rejected.
func parseOrigin(s string) (origin, bool) {
	if s == "" || s == "null" || len(s) > 2048 {
		return origin{}, false
	}
	u, err := url.Parse(strings.ToLower(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return origin{}, false
	}
	o := origin{scheme: u.Scheme, host: u.Hostname(), port: u.Port()}
	if o.port == "" {
		o.port = defaultPort(o.scheme)
	}
	return o, o.host != ""
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// matchOrigin reports whether o is admitted by one allowed-origin pattern:
// "scheme://host[:port]" (the scheme's default port when none is given) or
// "scheme://host:*" (any port). Patterns were validated by configs.
func matchOrigin(pattern string, o origin) bool {
	rest, anyPort := strings.CutSuffix(strings.ToLower(pattern), ":*")
	u, err := url.Parse(rest)
	if err != nil || u.Scheme != o.scheme || u.Hostname() != o.host {
		return false
	}
	if anyPort {
		return true
	}
	port := u.Port()
	if port == "" {
		port = defaultPort(u.Scheme)
	}
	return port == o.port
}

// originAllowed reports whether the Origin header value is allowed by any of
// the patterns.
func originAllowed(patterns []string, header string) bool {
	o, ok := parseOrigin(header)
	if !ok {
		return false
	}
	for _, p := range patterns {
		if matchOrigin(p, o) {
			return true
		}
	}
	return false
}
