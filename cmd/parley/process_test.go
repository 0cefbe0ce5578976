package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// These tests run the real binary, because kill -9 and SIGTERM are about
// processes.

// goBinary is a Go program built once per test run into a temporary
// directory, for tests that need real processes.
type goBinary struct {
	once sync.Once
	path string
	err  error
}

// get builds pkg (a package path, or "." for cmd/parley) as name the first
// time, and returns the binary's path.
func (g *goBinary) get(t testing.TB, pkg, name string) string {
	t.Helper()
	g.once.Do(func() {
		dir, err := os.MkdirTemp("", name+"-bin-")
		if err != nil {
			g.err = err
			return
		}
		g.path = filepath.Join(dir, name)
		out, err := exec.Command("go", "build", "-o", g.path, pkg).CombinedOutput()
		if err != nil {
			g.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if g.err != nil {
		t.Fatal(g.err)
	}
	return g.path
}

// The binaries the process tests build, once per run.
var parleyBin, natsServerBin goBinary

// parleyBinary builds cmd/parley once per test run.
func parleyBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the parley binary")
	}
	return parleyBin.get(t, ".", "parley")
}

// proc is a parley process.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stderr *syncBuffer
	lines  chan string
	exited chan struct{}
	err    error // exit error, set before exited closes
}

// cleanEnv is the environment without PARLEY_* settings of the caller.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PARLEY_") {
			env = append(env, kv)
		}
	}
	return env
}

func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	return startProcIn(t, "", args...)
}

// startProcIn starts parley with args in the working directory dir ("":
// the test's).
func startProcIn(t testing.TB, dir string, args ...string) *proc {
	t.Helper()
	return startProcDirEnv(t, dir, nil, args...)
}

// startProcEnv starts parley with args and the extra environment env.
func startProcEnv(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	return startProcDirEnv(t, "", env, args...)
}

