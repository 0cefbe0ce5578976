package configs

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxFileSize bounds how much of a config file is read.
const maxFileSize = 4 << 20

// Load builds a Config from the defaults, the YAML file at path (none when
// path is ""), the process environment (PARLEY_*) and args, which are
// command-line flags without the program name or subcommand. The result is
// validated; on any error Load returns the zero Config.
//
// Errors wrap ErrFlag, ErrFile, ErrUnknownKey, ErrEnv or ErrInvalid.
func Load(path string, args []string) (Config, error) {
	return LoadWith(path, args, os.LookupEnv)
}

// LoadWith is Load with the environment read through getenv (same contract
// as os.LookupEnv), so tests need not touch the process environment. A nil
// getenv means an empty environment.
func LoadWith(path string, args []string, getenv func(string) (string, bool)) (Config, error) {
	if getenv == nil {
		getenv = func(string) (string, bool) { return "", false }
	}
	// Flags are parsed first, into a copy of the defaults, so that -h and a
	// bad flag are reported even with a broken file.
	scratch := Default()
	fs := newFlagSet(&scratch)
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrFlag, err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("%w: unexpected argument %q", ErrFlag, fs.Arg(0))
	}

	cfg := Default()
	if path != "" {
		if err := loadFile(path, &cfg); err != nil {
			return Config{}, err
		}
	}
	if err := applyEnv(&cfg, getenv); err != nil {
		return Config{}, err
	}
	// Parsed again onto the result, the flags that are set override the
	// file and the environment; the others leave their fields as they are.
	if err := newFlagSet(&cfg).Parse(args); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrFlag, err)
	}
	cfg.normalize()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loadFile decodes the YAML file at path over cfg.
func loadFile(path string, cfg *Config) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return fmt.Errorf("%w: read %s: %w", ErrFile, path, err)
	}
	if len(data) > maxFileSize {
		return fmt.Errorf("%w: %s: larger than %d bytes", ErrFile, path, maxFileSize)
	}
	return decodeYAML(path, data, cfg)
}

// decodeYAML strictly decodes one YAML document from data over cfg. Keys
// absent from the document keep their current values; an empty document
// changes nothing. name is used in error messages.
func decodeYAML(name string, data []byte, cfg *Config) (err error) {
	// yaml.v3 is third-party code fed with outside input: turn any panic
	// it may raise into an ordinary error instead of crashing the process.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: yaml decoder failed: %v", ErrFile, name, r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file or comments only
		}
		return yamlError(name, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("%w: %s: %w", ErrFile, name, err)
	default:
		return fmt.Errorf("%w: %s: line %d: more than one YAML document", ErrFile, name, extra.Line)
	}
}

// yamlError converts a yaml.v3 decoding error into an ErrUnknownKey or
// ErrFile error that names the offending keys by their dotted path.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%w: %s: %w", ErrFile, name, err)
	}
	paths := typePaths()
	lines := make([]string, 0, len(te.Errors))
	unknown := false
	for _, msg := range te.Errors {
		line, key, typ, ok := parseUnknownField(msg)
		if !ok {
			lines = append(lines, msg)
			continue
		}
		unknown = true
		if p := paths[typ]; p != "" {
			key = p + "." + key
		}
		lines = append(lines, fmt.Sprintf("line %s: unknown key %q", line, key))
	}
	sentinel := ErrFile
	if unknown {
		sentinel = ErrUnknownKey
	}
	return fmt.Errorf("%w: %s:\n  %s", sentinel, name, strings.Join(lines, "\n  "))
}

// parseUnknownField splits yaml.v3's KnownFields message
// "line N: field KEY not found in type TYPE" into its parts.
func parseUnknownField(msg string) (line, key, typ string, ok bool) {
	const mid = " not found in type "
	rest, ok := strings.CutPrefix(msg, "line ")
	if !ok {
		return "", "", "", false
	}
	line, rest, ok = strings.Cut(rest, ": field ")
	if !ok {
		return "", "", "", false
	}
	i := strings.LastIndex(rest, mid)
	if i < 0 {
		return "", "", "", false
	}
	return line, rest[:i], rest[i+len(mid):], true
}

// typePaths maps the Go type names that appear in yaml.v3 messages (such as
// "configs.NATSConfig") to the YAML path of that struct ("nats").
func typePaths() map[string]string {
	paths := make(map[string]string)
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		paths[t.String()] = path
		for i := range t.NumField() {
			f := t.Field(i)
			ft := f.Type
			suffix := ""
			if ft.Kind() == reflect.Slice {
				ft, suffix = ft.Elem(), "[]"
			}
			if ft.Kind() != reflect.Struct || isDuration(ft) {
				continue
			}
			walk(ft, joinPath(path, yamlName(f))+suffix)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return paths
}

// joinPath joins YAML path elements with a dot.
func joinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// newFlagSet defines Parley's flags on a fresh FlagSet, each bound to its
// field of c with the field's value as its default: on Default that is the
// shown default, and on a loaded Config a flag that is not set leaves its
// field alone.
func newFlagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("parley", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Listen, "listen", c.Listen, "HTTP listen address `host:port` (PARLEY_LISTEN)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "data `directory` (PARLEY_DATA_DIR)")
	fs.StringVar(&c.NATS.URL, "nats-url", c.NATS.URL, "external NATS `URLs`, comma separated; empty starts an embedded server (PARLEY_NATS_URL)")
	fs.StringVar(&c.NATS.Listen, "nats-listen", c.NATS.Listen, "embedded NATS listen address `host:port` (PARLEY_NATS_LISTEN)")
	fs.StringVar(&c.Ops.MetricsListen, "metrics-listen", c.Ops.MetricsListen, "a second address `host:port` serving only /metrics, without a key: loopback or an internal network (PARLEY_OPS_METRICS_LISTEN)")
	fs.StringVar(&c.Log.Level, "log-level", c.Log.Level, "log `level`: debug, info, warn or error (PARLEY_LOG_LEVEL)")
	fs.StringVar(&c.Log.Format, "log-format", c.Log.Format, "log `format`: auto, json or text (PARLEY_LOG_FORMAT)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "public base `URL` for links (PARLEY_PUBLIC_URL)")
	fs.BoolVar(&c.EchoAgent.Enabled, "echo-agent", c.EchoAgent.Enabled, "run the echo agent in-process (PARLEY_ECHO_AGENT_ENABLED)")
	fs.BoolVar(&c.Speech.Enabled, "speech", c.Speech.Enabled, "run the agents' speech pipelines, agents.speech (PARLEY_SPEECH_ENABLED)")
	fs.IntVar(&c.EchoAgent.Workers, "echo-workers", c.EchoAgent.Workers, "number of echo agent workers, 0..64 (PARLEY_ECHO_AGENT_WORKERS)")
	return fs
}

// FlagUsage returns the help text for the flags Load accepts, in the format
// of flag.PrintDefaults, for the caller to print on -h.
func FlagUsage() string {
	d := Default()
	fs := newFlagSet(&d)
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

// normalize applies the defaults that depend on other values and canonical
// spellings: widget names default to their key, widget agents to "echo",
// origins and log settings are lower-cased, and a trailing slash is removed
// from PublicURL.
func (c *Config) normalize() {
	c.Log.Level = strings.ToLower(c.Log.Level)
	c.Log.Format = strings.ToLower(c.Log.Format)
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	for i := range c.Widgets {
		c.Widgets[i].Normalize()
	}
}
