package configs

import (
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
)

// NATSClientTLS is the client side of TLS to an external NATS.
type NATSClientTLS struct {
	// CAFile is a PEM file of the CA(s) that signed the servers'
	// certificates; empty trusts the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that verify clients (verify: true); both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether any client TLS setting is given.
func (t NATSClientTLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// NATSListenTLS secures the embedded server's client listener.
type NATSListenTLS struct {
	// CertFile and KeyFile are the server's PEM certificate and key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether the embedded listener uses TLS.
func (t NATSListenTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// urlHasUserInfo reports whether any entry of nats.url carries a user,
// password or token.
func urlHasUserInfo(s string) bool {
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if !strings.Contains(e, "://") {
			continue
		}
		if u, err := url.Parse(e); err == nil && u.User != nil {
			return true
		}
	}
	return false
}

// validateAuth checks the NATS authentication and TLS settings: with the
// embedded server only its listener's TLS applies; with nats.url at most
// one way to authenticate is given and every file named exists and is
// readable. A file's contents are never quoted back.
func (n *NATSConfig) validateAuth(ps *problems) {
	if n.URL == "" {
		for _, f := range [][2]string{
			{"nats.credentials_file", n.CredentialsFile}, {"nats.nkey_seed_file", n.NkeySeedFile},
			{"nats.user", n.User}, {"nats.password", n.Password}, {"nats.token", n.Token},
			{"nats.tls.ca_file", n.TLS.CAFile}, {"nats.tls.cert_file", n.TLS.CertFile}, {"nats.tls.key_file", n.TLS.KeyFile},
		} {
			if f[1] != "" {
				ps.add(f[0], "is only used with an external server; set nats.url or remove it (the embedded server creates its own credentials under data_dir/auth)")
			}
		}
		n.validateListen(ps)
		return
	}
	if n.ListenTLS.Enabled() {
		ps.add("nats.listen_tls", "secures the embedded server only; with nats.url configure TLS on your nats-server")
	}
	var methods []string
	if n.CredentialsFile != "" {
		methods = append(methods, "credentials_file")
	}
	if n.NkeySeedFile != "" {
		methods = append(methods, "nkey_seed_file")
	}
	if n.User != "" || n.Password != "" {
		methods = append(methods, "user/password")
		if n.User == "" || n.Password == "" {
			ps.add("nats.user", "user and password go together")
		}
	}
	if n.Token != "" {
		methods = append(methods, "token")
	}
	if urlHasUserInfo(n.URL) {
		methods = append(methods, "credentials in nats.url")
	}
	if len(methods) > 1 {
		ps.add("nats", "authentication methods are mutually exclusive, got %s", strings.Join(methods, " and "))
	}
	ps.readableFile("nats.credentials_file", n.CredentialsFile)
	ps.readableFile("nats.nkey_seed_file", n.NkeySeedFile)
	ps.readableFile("nats.tls.ca_file", n.TLS.CAFile)
	ps.readableFile("nats.tls.cert_file", n.TLS.CertFile)
	ps.readableFile("nats.tls.key_file", n.TLS.KeyFile)
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		ps.add("nats.tls", "cert_file and key_file go together")
	}
}

// validateListen refuses an embedded listener reachable from other
// machines without TLS, unless allow_insecure_listen says so.
func (n *NATSConfig) validateListen(ps *problems) {
	if n.ListenTLS.Enabled() {
		if n.ListenTLS.CertFile == "" || n.ListenTLS.KeyFile == "" {
			ps.add("nats.listen_tls", "cert_file and key_file go together")
		}
		ps.readableFile("nats.listen_tls.cert_file", n.ListenTLS.CertFile)
		ps.readableFile("nats.listen_tls.key_file", n.ListenTLS.KeyFile)
		return
	}
	host, _, err := net.SplitHostPort(n.Listen)
	if err != nil || n.AllowInsecureListen || loopbackHost(host) {
		return
	}
	ps.add("nats.listen", "%q is reachable from other machines but has no TLS: set nats.listen_tls.cert_file and key_file, listen on 127.0.0.1, or set nats.allow_insecure_listen: true", n.Listen)
}

// loopbackHost reports whether host only answers on this machine.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readableFile checks that path, when set, names a readable regular file.
func (ps *problems) readableFile(field, path string) {
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		ps.add(field, "cannot read %s: %v", path, unwrapPathErr(err))
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		ps.add(field, "%s is not a regular file", path)
	}
}

// unwrapPathErr reduces an *os.PathError to its cause.
func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// authLogValue logs the authentication and TLS settings with every
// secret (password, token) redacted; file paths are shown, never their
// contents.
func (n NATSConfig) authLogValue() slog.Value {
	return slog.GroupValue(
		slog.String("nkey_seed_file", n.NkeySeedFile),
		slog.String("user", n.User),
		slog.String("password", redactIfSet(n.Password)),
		slog.String("token", redactIfSet(n.Token)),
		slog.String("tls_ca_file", n.TLS.CAFile),
		slog.String("tls_cert_file", n.TLS.CertFile),
		slog.String("tls_key_file", n.TLS.KeyFile),
		slog.String("listen_tls_cert_file", n.ListenTLS.CertFile),
		slog.String("listen_tls_key_file", n.ListenTLS.KeyFile),
		slog.Bool("allow_insecure_listen", n.AllowInsecureListen),
	)
}

// RedactNATSURL returns the NATS URL list s with the user info of every
// entry (user, password or token) replaced by "[redacted]", for logs and
// messages.
func RedactNATSURL(s string) string { return redactNATSURL(s) }
