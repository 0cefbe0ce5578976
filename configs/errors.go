package configs

import "errors"

// ErrInvalid is returned (wrapped, usually as a *ValidationError) when a
// configuration fails Validate.
var ErrInvalid = errors.New("configs: invalid configuration")

// ErrUnknownKey is returned (wrapped) when the YAML file contains a key that
// does not correspond to any Config field. The message names each unknown
// key with its dotted path and line.
var ErrUnknownKey = errors.New("configs: unknown key in config file")

// ErrFile is returned (wrapped) when the configuration file cannot be read
// or is not valid YAML for Config (syntax errors, wrong value types,
// duplicate keys, more than one document).
var ErrFile = errors.New("configs: cannot load config file")

// ErrEnv is returned (wrapped) when a PARLEY_* environment variable holds a
// value that cannot be parsed for its field; the message names the variable.
var ErrEnv = errors.New("configs: bad environment variable")

// ErrFlag is returned (wrapped) when the command-line flags cannot be parsed.
// When -h or --help was given the error also wraps flag.ErrHelp.
var ErrFlag = errors.New("configs: bad command-line flags")
