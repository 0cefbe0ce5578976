package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// agentsCmd gives agent workers their NATS credentials (protocol v2):
//
//	parley agents credentials --agent NAME [--config FILE] [--data-dir DIR] [--prefix P] [--out FILE] [--permissions]
//	parley agents permissions --agent NAME [--config FILE] [--prefix P] [--json]
//
// credentials signs the agent's user with the account key in the data
// directory's auth/ (broker.EnsureAgentCreds); a running `parley serve`
// accepts it at once, since the embedded server checks a user JWT's
// signature chain rather than a list of users (broker/natsauth.go). It
// needs no connection to NATS. permissions prints the nats-server block
// that gives an agent's user the same rights on an external cluster.
func agentsCmd(args []string, stdout, stderr io.Writer) int {
	fs := newSubcommands("parley agents", agentsUsage, []string{"credentials", "permissions"}, args, stderr)
	sub := fs.sub
	agent := fs.String("agent", "", "the agent name (required): one NATS subject token")
	configPath := fs.String("config", os.Getenv("PARLEY_CONFIG"), "the YAML configuration of parley serve, for its data_dir, nats.prefix and nats.url (PARLEY_CONFIG)")
	dataDir := fs.String("data-dir", "", "data directory of the parley serve with the embedded NATS (default: the configuration's data_dir)")
	prefix := fs.String("prefix", "", "subject prefix, nats.prefix (default: the configuration's)")
	out := fs.String("out", "", "credentials: write them to this file (mode 0600) instead of stdout")
	perms := fs.Bool("permissions", false, "credentials: print the permission block for an external NATS instead")
	asJSON := fs.Bool("json", false, "permissions: print JSON")
	if code, done := fs.parse(args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parley agents %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	if *agent == "" {
		fmt.Fprintf(stderr, "parley agents %s: --agent NAME is required\n", sub)
		return 2
	}
	cfg, err := configs.Load(*configPath, nil)
	if err != nil {
		fmt.Fprintf(stderr, "parley agents %s: configuration %s: %v\n", sub, orDefault(*configPath, "(defaults and PARLEY_* environment)"), err)
		return 1
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if *prefix != "" {
		cfg.NATS.Prefix = *prefix
	}
	p, err := broker.AgentPermissions(cfg.NATS.Prefix, *agent)
	if err != nil {
		fmt.Fprintf(stderr, "parley agents %s: %v\n", sub, err)
		return 2
	}
	if sub == "permissions" || *perms {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(p)
			return 0
		}
		fmt.Fprint(stdout, p.ServerConfig())
		return 0
	}
	if cfg.NATS.URL != "" && *dataDir == "" {
		fmt.Fprintf(stderr, "parley agents credentials: this deployment uses an external NATS (nats.url %s); Parley does not manage its users.\n"+
			"Give the NATS user of agent %q these permissions there (parley agents permissions --agent %s prints them alone):\n\n%s",
			configs.RedactNATSURL(cfg.NATS.URL), *agent, *agent, p.ServerConfig())
		return 1
	}
	path, err := broker.EnsureAgentCreds(cfg.DataDir, cfg.NATS.Prefix, *agent)
	if errors.Is(err, broker.ErrNoCredentials) {
		fmt.Fprintf(stderr, "parley agents credentials: no embedded NATS credentials in %s: start parley serve with --data-dir %s first (or pass the --data-dir or --config it uses).\n"+
			"If this deployment uses an external NATS instead, give the NATS user of agent %q these permissions there:\n\n%s",
			broker.AuthDir(cfg.DataDir), cfg.DataDir, *agent, p.ServerConfig())
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley agents credentials: %v\n", err)
		return 1
	}
	creds, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "parley agents credentials: %v\n", err)
		return 1
	}
	use := path
	if *out != "" {
		if err := writeFile0600(*out, creds); err != nil {
			fmt.Fprintf(stderr, "parley agents credentials: %v\n", err)
			return 1
		}
		use = *out
		fmt.Fprintf(stderr, "Wrote the NATS credentials of agent %q to %s (mode 0600; also kept in %s).\n", *agent, *out, path)
	} else {
		if _, err := stdout.Write(creds); err != nil {
			fmt.Fprintf(stderr, "parley agents credentials: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "Above: the NATS credentials of agent %q (also kept in %s, mode 0600). Save them with --out FILE.\n", *agent, path)
	}
	fmt.Fprintf(stderr, `They are a secret, and they work at once (no restart of parley serve); running this again gives the same ones.
They allow only the subjects under %s, and a worker's connection must use the inbox prefix %s:
  Go:       nats.Connect(url, nats.UserCredentials(%q), nats.CustomInboxPrefix(%q))
  Python:   await nats.connect(url, user_credentials=%q, inbox_prefix=%q)
  nats CLI: nats --server URL --creds %s --inbox-prefix %s sub '%s'
`, p.Namespace, p.InboxPrefix, use, p.InboxPrefix, use, p.InboxPrefix, use, p.InboxPrefix, p.Subscribe[1])
	return 0
}

// agentsUsage heads parley agents -h; the flags follow.
const agentsUsage = `Usage:
  parley agents credentials --agent NAME [--data-dir DIR | --config FILE] [--prefix P] [--out FILE]
  parley agents credentials --agent NAME --permissions
  parley agents permissions --agent NAME [--prefix P] [--json]

credentials prints (or writes to --out, mode 0600) the NATS credentials of agent NAME's
workers on the embedded NATS of the parley serve that uses --data-dir (default
./parley-data, or PARLEY_DATA_DIR, or the data_dir of --config). It signs them with the
account key in DIR/auth, so it works while parley serve runs, with no restart; it needs no
connection to NATS. They allow NAME's own subjects only (protocol v2: P.agents.NAME.…),
and the worker's connection must use the inbox prefix P.agents.NAME.inbox.

permissions (or credentials --permissions) prints the permission block to give agent
NAME's user on an external NATS (nats.url), where Parley does not manage users.

The admin API does the same: POST /v1/admin/agents/NAME/credentials (scope keys:write).

Flags:
`

// writeFile0600 writes data to path with mode 0600, replacing any file
// there: through a temporary file in the same directory, so the
// credentials never sit in a file anyone else may read.
func writeFile0600(path string, data []byte) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--out %s is a directory", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".parley-creds-*")
	if err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(0o600), f.Close()); err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
