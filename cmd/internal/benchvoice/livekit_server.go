package benchvoice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A livekit-server for the bench, and for whatever else needs a real one:
// its API knows nothing of the bench nor of package testing.

// LiveKitServerPath is flagPath, else $PARLEY_LIVEKIT_SERVER, else
// .cache/bin/livekit-server under the module root (`make livekit`), found
// from the working directory up, as the LiveKit tests find it.
func LiveKitServerPath(flagPath string) (string, error) {
	path := flagPath
	if path == "" {
		path = os.Getenv("PARLEY_LIVEKIT_SERVER")
	}
	if path == "" {
		dir, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				path = filepath.Join(dir, ".cache", "bin", "livekit-server")
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return "", errors.New("bench: no livekit-server: give --livekit-server or PARLEY_LIVEKIT_SERVER, or run from the module (make livekit)")
			}
			dir = parent
		}
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return "", fmt.Errorf("bench: livekit-server is missing (%s): build it with `make livekit` or give --livekit-server", path)
	}
	return path, nil
}

// LiveKitOptions configure StartLiveKit. Only Binary is required.
type LiveKitOptions struct {
	Binary     string        // the livekit-server executable (see LiveKitServerPath)
	APIKey     string        // default "parley"
	APISecret  string        // default: 48 random hex characters
	WebhookURL string        // where it posts its webhooks, signed with APIKey; empty: none
	LogLevel   string        // default "warn"; the log is JSON lines
	Timeout    time.Duration // start-up bound; default 60 s
}

// LiveKitServer is a livekit-server --dev process on free loopback ports.
// StartLiveKit starts it; Stop ends it. One goroutine waits for the
// process; Stop waits for that goroutine.
type LiveKitServer struct {
	url, httpURL string
	key, secret  string
	dir, logPath string
	cmd          *exec.Cmd
	exited       chan struct{}
	stopOnce     sync.Once
	stopErr      error
}

// freePort is a port that was free on 127.0.0.1 a moment ago.
func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// StartLiveKit starts livekit-server --dev on free loopback ports, in a
// fresh directory for its config and log, and waits (polling HTTP) until
// it answers. The process gets its own process group and is killed if
// this process dies.
func StartLiveKit(ctx context.Context, o LiveKitOptions) (*LiveKitServer, error) {
	if o.APIKey == "" {
		o.APIKey = "parley"
	}
	if o.APISecret == "" {
		raw := make([]byte, 24)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		o.APISecret = hex.EncodeToString(raw) // 48 characters
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	var ports [3]int
	for i, nw := range []string{"tcp", "tcp", "udp"} {
		p, err := freePort(nw)
		if err != nil {
			return nil, fmt.Errorf("bench: free port: %w", err)
		}
		ports[i] = p
	}
	dir, err := os.MkdirTemp("", "parley-livekit-")
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`port: %d
keys:
  %s: %s
rtc:
  udp_port: %d
  tcp_port: %d
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
logging:
  level: %s
  json: true
`, ports[0], o.APIKey, o.APISecret, ports[2], ports[1], o.LogLevel)
	if o.WebhookURL != "" {
		conf += fmt.Sprintf("webhook:\n  api_key: %s\n  urls:\n    - %q\n", o.APIKey, o.WebhookURL)
	}
	confPath := filepath.Join(dir, "livekit.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	logPath := filepath.Join(dir, "livekit.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(o.Binary, "--dev", "--bind", "127.0.0.1", "--config", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: starting %s: %w", o.Binary, err)
	}
	s := &LiveKitServer{url: fmt.Sprintf("ws://127.0.0.1:%d", ports[0]), httpURL: fmt.Sprintf("http://127.0.0.1:%d/", ports[0]),
		key: o.APIKey, secret: o.APISecret, dir: dir, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { // owned: ends when the process exits; Stop waits for exited
		_ = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	if err := s.waitAnswer(ctx, o.Timeout); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// waitAnswer polls its HTTP port until it answers 200.
func (s *LiveKitServer) waitAnswer(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.httpURL, nil); err == nil {
			if res, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		select {
		case <-tick.C:
		case <-s.exited:
			return fmt.Errorf("bench: livekit-server exited during start-up:\n%s", s.LogTail(40))
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-deadline.C:
			return fmt.Errorf("bench: livekit-server did not answer on %s within %v:\n%s", s.httpURL, timeout, s.LogTail(40))
		}
	}
}

// URL is its WebSocket URL, ws://127.0.0.1:<port>.
func (s *LiveKitServer) URL() string { return s.url }

// APIKey is its API key.
func (s *LiveKitServer) APIKey() string { return s.key }

// APISecret is its API key's secret.
func (s *LiveKitServer) APISecret() string { return s.secret }

// PID is its process id.
func (s *LiveKitServer) PID() int { return s.cmd.Process.Pid }

// Stop ends the process (SIGTERM, SIGKILL after 10 s), waits for it and
// removes its directory. It is idempotent; the error says when the process
// had to be killed.
func (s *LiveKitServer) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(10 * time.Second):
				s.stopErr = errors.New("livekit-server did not stop within 10s; killing it")
				_ = s.cmd.Process.Kill()
				<-s.exited
			}
		}
		_ = os.RemoveAll(s.dir)
	})
	return s.stopErr
}

// Log is its log so far (JSON lines); empty after Stop.
func (s *LiveKitServer) Log() string {
	data, _ := os.ReadFile(s.logPath)
	return string(data)
}

// LogTail is the last n lines of its log.
func (s *LiveKitServer) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(s.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
