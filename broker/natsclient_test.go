package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// testPKI is a CA made in the test with a server certificate for
// 127.0.0.1 and a client certificate, as PEM files.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "parley test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(cn+".pem", "CERTIFICATE", der), write(cn+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p := testPKI{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf(2, "server", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.clientCert, p.clientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth, nil)
	return p
}

// startExternal starts a broker against url configured by set, and
// returns Start's error.
func startExternal(t *testing.T, url string, set func(*configs.NATSConfig)) error {
	t.Helper()
	cfg := configs.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.URL = url
	cfg.NATS.StartTimeout = 5 * time.Second
	set(&cfg.NATS)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	b := New(cfg, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Close()
	return b.Ready(ctx)
}

// TestExternalNATSTLSClientCert: an external NATS with TLS from a private
// CA that verifies client certificates (and wants a password too) accepts
// the broker with nats.tls and user/password, and refuses it without the
// client certificate or without the CA.
func TestExternalNATSTLSClientCert(t *testing.T) {
	pki := newTestPKI(t)
	s := agenttest.RunNATS(t, func(o *server.Options) {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.serverCert, KeyFile: pki.serverKey, CaFile: pki.ca, Verify: true})
		if err != nil {
			t.Fatal(err)
		}
		o.TLSConfig, o.TLS, o.TLSVerify = tc, true, true
		o.Username, o.Password = "parley", "tls-pass-123"
	})
	url := fmt.Sprintf("tls://127.0.0.1:%d", s.Addr().(*net.TCPAddr).Port)
	full := func(n *configs.NATSConfig) {
		n.TLS = configs.NATSClientTLS{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}
		n.User, n.Password = "parley", "tls-pass-123"
	}
	if err := startExternal(t, url, full); err != nil {
		t.Fatalf("TLS with client certificate: %v", err)
	}
	for name, set := range map[string]func(*configs.NATSConfig){
		"no client certificate": func(n *configs.NATSConfig) { full(n); n.TLS.CertFile, n.TLS.KeyFile = "", "" },
		"no CA":                 func(n *configs.NATSConfig) { full(n); n.TLS.CAFile = "" },
		"wrong password":        func(n *configs.NATSConfig) { full(n); n.Password = "nope" },
	} {
		if err := startExternal(t, url, set); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
	}
}

// TestExternalNATSAuthMethods: a creds file (from an operator-mode
// server), an nkey seed file and a token each authenticate the broker to
// an external NATS that requires them.
func TestExternalNATSAuthMethods(t *testing.T) {
	t.Run("creds", func(t *testing.T) {
		a, err := loadNATSAuth(t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		tune, err := a.serverOptions()
		if err != nil {
			t.Fatal(err)
		}
		creds, err := a.ensureCreds(RoleBroker, "parley")
		if err != nil {
			t.Fatal(err)
		}
		s := agenttest.RunNATS(t, tune)
		if err := startExternal(t, s.ClientURL(), func(n *configs.NATSConfig) { n.CredentialsFile = creds }); err != nil {
			t.Fatal(err)
		}
		if err := startExternal(t, s.ClientURL(), func(*configs.NATSConfig) {}); err == nil {
			t.Fatal("no credentials accepted")
		}
	})
	t.Run("nkey", func(t *testing.T) {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		p := filepath.Join(t.TempDir(), "user.nk")
		if err := os.WriteFile(p, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		s := agenttest.RunNATS(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
		if err := startExternal(t, s.ClientURL(), func(n *configs.NATSConfig) { n.NkeySeedFile = p }); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("token", func(t *testing.T) {
		s := agenttest.RunNATS(t, func(o *server.Options) { o.Authorization = "tok-0123456789" })
		if err := startExternal(t, s.ClientURL(), func(n *configs.NATSConfig) { n.Token = "tok-0123456789" }); err != nil {
			t.Fatal(err)
		}
		if err := startExternal(t, s.ClientURL(), func(n *configs.NATSConfig) { n.Token = "wrong" }); err == nil {
			t.Fatal("a wrong token was accepted")
		}
	})
}

// TestEmbeddedListenTLS: with nats.listen_tls the embedded listener speaks
// TLS with that certificate (a client trusting the CA connects with its
// credentials), while the broker's in-process connection needs none.
func TestEmbeddedListenTLS(t *testing.T) {
	pki := newTestPKI(t)
	cfg := configs.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:-1"
	cfg.NATS.ListenTLS = configs.NATSListenTLS{CertFile: pki.serverCert, KeyFile: pki.serverKey}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b := New(cfg, slog.New(slog.DiscardHandler))
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	creds, err := b.CredsFile(RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(b.NATSClientURL(), nats.UserCredentials(creds), nats.RootCAs(pki.ca))
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	if !nc.TLSRequired() {
		t.Error("the listener does not require TLS")
	}
	nc.Close()
	if nc, err := nats.Connect(b.NATSClientURL(), nats.UserCredentials(creds)); err == nil {
		nc.Close()
		t.Fatal("a client not trusting the CA connected")
	}
}
