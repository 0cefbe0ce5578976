package benchproc

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// ParseFlags parses a load generator's args with fs (named for the
// command, "parley bench chat") and validates the options they set. ok
// says to go on; otherwise code is the exit code: 0 for -h, 2 for a bad
// flag or options validate refuses (said on stderr). validate runs after
// the parse: a closure over the options, not a method value of an Options
// taken before it.
func ParseFlags(fs *flag.FlagSet, args []string, validate func() error, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if err := validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2, false
	}
	return 0, true
}

// Finish ends a load generator's run: it prints rep, when the run produced
// one, on stdout (Print) and returns the exit code: 1 when the run failed
// (err) or fell short (shortfall, asked only of a run without err, says how;
// "" when it did not), both said on stderr after name; else 0.
func Finish[R interface {
	comparable
	Table
}](stdout, stderr io.Writer, name string, rep R, asJSON bool, err error, shortfall func(R) string) int {
	var none R
	if rep != none {
		Print(stdout, rep, asJSON)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	if s := shortfall(rep); s != "" {
		fmt.Fprintf(stderr, "%s: %s\n", name, s)
		return 1
	}
	return 0
}
