package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// credsEnv names the credentials file of the CLI tools, as for serve's
// nats.credentials_file.
const credsEnv = "PARLEY_NATS_CREDENTIALS_FILE"

// natsFlags are how a CLI tool (rooms, keys, agent echo) reaches and
// authenticates to a deployment's NATS: --nats-url, and credentials from
// --nats-creds (or PARLEY_NATS_CREDENTIALS_FILE), or else found in the
// --data-dir of a `parley serve` with the embedded server.
type natsFlags struct {
	url     string
	dataDir string
	creds   string
	dirSet  bool
}

// addNATSFlags registers the flags on fs.
func addNATSFlags(fs *flag.FlagSet) *natsFlags {
	f := &natsFlags{}
	dataDir := configs.Default().DataDir
	if d, ok := os.LookupEnv("PARLEY_DATA_DIR"); ok && d != "" {
		dataDir = d
	}
	fs.StringVar(&f.url, "nats-url", "nats://127.0.0.1:4222", "NATS server of the Parley deployment")
	fs.StringVar(&f.dataDir, "data-dir", dataDir, "data directory of the parley serve whose embedded NATS credentials to use (PARLEY_DATA_DIR)")
	fs.StringVar(&f.creds, "nats-creds", os.Getenv(credsEnv), "NATS .creds file; overrides --data-dir ("+credsEnv+")")
	return f
}

// markSet records whether --data-dir was given explicitly; call after
// parsing.
func (f *natsFlags) markSet(fs *flag.FlagSet) {
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "data-dir" {
			f.dirSet = true
		}
	})
}

// credsFile returns the credentials to connect with as role: --nats-creds,
// else role's file in the data directory (an agent's is issued there when
// missing, allowing prefix), else "" (a NATS without authentication). A --data-dir given
// explicitly that holds no credentials is an error.
func (f *natsFlags) credsFile(role, prefix string) (string, error) {
	if f.creds != "" {
		return f.creds, nil
	}
	p := broker.CredsPath(f.dataDir, role)
	if agent, ok := strings.CutPrefix(role, "agent-"); ok {
		// Issued, or issued again if its permissions are not current
		// (an older protocol's, another prefix's).
		ep, err := broker.EnsureAgentCreds(f.dataDir, prefix, agent)
		switch {
		case err == nil:
			return ep, nil
		case !errors.Is(err, broker.ErrNoCredentials):
			return "", err
		}
		// No account key here: a credentials file copied on its own.
		if _, serr := os.Stat(p); serr == nil {
			return p, nil
		}
		if f.dirSet {
			return "", err
		}
		return "", nil
	}
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if f.dirSet {
		return "", fmt.Errorf("no NATS credentials at %s (is it the --data-dir of parley serve?)", p)
	}
	return "", nil
}

// authHint explains an authorization failure when no credentials were
// found, so the fix is one flag away.
func (f *natsFlags) authHint(err error, creds string) string {
	if creds != "" || err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		return ""
	}
	return fmt.Sprintf(" (no credentials found in %s: pass the --data-dir of parley serve, or --nats-creds FILE)", broker.AuthDir(f.dataDir))
}

// connErr names the NATS server a tool tried (credentials in the URL
// redacted), so a wrong --nats-url is plain from the message.
func (f *natsFlags) connErr(err error, creds string) error {
	return fmt.Errorf("NATS at %s: %w%s", configs.RedactNATSURL(f.url), err, f.authHint(err, creds))
}
