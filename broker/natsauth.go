package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/parley-rtc/parley/configs"
)

// The embedded server runs NATS's decentralized JWT authentication: an
// operator Parley creates on first start trusts two accounts, SYS (the
// server's system account) and PARLEY (everything Parley stores and every
// client). Users are JWTs signed by the PARLEY account key, so a new user
// (an agent's credentials) can be issued while the server runs, without a
// restart or a configuration reload: the server checks a user JWT's
// signature chain, not a list of users. The account JWTs are served from an
// in-process memory resolver, built again from the seeds at every start.
//
// Why this scheme rather than the alternatives: a users list in the server
// configuration (user/password or nkey users with permissions) would need
// a configuration reload, signalled from the process that runs the server,
// for every new agent, and `parley agents credentials` runs in another
// process; an auth callout service would put a Parley round trip into
// every connect and fail closed whenever that service is down. With JWTs
// anything that can read the account seed (the broker's admin API, or the
// CLI on the same data directory while `parley serve` runs) issues a user
// offline, and the user's permissions travel inside its signed JWT, where
// NATS enforces them. The cost: a user JWT cannot be taken back without a
// revocation in the account JWT, which Parley does not manage yet.
//
// Files under <data-dir>/auth (directory 0700, files 0600):
//
//	operator.nk, sys-account.nk, account.nk   seeds of the operator and the two accounts
//	broker.creds                               the broker (full permissions)
//	operator.creds                             operator tools: parley rooms/keys, the nats CLI
//	agent-<name>.creds                         an agent worker (see agentPermissions)
const (
	authDirName        = "auth"
	operatorSeedFile   = "operator.nk"
	sysAccountSeedFile = "sys-account.nk"
	accountSeedFile    = "account.nk"

	// RoleBroker is the broker's own credentials.
	RoleBroker = "broker"
	// RoleOperator is the credentials of operator tools.
	RoleOperator = "operator"

	// accountName is the name of the account holding Parley's data.
	accountName = "PARLEY"
)

// AgentRole is the role name of the credentials of agent.
func AgentRole(agent string) string { return agentRolePrefix + agent }

// AuthDir is where a data directory keeps the embedded server's
// credentials.
func AuthDir(dataDir string) string { return filepath.Join(dataDir, authDirName) }

// CredsPath is the .creds file of role in dataDir (it may not exist yet).
func CredsPath(dataDir, role string) string {
	return filepath.Join(AuthDir(dataDir), role+".creds")
}

// natsAuth is the operator and accounts of an embedded server, loaded from
// (or created in) a data directory.
type natsAuth struct {
	dir      string
	operator nkeys.KeyPair
	sys      nkeys.KeyPair
	account  nkeys.KeyPair
	accPub   string
}

// loadNATSAuth loads the operator and account keys of dataDir, creating
// them when create is set and they do not exist yet.
func loadNATSAuth(dataDir string, create bool) (*natsAuth, error) {
	dir := AuthDir(dataDir)
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("broker: nats auth dir: %w", unwrapPath(err))
		}
		// MkdirAll keeps an existing directory's mode: tighten it.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("broker: nats auth dir: %w", unwrapPath(err))
		}
	}
	a := &natsAuth{dir: dir}
	var err error
	if a.operator, err = loadSeed(dir, operatorSeedFile, create, nkeys.CreateOperator); err != nil {
		return nil, err
	}
	if a.sys, err = loadSeed(dir, sysAccountSeedFile, create, nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.account, err = loadSeed(dir, accountSeedFile, create, nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.accPub, err = a.account.PublicKey(); err != nil {
		return nil, err
	}
	return a, nil
}

// loadSeed reads the seed in dir/name, or creates one with mk when create is
// set and the file does not exist.
func loadSeed(dir, name string, create bool, mk func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) && create {
		kp, err := mk()
		if err != nil {
			return nil, fmt.Errorf("broker: nats auth: %w", err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, fmt.Errorf("broker: nats auth: %w", err)
		}
		if err := writeSecretOnce(p, append(seed, '\n'), true); err != nil {
			return nil, err
		}
		// Another process may have won the race: read back what is there.
		b, err = os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("broker: nats auth: %w", unwrapPath(err))
		}
	} else if err != nil {
		return nil, fmt.Errorf("broker: nats auth %s: %w", p, unwrapPath(err))
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("broker: nats auth %s: not a valid nkey seed", p)
	}
	return kp, nil
}