func startProcDirEnv(t testing.TB, dir string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(parleyBinary(t), args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Dir = dir
	p := &proc{t: t, cmd: cmd, stderr: &syncBuffer{}, lines: make(chan string, 100), exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("stderr of %v:\n%s", args, tail(p.stderr.String(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// line waits for a stdout line matching re.
func (p *proc) line(re *regexp.Regexp) []string {
	p.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-p.exited:
			p.t.Fatalf("process exited (%v) before printing %s; stderr:\n%s", p.err, re, tail(p.stderr.String(), 4000))
		case <-timeout:
			p.t.Fatalf("process did not print %s", re)
		}
	}
}

// metricsLine is the log line of the --metrics-listen listener.
var metricsLine = regexp.MustCompile(`"msg":"metrics listening"[^\n]*"addr":"([^"]+)"`)

// metricsBase is the base URL of a serve process's --metrics-listen
// listener, from its log (stderr).
func metricsBase(t testing.TB, p *proc) string {
	t.Helper()
	var m []string
	agenttest.Poll(t, 30*time.Second, "the metrics listening line", func() bool {
		m = metricsLine.FindStringSubmatch(p.stderr.String())
		return m != nil
	})
	return "http://" + m[1]
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		p.t.Fatal("process did not exit")
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	p.t.Fatalf("wait: %v", p.err)
	return 0
}

var readyLine = regexp.MustCompile(`^Parley is ready: open (http://\S+)/ \(agents connect to (nats://\S+)\)`)

// serveProc starts `parley serve` on dataDir and returns it with an env
// pointing at it.
func serveProc(t testing.TB, dataDir string, extra ...string) (*proc, *env, string) {
	t.Helper()
	// As in-process (signalingtest.Config): the echo agent plays the
	// visitor's audio back, which the voice tests measure; the speech
	// tests turn the pipeline on.
	args := append([]string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:-1", "--log-format", "json", "--log-level", "debug", "--speech=false"}, extra...)
	p := startProc(t, args...)
	m := p.line(readyLine)
	return p, envAt(t, strings.Replace(m[1], "localhost", "127.0.0.1", 1)), m[2]
}

// TestKill9AndRestart: every acknowledged message survives kill -9 of the
// server, and the conversation continues on restart with the same data dir.
func TestKill9AndRestart(t *testing.T) {
	dir := t.TempDir()
	p, e, _ := serveProc(t, dir)
	s := e.NewSession(nil)
	var want []string
	for i := range 5 {
		text := fmt.Sprintf("message %d", i)
		if r := e.Post(s, text, fmt.Sprintf("k-%d", i), true); r.Status != 200 {
			t.Fatalf("post: %d %s", r.Status, r.Raw)
		}
		want = append(want, "visitor: "+text, "agent: echo: "+text)
	}
	// Acknowledged (202) but maybe not yet answered when the process dies.
	if r := e.Post(s, "in flight", "k-5", false); r.Status != 202 {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait()

	_, e2, _ := serveProc(t, dir)
	got := signalingtest.Transcript(e2.History(s)) // the old session token still works
	if len(got) < len(want)+1 || !slices.Equal(got[:len(want)], want) || got[len(want)] != "visitor: in flight" {
		t.Fatalf("history after kill -9 = %q, want it to start with %q + in flight", got, want)
	}
	// The conversation goes on: the in-flight message and a new one are answered.
	s2 := e2.NewSession(map[string]any{"resume_token": s.ResumeToken})
	if s2.ConversationID != s.ConversationID {
		t.Fatalf("resume after restart: conversation %s, want %s", s2.ConversationID, s.ConversationID)
	}
	if r := e2.Post(s2, "after restart", "k-6", true); r.Status != 200 {
		t.Fatalf("post after restart: %d %s", r.Status, r.Raw)
	}
	agenttest.Poll(t, 10*time.Second, "every message answered once", func() bool {
		got := signalingtest.Transcript(e2.History(s2))
		n := 0
		for _, l := range got {
			if l == "agent: echo: in flight" {
				n++
			}
		}
		return n == 1 && len(got) == len(want)+4 && slices.Contains(got, "agent: echo: after restart")
	})
	// Retrying the in-flight message after the restart is still a duplicate.
	if r := e2.Post(s2, "in flight", "k-5", true); r.Body["duplicate"] != true || r.Status != 200 {
		t.Fatalf("retry after restart: %d %s", r.Status, r.Raw)
	}
}

// TestSIGTERMDrains: SIGTERM closes sockets with 1001, stores what is in
// flight and exits 0.
func TestSIGTERMDrains(t *testing.T) {
	dir := t.TempDir()
	p, e, _ := serveProc(t, dir)
	s, c := e.chatSession("t-1", "before")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, reason := c.CloseStatus(); code != 1001 {
		t.Fatalf("socket closed with %d %q, want 1001", code, reason)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, tail(p.stderr.String(), 3000))
	}
	_, e2, _ := serveProc(t, dir)
	if got := signalingtest.Transcript(e2.History(s)); !slices.Equal(got, []string{"visitor: before", "agent: echo: before"}) {
		t.Fatalf("history after restart = %q", got)
	}
}

// TestSeparateAgentProcesses: `parley agent echo` workers in their own
// processes serve conversations of a `parley serve` with no in-process
// agent; when one drains, the other takes its conversations.
func TestSeparateAgentProcesses(t *testing.T) {
	dir := t.TempDir()
	_, e, natsURL := serveProc(t, dir, "--echo-agent=false")
	agentLine := regexp.MustCompile(`^echo agent: 1 worker\(s\) serving "echo"`)
	// Credentials found from the data dir alone, and given as a file.
	a1 := startProc(t, "agent", "echo", "--nats-url", natsURL, "--data-dir", dir)
	a1.line(agentLine)
	a2 := startProc(t, "agent", "echo", "--nats-url", natsURL, "--nats-creds", filepath.Join(dir, "auth", "agent-echo.creds"))
	a2.line(agentLine)
	agenttest.Poll(t, 10*time.Second, "two echo workers in readyz", func() bool {
		r := e.Do("GET", "/readyz", nil)
		agents, _ := r.Body["agents"].(map[string]any)
		return agents["echo"] == 2.0
	})
	var sessions []session
	for i := range 8 {
		s := e.NewSession(nil)
		sessions = append(sessions, s)
		if r := e.Post(s, fmt.Sprintf("hello %d", i), "", true); r.Status != 200 {
			t.Fatalf("post: %d %s", r.Status, r.Raw)
		}
	}
	if err := a1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := a1.wait(); code != 0 {
		t.Fatalf("agent exit code %d", code)
	}
	for i, s := range sessions {
		if r := e.Post(s, fmt.Sprintf("again %d", i), "", true); r.Status != 200 || r.Body["reply"].(map[string]any)["body"] != fmt.Sprintf("echo: again %d", i) {
			t.Fatalf("post after one agent left: %d %s", r.Status, r.Raw)
		}
	}
}

// TestKeysCLI: the first admin key is made with `parley keys`, straight in
// the deployment's NATS; it works on the admin API, is listed without its
// secret, and stops at once when revoked.
func TestKeysCLI(t *testing.T) {
	dir := t.TempDir()
	_, e, natsURL := serveProc(t, dir)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(parleyBinary(t), append([]string{"keys"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("parley keys %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// The tool must not touch the deployment's bucket settings.
	nc, err := nats.Connect(natsURL, nats.UserCredentials(filepath.Join(dir, "auth", "operator.creds")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	nonceTTL := func() time.Duration {
		kv, err := js.KeyValue(t.Context(), "parley_nonces")
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return st.TTL()
	}
	before := nonceTTL()
	out := run("create", "--nats-url", natsURL, "--data-dir", dir, "--kind", "admin", "--scopes", "config:read,keys:write", "--name", "ops", "--json")
	var created struct {
		Key  string `json:"key"`
		Info struct {
			ID     string   `json:"id"`
			Scopes []string `json:"scopes"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || !strings.HasPrefix(created.Key, "ak_") || len(created.Info.Scopes) != 2 {
		t.Fatalf("create: %v\n%s", err, out)
	}
	if r := e.Do("GET", "/v1/admin/widgets", nil, "Authorization", "Bearer "+created.Key); r.Status != 200 {
		t.Fatalf("admin API with the new key: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("POST", "/v1/admin/widgets", map[string]any{}, "Authorization", "Bearer "+created.Key); r.Status != 403 || r.ErrCode() != "MISSING_SCOPE" {
		t.Fatalf("config:write without the scope: %d %s", r.Status, r.Raw)
	}
	secret := run("create", "--nats-url", natsURL, "--data-dir", dir, "--kind", "secret", "--widget", "wdg_demo")
	if !strings.HasPrefix(secret, "sk_") {
		t.Fatalf("secret key create printed %q", secret)
	}
	list := run("list", "--nats-url", natsURL, "--data-dir", dir)
	if !strings.Contains(list, created.Info.ID) || !strings.Contains(list, "wdg_demo") || strings.Contains(list, created.Key) {
		t.Fatalf("list:\n%s", list)
	}
	run("revoke", "--nats-url", natsURL, "--data-dir", dir, created.Info.ID)
	if after := nonceTTL(); after != before || before < 20*time.Minute {
		t.Fatalf("nonce bucket TTL %v before the tool, %v after; want unchanged and covering bootstrap tokens", before, after)
	}
	if r := e.Do("GET", "/v1/admin/widgets", nil, "Authorization", "Bearer "+created.Key); r.Status != 403 || r.ErrCode() != "KEY_DISABLED" {
		t.Fatalf("revoked key: %d %s", r.Status, r.Raw)
	}
}
