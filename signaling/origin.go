package signaling

import (
	"net"
	"net/url"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/parley-rtc/parley/configs"
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

// canonicalOrigin spells an origin one way: lower case, the scheme's
// default port left out ("HTTPS://A.com:443" → "https://a.com").
func canonicalOrigin(s string) string {
	o, ok := parseOrigin(s)
	if !ok {
		return strings.ToLower(s)
	}
	host := o.host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if o.port == defaultPort(o.scheme) {
		return o.scheme + "://" + host
	}
	return o.scheme + "://" + host + ":" + o.port
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

// matchDomain reports whether o's registrable domain (eTLD+1 by the public
// suffix list) is domain: "example.com" admits example.com and any
// subdomain, never acme.com.evil.net or example.co.uk.
func matchDomain(domain string, o origin) bool {
	if net.ParseIP(o.host) != nil {
		return false
	}
	etld1, err := publicsuffix.EffectiveTLDPlusOne(o.host)
	return err == nil && etld1 == domain
}

// originAllowed reports whether the Origin header value is allowed by any of
// the allowed_origins entries: origins, origin patterns or registrable
// domains.
func originAllowed(entries []string, header string) bool {
	o, ok := parseOrigin(header)
	if !ok {
		return false
	}
	for _, e := range entries {
		if configs.IsDomainEntry(e) {
			if matchDomain(strings.ToLower(e), o) {
				return true
			}
		} else if matchOrigin(e, o) {
			return true
		}
	}
	return false
}

// isDevHost reports whether host is this machine (localhost, 127.0.0.1, ::1).
func isDevHost(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// widgetAllows reports whether a widget may be embedded from the Origin:
// one of its allowed_origins entries admits it, or it allows dev origins
// and the page is on localhost.
func widgetAllows(w configs.WidgetConfig, header string) bool {
	if w.AllowDevOrigins {
		if o, ok := parseOrigin(header); ok && isDevHost(o.host) {
			return true
		}
	}
	return originAllowed(w.AllowedOrigins, header)
}
