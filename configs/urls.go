package configs

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// anyPortSuffix ends an origin pattern that allows any port.
const anyPortSuffix = ":*"

// checkOrigin returns what is wrong with an allowed-origin pattern, or "".
// Valid patterns are "scheme://host", "scheme://host:port" and
// "scheme://host:*" (any port) with scheme http or https, in any letter
// case. Hosts are DNS names or IP literals; wildcard hosts, paths, queries,
// fragments, user info and percent-encoding are rejected.
func checkOrigin(s string) string {
	const want = `want "scheme://host[:port]" or "scheme://host:*"`
	s = strings.ToLower(s)
	switch {
	case s == "":
		return "must not be empty"
	case strings.ContainsAny(s, " \t\r\n"):
		return "must not contain spaces"
	case strings.Contains(s, "%"):
		return "must not contain percent-encoding"
	case strings.Contains(s, "#"):
		return "must not have a fragment"
	case strings.Contains(s, "?"):
		return "must not have a query"
	}
	rest, anyPort := strings.CutSuffix(s, anyPortSuffix)
	u, err := url.Parse(rest)
	if err != nil {
		return "not a valid origin, " + want
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "scheme must be http or https, " + want
	case u.Opaque != "":
		return "not a valid origin, " + want
	case u.User != nil:
		return "must not contain user info"
	case u.Path != "" || u.RawPath != "":
		return "must not have a path (not even a trailing '/'), " + want
	case u.Hostname() == "":
		return "host must not be empty"
	case anyPort && u.Port() != "":
		return "must give either a port or ':*', not both"
	}
	if msg := checkHost(u.Hostname(), strings.HasPrefix(u.Host, "[")); msg != "" {
		return msg
	}
	if strings.HasSuffix(u.Host, ":") {
		return "port must not be empty; use ':*' for any port"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("port must be 1..65535 or '*', got %q", p)
		}
	}
	return ""
}

// checkHost returns what is wrong with the host of an origin, or "".
// bracketed says the host was written as an IPv6 literal "[...]".
func checkHost(host string, bracketed bool) string {
	if bracketed {
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return fmt.Sprintf("invalid IPv6 address %q", host)
		}
		return ""
	}
	if strings.Contains(host, "*") {
		return "wildcard hosts are not supported; only the port may be '*'"
	}
	if strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") || strings.Contains(host, "..") {
		return fmt.Sprintf("invalid host %q", host)
	}
	for i := range len(host) {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Sprintf("invalid character %q in host %q", c, host)
		}
	}
	return ""
}

// checkPublicURL returns what is wrong with public_url, or "": it must be an
// absolute http(s) URL with a host, optionally a path, and nothing else.
func checkPublicURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "not a valid URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("must be an http:// or https:// URL, got %q", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Sprintf("must include a host, got %q", s)
	case u.User != nil:
		return "must not contain user info"
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return fmt.Sprintf("must not have a query or fragment, got %q", s)
	}
	return ""
}

// natsScheme reports whether s is a URL scheme the NATS client accepts.
func natsScheme(s string) bool {
	switch s {
	case "nats", "tls", "ws", "wss":
		return true
	}
	return false
}

// checkNATSURL returns what is wrong with one entry of nats.url, or "".
// Entries are "scheme://[user@]host[:port]" or bare "host:port". The URL
// may hold credentials, so it is never quoted back.
func checkNATSURL(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return "must be a URL such as nats://host:4222 or host:port"
		}
		return ""
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "not a valid URL"
	case !natsScheme(u.Scheme):
		return "scheme must be nats, tls, ws or wss"
	case u.Hostname() == "":
		return "must include a host"
	}
	return ""
}

// redactNATSURL returns nats.url with any user info (user, password or
// token) in its entries replaced by "[redacted]", for logging.
func redactNATSURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		at := strings.LastIndex(p, "@")
		if at < 0 {
			parts[i] = p
			continue
		}
		scheme, _, found := strings.Cut(p[:at], "://")
		if !found {
			scheme = ""
		} else {
			scheme += "://"
		}
		parts[i] = scheme + redacted + p[at:]
	}
	return strings.Join(parts, ",")
}
