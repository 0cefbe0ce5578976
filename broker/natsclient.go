package broker

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/configs"
)

// externalAuthOptions returns the options authenticating to an external
// NATS as n configures it: a .creds file, an nkey seed file,
// user/password or a token (configs.Validate allows at most one), and TLS
// with a private CA and a client certificate. Credentials inside nats.url
// are used by the client as they are.
func externalAuthOptions(n configs.NATSConfig) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case n.CredentialsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredentialsFile))
	case n.NkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(n.NkeySeedFile)
		if err != nil {
			// nats.go's error names the file or the problem, never the seed.
			return nil, fmt.Errorf("broker: nats.nkey_seed_file %s: not a usable nkey seed: %w", n.NkeySeedFile, err)
		}
		opts = append(opts, o)
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password))
	case n.Token != "":
		opts = append(opts, nats.Token(n.Token))
	}
	if n.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(n.TLS.CAFile))
	}
	if n.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(n.TLS.CertFile, n.TLS.KeyFile))
	}
	return opts, nil
}