// writeSecretOnce writes data to path with mode 0600 unless path exists:
// the data goes to a temporary file first and is linked into place, so a
// reader never sees a partial file and a concurrent writer's file wins.
// durable fsyncs the file and its directory first: a seed lost to a power
// failure would hide the store (it lives under the account's public key),
// while a lost .creds file is simply issued again.
func writeSecretOnce(path string, data []byte, durable bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("broker: nats auth: %w", unwrapPath(err))
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, werr := f.Write(data)
	var serr error
	if durable {
		serr = f.Sync()
	}
	if err := errors.Join(werr, f.Chmod(0o600), serr, f.Close()); err != nil {
		return fmt.Errorf("broker: nats auth: write %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("broker: nats auth: %w", unwrapPath(err))
	}
	if !durable {
		return nil
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("broker: nats auth: %w", unwrapPath(err))
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("broker: nats auth: sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}

// accountJWTs returns the operator claims and the account JWTs, signed now
// by the operator key.
func (a *natsAuth) accountJWTs() (*jwt.OperatorClaims, map[string]string, error) {
	opPub, err := a.operator.PublicKey()
	if err != nil {
		return nil, nil, err
	}
	sysPub, err := a.sys.PublicKey()
	if err != nil {
		return nil, nil, err
	}
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "parley"
	oc.SystemAccount = sysPub
	// Encoding checks the claims; the server takes them decoded.
	if _, err := oc.Encode(a.operator); err != nil {
		return nil, nil, fmt.Errorf("broker: nats auth: operator: %w", err)
	}
	sys := jwt.NewAccountClaims(sysPub)
	sys.Name = "SYS"
	// The server's disconnect events of PARLEY's clients, for PARLEY:
	// the broker takes a worker whose connection closed as gone at once.
	disconnects := jwt.Subject(disconnectEventSubject(a.accPub))
	sys.Exports.Add(&jwt.Export{Name: "parley-disconnects", Subject: disconnects, Type: jwt.Stream})
	sysJWT, err := sys.Encode(a.operator)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: nats auth: system account: %w", err)
	}
	acc := jwt.NewAccountClaims(a.accPub)
	acc.Name = accountName
	// JetStream with no account limits: the store is bounded by the
	// server's own nats.max_store_bytes and the streams' limits.
	acc.Limits.JetStreamLimits = jwt.JetStreamLimits{
		MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit,
		Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit,
	}
	acc.Imports.Add(&jwt.Import{Name: "parley-disconnects", Subject: disconnects, Account: sysPub, Type: jwt.Stream})
	accJWT, err := acc.Encode(a.operator)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: nats auth: account: %w", err)
	}
	return oc, map[string]string{sysPub: sysJWT, a.accPub: accJWT}, nil
}

// disconnectEventSubject is where the server announces that a client of
// account (its public key) disconnected (server.DisconnectEventMsg).
func disconnectEventSubject(account string) string { return "$SYS.ACCOUNT." + account + ".DISCONNECT" }

// serverOptions returns a tune function turning on operator mode: only
// users of the trusted accounts connect; anonymous clients are refused.
func (a *natsAuth) serverOptions() (func(*server.Options), error) {
	oc, accounts, err := a.accountJWTs()
	if err != nil {
		return nil, err
	}
	res := &server.MemAccResolver{}
	for pub, j := range accounts {
		if err := res.Store(pub, j); err != nil {
			return nil, fmt.Errorf("broker: nats auth: %w", err)
		}
	}
	return func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{oc}
		o.AccountResolver = res
		o.SystemAccount = oc.SystemAccount
	}, nil
}

// issueUser signs a new user of the PARLEY account named name with perms,
// and returns it as the text of a .creds file. It needs no running server.
func (a *natsAuth) issueUser(name string, perms jwt.Permissions) ([]byte, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, err := ukp.PublicKey()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	uc.Permissions = perms
	ujwt, err := uc.Encode(a.account)
	if err != nil {
		return nil, fmt.Errorf("broker: nats auth: user %s: %w", name, err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(ujwt, seed)
}

// ensureCreds returns the path of role's .creds file, issuing it first if
// it does not exist, was not signed by this account (left from a lost
// auth directory) or carries other permissions (nats.prefix changed).
func (a *natsAuth) ensureCreds(role, prefix string) (string, error) {
	perms, err := userPermissions(role, prefix)
	if err != nil {
		return "", err
	}
	p := filepath.Join(a.dir, role+".creds")
	if b, err := os.ReadFile(p); err == nil {
		if a.current(b, perms) {
			return p, nil
		}
		// A concurrent caller may have removed it already.
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("broker: nats auth: %w", unwrapPath(err))
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("broker: nats auth: %w", unwrapPath(err))
	}
	creds, err := a.issueUser("parley-"+role, perms)
	if err != nil {
		return "", err
	}
	if err := writeSecretOnce(p, creds, false); err != nil {
		return "", err
	}
	return p, nil
}

// current reports whether creds holds a user JWT issued by this account
// with permissions perms.
func (a *natsAuth) current(creds []byte, perms jwt.Permissions) bool {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return false
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil || uc.Issuer != a.accPub {
		return false
	}
	have, err1 := json.Marshal(uc.Permissions)
	want, err2 := json.Marshal(perms)
	return err1 == nil && err2 == nil && bytes.Equal(have, want)
}

// migrateGlobalStore moves a JetStream store written before authentication
// (the server's global account, jetstream/$G) to the PARLEY account, so an
// upgraded data directory keeps its conversations, keys and widgets.
func (a *natsAuth) migrateGlobalStore(dataDir string, log *slog.Logger) error {
	old := filepath.Join(dataDir, "jetstream", server.DEFAULT_GLOBAL_ACCOUNT)
	dst := filepath.Join(dataDir, "jetstream", a.accPub)
	if _, err := os.Stat(old); err != nil {
		return nil
	}
	if _, err := os.Stat(dst); err == nil {
		log.Warn("the data directory holds a store from before NATS authentication beside the current one; it is left alone",
			"old", old, "current", dst)
		return nil
	}
	if err := os.Rename(old, dst); err != nil {
		return fmt.Errorf("broker: moving the store to the %s account: %w", accountName, unwrapPath(err))
	}
	log.Info("moved the JetStream store written before NATS authentication to the PARLEY account", "from", old, "to", dst)
	return nil
}

// credsOption authenticates with the .creds file at path, read once now
// (so a later change of the file does not break reconnects).
func credsOption(path string) (nats.Option, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("broker: nats credentials: %w", unwrapPath(err))
	}
	o, err := credsBytesOption(b)
	if err != nil {
		return nil, fmt.Errorf("broker: nats credentials %s: %w", path, err)
	}
	return o, nil
}

// credsBytesOption authenticates with the text of a .creds file.
func credsBytesOption(b []byte) (nats.Option, error) {
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return nil, err
	}
	kp, err := jwt.ParseDecoratedNKey(b)
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	return nats.UserJWTAndSeed(tok, string(seed)), nil
}

// startEmbedded starts the embedded server with authentication: it loads
// or creates the data directory's credentials (the broker's, the operator
// tools' and the echo agent's), moves a store from before authentication
// into the PARLEY account, and returns the options the broker connects
// with (in-process, as RoleBroker).
func (b *Broker) startEmbedded() ([]nats.Option, error) {
	if err := checkDataDir(b.cfg.DataDir); err != nil {
		return nil, err
	}
	auth, err := loadNATSAuth(b.cfg.DataDir, true)
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	roles := []string{RoleBroker, RoleOperator}
	if b.cfg.EchoAgent.Enabled {
		roles = append(roles, AgentRole(b.cfg.EchoAgent.Agent))
	}
	for _, r := range roles {
		if paths[r], err = auth.ensureCreds(r, b.cfg.NATS.Prefix); err != nil {
			return nil, err
		}
	}
	if err := auth.migrateGlobalStore(b.cfg.DataDir, b.log); err != nil {
		return nil, err
	}
	authTune, err := auth.serverOptions()
	if err != nil {
		return nil, err
	}
	tlsTune, err := listenTLS(b.cfg.NATS.ListenTLS)
	if err != nil {
		return nil, err
	}
	ns, err := EmbeddedNATS(b.cfg.NATS.Listen, b.cfg.DataDir,
		EmbeddedSync{Always: b.cfg.NATS.Sync == configs.SyncAlways, Interval: b.cfg.NATS.SyncInterval},
		b.rootLog, func(o *server.Options) {
			if b.cfg.NATS.MaxStoreBytes > 0 {
				o.JetStreamMaxStore = b.cfg.NATS.MaxStoreBytes
			}
		}, authTune, tlsTune)
	if err != nil {
		return nil, err
	}
	b.ns, b.auth = ns, auth
	bo, err := credsOption(paths[RoleBroker])
	if err != nil {
		b.shutdownServer()
		return nil, err
	}
	b.log.Info("embedded nats-server started (anonymous clients refused)", "url", ns.ClientURL(), "store_dir", b.cfg.DataDir,
		"tls", b.cfg.NATS.ListenTLS.Enabled(), "credentials_dir", auth.dir, "operator_creds", paths[RoleOperator])
	return []nats.Option{nats.InProcessServer(ns), bo}, nil
}

// listenTLS returns a tune function securing the embedded listener with
// t's certificate (a no-op without one).
func listenTLS(t configs.NATSListenTLS) (func(*server.Options), error) {
	if !t.Enabled() {
		return func(*server.Options) {}, nil
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.CertFile, KeyFile: t.KeyFile})
	if err != nil {
		return nil, fmt.Errorf("broker: nats.listen_tls: %w", err)
	}
	return func(o *server.Options) { o.TLSConfig, o.TLS = tc, true }, nil
}

