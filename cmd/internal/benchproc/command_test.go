package benchproc

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestParseFlags: -h ends with 0, a bad flag or refused options with 2
// (the refusal said after the command's name), and validate sees the
// parsed values.
func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		ok     bool
		stderr string
	}{
		{args: []string{"-n", "3"}, ok: true},
		{args: []string{"-h"}, code: 0, stderr: "-n"},
		{args: []string{"--nope"}, code: 2, stderr: "not defined: -nope"},
		{args: []string{"-n", "0"}, code: 2, stderr: "parley bench test: -n must be positive"},
	} {
		var errb bytes.Buffer
		fs := flag.NewFlagSet("parley bench test", flag.ContinueOnError)
		fs.SetOutput(&errb)
		n := fs.Int("n", 1, "how many")
		code, ok := ParseFlags(fs, tc.args, func() error {
			if *n <= 0 {
				return errors.New("-n must be positive")
			}
			return nil
		}, &errb)
		if code != tc.code || ok != tc.ok || !strings.Contains(errb.String(), tc.stderr) {
			t.Errorf("%v: code %d, ok %v, stderr %q; want %d, %v, %q", tc.args, code, ok, errb.String(), tc.code, tc.ok, tc.stderr)
		}
	}
}

type testReport struct{ failed int }

func (r *testReport) PrintTable(w io.Writer) { fmt.Fprintf(w, "failed %d\n", r.failed) }

// TestFinish: the report is printed whenever there is one; the exit code
// is 1 with an error or a shortfall, both said on stderr, else 0.
func TestFinish(t *testing.T) {
	shortfall := func(r *testReport) string {
		if r.failed > 0 {
			return fmt.Sprintf("%d failed", r.failed)
		}
		return ""
	}
	for _, tc := range []struct {
		name           string
		rep            *testReport
		err            error
		code           int
		stdout, stderr string
	}{
		{name: "ok", rep: &testReport{}, stdout: "failed 0\n"},
		{name: "short", rep: &testReport{failed: 2}, code: 1, stdout: "failed 2\n", stderr: "bench: 2 failed\n"},
		{name: "error with a report", rep: &testReport{failed: 1}, err: errors.New("boom"), code: 1, stdout: "failed 1\n", stderr: "bench: boom\n"},
		{name: "error without", err: errors.New("boom"), code: 1, stderr: "bench: boom\n"},
	} {
		var out, errb bytes.Buffer
		if code := Finish(&out, &errb, "bench", tc.rep, false, tc.err, shortfall); code != tc.code || out.String() != tc.stdout || errb.String() != tc.stderr {
			t.Errorf("%s: code %d, stdout %q, stderr %q; want %d, %q, %q", tc.name, code, out.String(), errb.String(), tc.code, tc.stdout, tc.stderr)
		}
	}
}
