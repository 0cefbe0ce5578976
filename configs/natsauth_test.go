package configs

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile creates a small readable file in a temporary directory.
func writeFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestValidateNATSAuth: the embedded listener is refused on a non-loopback
// address without TLS unless allowed; external authentication methods are
// mutually exclusive and their files must exist.
func TestValidateNATSAuth(t *testing.T) {
	t.Parallel()
	creds, seed, ca, cert, key := writeFile(t, "a.creds"), writeFile(t, "seed.nk"), writeFile(t, "ca.pem"), writeFile(t, "c.pem"), writeFile(t, "k.pem")
	missing := filepath.Join(t.TempDir(), "nope.creds")
	ext := func(f func(*NATSConfig)) func(*NATSConfig) {
		return func(n *NATSConfig) { n.URL = "nats://n1:4222"; f(n) }
	}
	bad := []problemCase[NATSConfig]{
		{"embedded on 0.0.0.0 without TLS", func(n *NATSConfig) { n.Listen = "0.0.0.0:4222" }, "nats.listen"},
		{"embedded on a LAN address without TLS", func(n *NATSConfig) { n.Listen = "192.168.1.5:4222" }, "nats.listen"},
		{"embedded on all interfaces without TLS", func(n *NATSConfig) { n.Listen = ":4222" }, "nats.listen"},
		{"embedded listen TLS without key", func(n *NATSConfig) { n.Listen = "0.0.0.0:4222"; n.ListenTLS.CertFile = cert }, "nats.listen_tls"},
		{"embedded listen TLS missing file", func(n *NATSConfig) { n.ListenTLS = NATSListenTLS{CertFile: missing, KeyFile: key} }, "nats.listen_tls.cert_file"},
		{"embedded with a creds file", func(n *NATSConfig) { n.CredentialsFile = creds }, "nats.credentials_file"},
		{"embedded with a token", func(n *NATSConfig) { n.Token = "t0k" }, "nats.token"},
		{"creds and nkey", ext(func(n *NATSConfig) { n.CredentialsFile, n.NkeySeedFile = creds, seed }), "nats"},
		{"user and token", ext(func(n *NATSConfig) { n.User, n.Password, n.Token = "u", "p", "t" }), "nats"},
		{"creds and URL user info", ext(func(n *NATSConfig) { n.URL = "nats://u:p@n1:4222"; n.CredentialsFile = creds }), "nats"},
		{"user without password", ext(func(n *NATSConfig) { n.User = "u" }), "nats.user"},
		{"missing creds file", ext(func(n *NATSConfig) { n.CredentialsFile = missing }), "nats.credentials_file"},
		{"missing nkey seed file", ext(func(n *NATSConfig) { n.NkeySeedFile = missing }), "nats.nkey_seed_file"},
		{"missing CA file", ext(func(n *NATSConfig) { n.TLS.CAFile = missing }), "nats.tls.ca_file"},
		{"creds is a directory", ext(func(n *NATSConfig) { n.CredentialsFile = t.TempDir() }), "nats.credentials_file"},
		{"client cert without key", ext(func(n *NATSConfig) { n.TLS.CertFile = cert }), "nats.tls"},
		{"listen TLS with external", ext(func(n *NATSConfig) { n.ListenTLS = NATSListenTLS{CertFile: cert, KeyFile: key} }), "nats.listen_tls"},
	}
	runProblemCases(t, bad, func(t *testing.T, edit func(*NATSConfig), field string) {
		c := Default()
		edit(&c.NATS)
		err := c.Validate()
		ve, ok := err.(*ValidationError)
		if !ok {
			t.Errorf("accepted (%v)", err)
			return
		}
		found := false
		for _, p := range ve.Problems {
			found = found || p.Field == field
			if strings.Contains(p.Message, "t0k") || strings.Contains(p.Message, ":p@") {
				t.Errorf("problem quotes a secret: %s", p.Message)
			}
		}
		if !found {
			t.Errorf("no problem on %s: %v", field, err)
		}
	})
	good := []func(*NATSConfig){
		func(n *NATSConfig) { n.Listen = "127.0.0.1:4222" },
		func(n *NATSConfig) { n.Listen = "[::1]:-1" },
		func(n *NATSConfig) { n.Listen = "localhost:4222" },
		func(n *NATSConfig) { n.Listen = "0.0.0.0:4222"; n.AllowInsecureListen = true },
		func(n *NATSConfig) {
			n.Listen = "0.0.0.0:4222"
			n.ListenTLS = NATSListenTLS{CertFile: cert, KeyFile: key}
		},
		ext(func(n *NATSConfig) {
			n.CredentialsFile = creds
			n.TLS = NATSClientTLS{CAFile: ca, CertFile: cert, KeyFile: key}
		}),
		ext(func(n *NATSConfig) { n.NkeySeedFile = seed }),
		ext(func(n *NATSConfig) { n.User, n.Password = "u", "p" }),
		ext(func(n *NATSConfig) { n.Token = "t0k" }),
		ext(func(n *NATSConfig) { n.URL = "nats://u:p@n1:4222"; n.TLS.CAFile = ca }),
	}
	for i, f := range good {
		c := Default()
		f(&c.NATS)
		if err := c.Validate(); err != nil {
			t.Errorf("good case %d rejected: %v", i, err)
		}
	}
}

// TestNATSSecretsRedacted: the password, the token and URL user info never
// reach a log line or a printed config.
func TestNATSSecretsRedacted(t *testing.T) {
	t.Parallel()
	c := Default()
	c.NATS.URL = "nats://alice:urlpass@n1:4222,nats://urltoken@n2:4222"
	c.NATS.User, c.NATS.Password, c.NATS.Token = "bob", "hunter2pw", "s3cr3ttok"
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", c)
	printed := buf.String() + c.NATS.String() + c.NATS.GoString()
	for _, s := range []string{"urlpass", "urltoken", "hunter2pw", "s3cr3ttok"} {
		if strings.Contains(printed, s) {
			t.Errorf("%q leaked: %s", s, printed)
		}
	}
	if !strings.Contains(buf.String(), `"password":"[redacted]"`) {
		t.Errorf("password not shown as redacted: %s", buf.String())
	}
}
