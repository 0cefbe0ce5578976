package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// subcommands is the flag set of a command with subcommands (parley keys
// create, parley agents credentials). Help and mistakes in the command
// line are answered before anything connects or touches a data directory.
type subcommands struct {
	*flag.FlagSet
	name   string   // "parley keys"
	subs   []string // the subcommands it knows
	sub    string   // the one asked for
	stderr io.Writer
}

// newSubcommands starts the flag set for name's subcommand args[0]; usage
// is printed above the flags' defaults.
func newSubcommands(name, usage string, subs, args []string, stderr io.Writer) *subcommands {
	c := &subcommands{name: name, subs: subs, stderr: stderr}
	if len(args) > 0 {
		c.sub = args[0]
	}
	c.FlagSet = flag.NewFlagSet(strings.TrimSpace(name+" "+c.sub), flag.ContinueOnError)
	c.SetOutput(stderr)
	c.Usage = func() {
		fmt.Fprint(stderr, usage)
		c.PrintDefaults()
	}
	return c
}

// parse parses the subcommand's flags. When the command line is help or a
// mistake it prints what to do and returns done with the exit code.
func (c *subcommands) parse(args []string) (code int, done bool) {
	switch {
	case c.sub == "":
		c.Usage()
		return 2, true
	case slices.Contains([]string{"-h", "-help", "--help", "help"}, c.sub):
		c.Usage()
		return 0, true
	case !slices.Contains(c.subs, c.sub):
		fmt.Fprintf(c.stderr, "%s: unknown subcommand %q (%s)\n\n", c.name, c.sub, strings.Join(c.subs, ", "))
		c.Usage()
		return 2, true
	}
	return parseExit(c.Parse(args[1:]))
}

// parseExit is where a command goes after parsing its flags (err is
// flag.FlagSet.Parse's): done with 0 after -h, with 2 after a mistake
// (already reported on the flag set's output), not done without err.
func parseExit(err error) (code int, done bool) {
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0, true
	case err != nil:
		return 2, true
	}
	return 0, false
}
