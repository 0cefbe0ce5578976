package speech

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// tool runs one local speech program: no shell, in a fresh temporary
// directory removed on return, with a time limit and capped output.
type tool struct {
	engine  string        // for errors: "pocketsphinx", "flite", …
	path    string        // absolute path of the binary (LookPath at construction)
	timeout time.Duration // per run
	maxOut  int           // cap on stdout+stderr kept, bytes
	tempDir string        // parent of the per-run directory ("" = os.TempDir)
	logName string        // a log file the tool writes in its directory, whose tail explains a failure

	// started, when set (tests), is told the pid of each child once it runs.
	started func(pid int)
}

// run executes the tool with args built by mk inside a new temporary
// directory dir (mk writes the inputs there and returns the arguments),
// then lets read collect the result from dir before dir is removed.
// A cancelled ctx kills the child at once (exec.CommandContext sends
// SIGKILL); WaitDelay bounds the wait for its output pipes after that.
func (t *tool) run(ctx context.Context, op string, mk func(dir string) ([]string, error), read func(dir string, stdout []byte) error) error {
	dir, err := os.MkdirTemp(t.tempDir, "parley-speech-")
	if err != nil {
		return &Error{Code: CodeFailed, Engine: t.engine, Op: op, Detail: "temporary directory", Err: err}
	}
	defer os.RemoveAll(dir)
	args, err := mk(dir)
	if err != nil {
		return &Error{Code: CodeFailed, Engine: t.engine, Op: op, Detail: "writing input", Err: err}
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, t.path, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + dir}
	cmd.WaitDelay = time.Second
	var stdout, stderr capped
	stdout.max, stderr.max = t.maxOut, 4096
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil && rctx.Err() == nil {
		return &Error{Code: CodeUnavailable, Engine: t.engine, Op: op, Detail: "starting " + t.path, Err: err}
	}
	if cmd.Process != nil { // not when the context was done before the start
		if t.started != nil {
			t.started(cmd.Process.Pid)
		}
		err = cmd.Wait()
	}
	switch {
	case errors.Is(ctx.Err(), context.Canceled): // the caller gave up (barge-in, hang-up): not the tool's fault
		return &Error{Code: CodeCanceled, Engine: t.engine, Op: op, Err: ctx.Err()}
	case rctx.Err() != nil: // our limit, or the caller's deadline
		return &Error{Code: CodeTimeout, Engine: t.engine, Op: op, Detail: fmt.Sprintf("killed after %s", time.Since(start).Round(time.Millisecond)), Err: rctx.Err()}
	case err != nil: // the exit status is in err; the detail says why
		detail := stderr.tail()
		if detail == "" && t.logName != "" {
			if b, err := readCapped(t.engine, op, filepath.Join(dir, t.logName), 1<<20); err == nil {
				detail = lastLine(string(b))
			}
		}
		return &Error{Code: CodeFailed, Engine: t.engine, Op: op, Detail: detail, Err: err}
	case stdout.over:
		return &Error{Code: CodeFailed, Engine: t.engine, Op: op, Detail: fmt.Sprintf("wrote more than %d bytes", t.maxOut)}
	}
	return read(dir, stdout.Bytes())
}

// capped is a writer that keeps the first max bytes and notes the rest, so
// a runaway tool cannot fill memory (it is not killed for it: the time
// limit does that).
type capped struct {
	bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room < len(p) {
		c.over = true
		if room > 0 {
			c.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return c.Buffer.Write(p)
}

// tail is the last line of what was kept, for an error's detail.
func (c *capped) tail() string { return lastLine(c.String()) }

// lastLine picks the line of a tool's log that explains a failure: the
// last one that says ERROR (pocketsphinx logs INFO lines after its error),
// else the last one, at most 200 bytes.
func lastLine(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	s := lines[len(lines)-1]
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "ERROR") {
			s = lines[i]
			break
		}
	}
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[len(s)-200:], "")
	}
	return s
}

// check is the tool as its availability check runs it: with a time limit
// of its own, so a tight per-call limit does not fail the check.
func (t *tool) check() *tool {
	c := *t
	c.timeout = 5 * time.Second
	return &c
}

// readCapped reads a file the tool wrote, refusing one over max bytes.
func readCapped(engine, op, path string, max int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, &Error{Code: CodeFailed, Engine: engine, Op: op, Detail: "no output file", Err: err}
	}
	if fi.Size() > max {
		return nil, &Error{Code: CodeFailed, Engine: engine, Op: op, Detail: fmt.Sprintf("output of %d bytes over the %d-byte cap", fi.Size(), max)}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Code: CodeFailed, Engine: engine, Op: op, Detail: "reading output", Err: err}
	}
	return b, nil
}

// lookTool resolves a binary name (or path) for an engine, or says it is
// missing with CodeUnavailable.
func lookTool(engine, name, pkg string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", &Error{Code: CodeUnavailable, Engine: engine, Op: "check",
			Detail: fmt.Sprintf("%s not found (install Debian's %s: make speech-tools)", name, pkg), Err: err}
	}
	return p, nil
}