// CredsDir is the directory holding the embedded server's credentials,
// or "" with an external NATS.
func (b *Broker) CredsDir() string {
	if b.auth == nil {
		return ""
	}
	return b.auth.dir
}

// CredsFile returns the .creds file of role on the embedded server
// (RoleBroker, RoleOperator or AgentRole(name)), issuing it if needed; ""
// with an external NATS, whose credentials Parley does not manage.
func (b *Broker) CredsFile(role string) (string, error) {
	if b.auth == nil {
		return "", nil
	}
	return b.auth.ensureCreds(role, b.cfg.NATS.Prefix)
}

// ClientOptions returns the options an in-process tool or test connects
// to the broker's NATS with as role: the credentials of role on the
// embedded server; with an external NATS, the broker's own configured
// authentication and TLS. An agent's role also gets the agent's inbox
// prefix, where its credentials allow replies to arrive.
func (b *Broker) ClientOptions(role string) ([]nats.Option, error) {
	var opts []nats.Option
	if agent, ok := strings.CutPrefix(role, agentRolePrefix); ok {
		if err := checkAgentName(agent); err != nil {
			return nil, err
		}
		opts = append(opts, nats.CustomInboxPrefix(b.subj.Inbox(agent)))
	}
	if b.auth == nil {
		ext, err := externalAuthOptions(b.cfg.NATS)
		return append(ext, opts...), err
	}
	p, err := b.CredsFile(role)
	if err != nil {
		return nil, err
	}
	o, err := credsOption(p)
	if err != nil {
		return nil, err
	}
	return append(opts, o), nil
}
