package benchproc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/cmd/internal/livekitserver"
)

// StartTimeout bounds a child's start-up: from exec to ready.
const StartTimeout = 60 * time.Second

// Proc is a parley process started by a bench: `parley serve`, or
// `parley agent echo`.
type Proc struct {
	name     string
	cmd      *exec.Cmd
	dir      string // removed by stop
	stderr   *TailBuffer
	exited   chan struct{}
	waitErr  error // set before exited closes
	stopOnce sync.Once
}

// Start starts bin with args. The child gets its own process group (a
// terminal's ^C reaches only the bench, which stops it) and is killed if
// the bench dies. Its stdout is discarded: readiness is asked of the
// server over HTTP (WaitReady), not read from a human's log line.
func Start(name, bin, dir string, env []string, args ...string) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c := &Proc{name: name, cmd: cmd, dir: dir, stderr: &TailBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting %s: %w", name, err)
	}
	go func() { // owned: ends when the child exits; stop waits for exited
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// StartServe starts `parley serve` on free loopback ports and a fresh data
// dir, with loopback candidates, waits until its GET /readyz answers 200
// with a live worker for every agent, and returns it with its HTTP and
// NATS URLs. config, if not empty, is the YAML of its --config. With
// externalAgent its in-process echo agent is off, and a `parley agent
// echo` process is started too.
func StartServe(ctx context.Context, bin string, externalAgent bool, config string, env []string, agentArgs ...string) (srv, agent *Proc, base, natsURL, creds string, err error) {
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, nil, "", "", "", fmt.Errorf("bench: finding the parley binary: %w", err)
		}
	}
	// Ports that were free a moment ago: the bench must know them before
	// the child is ready, to ask it whether it is (livekitserver.FreePort
	// does the same for livekit-server's ports).
	httpPort, err := livekitserver.FreePort("tcp")
	if err != nil {
		return nil, nil, "", "", "", fmt.Errorf("bench: free port: %w", err)
	}
	natsPort, err := livekitserver.FreePort("tcp")
	if err != nil {
		return nil, nil, "", "", "", fmt.Errorf("bench: free port: %w", err)
	}
	dir, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		return nil, nil, "", "", "", err
	}
	args := []string{"serve", "--data-dir", dir,
		"--listen", "127.0.0.1:" + strconv.Itoa(httpPort), "--nats-listen", "127.0.0.1:" + strconv.Itoa(natsPort),
		"--log-level", "warn", "--echo-agent=" + strconv.FormatBool(!externalAgent),
		// The echo agent plays the audio back: what the bench measures.
		"--speech=false"}
	if config != "" {
		path := filepath.Join(dir, "parley-bench.yaml")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			_ = os.RemoveAll(dir)
			return nil, nil, "", "", "", err
		}
		args = append(args, "--config", path)
	}
	// All sessions come from 127.0.0.1: the per-IP and per-widget limits
	// of resolve and session creation would refuse most of them.
	env = append([]string{"PARLEY_MEDIA_INCLUDE_LOOPBACK=true",
		"PARLEY_LIMITS_RESOLVE_PER_IP=0", "PARLEY_LIMITS_RESOLVE_PER_WIDGET=0",
		"PARLEY_LIMITS_SESSIONS_PER_IP=0", "PARLEY_LIMITS_SESSIONS_PER_WIDGET=0"}, env...)
	srv, err = Start("parley serve", bin, dir, env, args...)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, "", "", "", err
	}
	base = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	natsURL = "nats://127.0.0.1:" + strconv.Itoa(natsPort)
	creds = broker.CredsPath(dir, broker.RoleOperator)
	// With an external agent the server is ready before any worker is:
	// the agent needs NATS up to connect.
	if err := WaitReady(ctx, base, !externalAgent, srv); err != nil {
		srv.Stop(io.Discard)
		return nil, nil, "", "", "", err
	}
	if externalAgent {
		agent, err = Start("parley agent echo", bin, "", nil, append([]string{
			"agent", "echo", "--nats-url", natsURL, "--data-dir", dir, "--log-level", "warn"}, agentArgs...)...)
		if err == nil {
			if err = WaitReady(ctx, base, true, srv, agent); err != nil {
				agent.Stop(io.Discard)
			}
		}
		if err != nil {
			srv.Stop(io.Discard)
			return nil, nil, "", "", "", err
		}
	}
	return srv, agent, base, natsURL, creds, nil
}

// WaitReady polls the server's GET /readyz until it answers 200 and, with
// workers, names at least one live worker for every agent of its widgets
// (the echo agent heartbeats every 500 ms). It fails when one of procs
// exits first, after StartTimeout, or when ctx ends.
func WaitReady(ctx context.Context, base string, workers bool, procs ...*Proc) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.NewTimer(StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready(ctx, client, base, workers) {
			return nil
		}
		for _, p := range procs {
			select {
			case <-p.exited:
				return fmt.Errorf("bench: %s exited (%v) before it was ready:\n%s", p.name, p.waitErr, p.stderr.String())
			default:
			}
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("bench: %s was not ready within %v (GET %s/readyz)", procs[len(procs)-1].name, StartTimeout, base)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// ready asks GET /readyz once.
func ready(ctx context.Context, client *http.Client, base string, workers bool) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return false
	}
	res, err := client.Do(req)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	var body struct {
		Agents map[string]int `json:"agents"`
	}
	if res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&body) != nil {
		return false
	}
	if workers {
		for _, n := range body.Agents {
			if n == 0 {
				return false
			}
		}
	}
	return true
}

// Stop sends SIGTERM, waits (SIGKILL after 30 s) and removes the data dir.
func (c *Proc) Stop(log io.Writer) {
	c.stopOnce.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			fmt.Fprintf(log, "bench: %s did not stop within 30s; killing it\n", c.name)
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if c.waitErr != nil {
			fmt.Fprintf(log, "bench: %s exited: %v\n", c.name, c.waitErr)
		}
		if c.dir != "" {
			_ = os.RemoveAll(c.dir)
		}
	})
}

// PID is the child's process id.
func (c *Proc) PID() int { return c.cmd.Process.Pid }

// LogSummary counts the JSON log lines the child wrote to stderr (the last
// 64 KiB), by level and message, most frequent first (at most 10).
func (c *Proc) LogSummary() []string { return c.stderr.Summary() }

// TailBuffer keeps the last 64 KiB of the child's stderr.
type TailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - 64<<10; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// Summary counts the JSON log lines kept, by level and message, most
// frequent first (at most 10).
func (t *TailBuffer) Summary() []string { return LogSummary(t.String()) }

// LogSummary counts the JSON log lines of log, by level and message, most
// frequent first (at most 10).
func LogSummary(log string) []string {
	counts := map[string]int{}
	for line := range strings.SplitSeq(log, "\n") {
		var l struct{ Level, Msg, Err string }
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg == "" {
			continue
		}
		k := l.Level + " " + l.Msg
		if l.Err != "" {
			k += ": " + l.Err
		}
		counts[k]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return counts[b] - counts[a] })
	out := make([]string, 0, min(len(keys), 10))
	for _, k := range keys[:min(len(keys), 10)] {
		out = append(out, fmt.Sprintf("%d× %s", counts[k], k))
	}
	return out
}
