package livekitserver

import (
	"cmp"
	"context"
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

// Environment of the LiveKit tests.
const (
	// EnvServer names the livekit-server binary (default
	// .cache/bin/livekit-server under the module root, built by `make
	// livekit`).
	EnvServer = "PARLEY_LIVEKIT_SERVER"
	// EnvRequire set to "1" makes the LiveKit tests fail instead of
	// skip without the binary.
	EnvRequire = "PARLEY_REQUIRE_LIVEKIT"
)

// The API key and secret a server has unless Options say otherwise.
const (
	DevKey = "devkey"
	// DevSecret replaces --dev's placeholder secret ("secret"), which
	// Parley's livekit.api_secret validation (at least 8 characters)
	// rejects; LiveKit itself wants 32 outside dev mode.
	DevSecret = "parley-test-secret-0123456789abcdef"
)

// DefaultStartLimit is how long Start waits for the server to answer.
const DefaultStartLimit = 30 * time.Second

// Stop's waits: after SIGTERM, a second SIGTERM after stopRetry, SIGKILL
// after stopGrace.
const (
	stopRetry = time.Second
	stopGrace = 10 * time.Second
)

// ErrNoServer is returned by FindServer when livekit-server is missing.
var ErrNoServer = errors.New("livekit-server is missing")

// ErrKilled is returned by Stop when the server did not stop within 10 s
// of SIGTERM and was killed.
var ErrKilled = errors.New("livekit-server did not stop within 10s; killed it")

// Options shape a livekit-server started by Start. The zero value is a
// server with DevKey and DevSecret, logging at info, in a new temporary
// directory.
type Options struct {
	// Binary is the livekit-server to run; empty: FindServer("").
	Binary string
	// APIKey and APISecret are its one key pair (defaults DevKey and
	// DevSecret, each on its own).
	APIKey, APISecret string
	// WebhookURL, if set, receives the server's webhooks, signed with
	// APIKey.
	WebhookURL string
	// LogLevel is the server's log level (default "info"); JSONLog
	// makes it log JSON.
	LogLevel string
	JSONLog  bool
	// Dir holds the config and the log; empty: a new temporary
	// directory, removed by Stop.
	Dir string
	// StartLimit bounds the wait for the server to answer (default
	// DefaultStartLimit).
	StartLimit time.Duration
	// SysProcAttr, if set, is the child process's (a command may want
	// its own process group and a parent-death signal).
	SysProcAttr *syscall.SysProcAttr
}

// Server is a running livekit-server.
type Server struct {
	// URL is its WebSocket URL (ws://127.0.0.1:<port>), HTTPURL the same
	// port over HTTP, with a trailing slash.
	URL, HTTPURL string
	// APIKey and APISecret are its key pair.
	APIKey, APISecret string
	// UDPPort and TCPPort carry its media.
	UDPPort, TCPPort int
	// LogPath is where its output goes.
	LogPath string
	// Started is from the process start to its first HTTP answer.
	Started time.Duration

	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has exited
	tempDir string        // removed by Stop; "" when Options.Dir was given
	startAt time.Time     // when the process started
	once    sync.Once
	stopErr error
}

// FindServer is the livekit-server binary: path if given, else
// $PARLEY_LIVEKIT_SERVER, else .cache/bin/livekit-server under the module
// root (the first directory holding go.mod, from the working directory
// up). The error wraps ErrNoServer and says how to get it.
func FindServer(path string) (string, error) {
	if path == "" {
		path = os.Getenv(EnvServer)
	}
	if path == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("%w: %v; build it with `make livekit` or set %s", ErrNoServer, err, EnvServer)
		}
		path = filepath.Join(root, ".cache", "bin", "livekit-server")
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return path, fmt.Errorf("%w (%s): build it with `make livekit` (about 90 s, once) or set %s", ErrNoServer, path, EnvServer)
	}
	return path, nil
}

// moduleRoot is the directory holding go.mod, from the working directory
// up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePort is a port that was free on 127.0.0.1 a moment ago: bound with
// port 0 and closed again (network "tcp" or "udp"). The caller binds it
// later, so it fits a child process that must be told its ports.
func FreePort(network string) (int, error) {
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

// Start starts livekit-server --dev on free loopback ports and waits,
// polling HTTP, until it answers, it exits, ctx ends or the start limit
// passes; on failure the process is stopped and the error carries its
// log's tail. The caller must Stop a returned server.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := FindServer(opts.Binary)
	if err != nil {
		return nil, err
	}
	opts.APIKey = cmp.Or(opts.APIKey, DevKey)
	opts.APISecret = cmp.Or(opts.APISecret, DevSecret)
	opts.LogLevel = cmp.Or(opts.LogLevel, "info")
	if opts.StartLimit <= 0 {
		opts.StartLimit = DefaultStartLimit
	}
	var ports [3]int // HTTP, RTC over TCP, RTC over UDP
	for i, nw := range []string{"tcp", "tcp", "udp"} {
		if ports[i], err = FreePort(nw); err != nil {
			return nil, fmt.Errorf("livekit-server: free port: %w", err)
		}
	}
	s := &Server{URL: fmt.Sprintf("ws://127.0.0.1:%d", ports[0]), HTTPURL: fmt.Sprintf("http://127.0.0.1:%d/", ports[0]),
		APIKey: opts.APIKey, APISecret: opts.APISecret, TCPPort: ports[1], UDPPort: ports[2], exited: make(chan struct{})}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "parley-livekit-"); err != nil {
			return nil, err
		}
		s.tempDir = dir
	}
	if err := s.launch(bin, dir, ports[0], opts); err != nil {
		s.removeDir()
		return nil, err
	}
	if err := s.waitReady(ctx, opts.StartLimit); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// launch writes the config and starts the process, with a goroutine
// (owned by s: it ends when the process exits, and Stop waits for that)
// that reaps it.
func (s *Server) launch(bin, dir string, port int, opts Options) error {
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
`, port, opts.APIKey, opts.APISecret, s.UDPPort, s.TCPPort, opts.LogLevel)
	if opts.JSONLog {
		conf += "  json: true\n"
	}
	if opts.WebhookURL != "" {
		conf += fmt.Sprintf("webhook:\n  api_key: %s\n  urls:\n    - %q\n", opts.APIKey, opts.WebhookURL)
	}
	confPath := filepath.Join(dir, "livekit.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	s.LogPath = filepath.Join(dir, "livekit.log")
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(bin, "--dev", "--bind", "127.0.0.1", "--config", confPath)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = opts.SysProcAttr
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	s.startAt = start
	go func() {
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	return nil
}

// waitReady polls the server's HTTP port until it answers 200 OK.
func (s *Server) waitReady(ctx context.Context, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.answers(ctx, client) {
			s.Started = time.Since(s.startAt)
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("livekit-server exited during start-up:\n%s", s.LogTail(40))
		case <-ctx.Done():
			return fmt.Errorf("livekit-server start-up: %w", context.Cause(ctx))
		case <-deadline.C:
			return fmt.Errorf("livekit-server did not answer on %s within %s:\n%s", s.HTTPURL, limit, s.LogTail(40))
		case <-tick.C:
		}
	}
}

// answers reports whether the server answers GET / with 200 OK.
func (s *Server) answers(ctx context.Context, client *http.Client) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.HTTPURL, nil)
	if err != nil {
		return false
	}
	res, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Exited is closed once the server's process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Stop ends the process this Server started, by its id: SIGTERM; SIGTERM
// again if it is still running a second later; SIGKILL (returning
// ErrKilled) if it has not exited 10 s after the first. The second
// SIGTERM is there because livekit-server v1.11 ignores one that comes
// within 100 ms of its first HTTP answer (it counts itself running only
// then), and forces the shutdown on the second. Then Stop removes the
// temporary directory Start made. It is idempotent.
func (s *Server) Stop() error {
	s.once.Do(func() {
		s.stopErr = s.stop()
		s.removeDir()
	})
	return s.stopErr
}

func (s *Server) stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	grace := time.NewTimer(stopGrace)
	defer grace.Stop()
	retry := time.NewTimer(stopRetry)
	defer retry.Stop()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	for {
		select {
		case <-s.exited:
			return nil
		case <-retry.C:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
		case <-grace.C:
			_ = s.cmd.Process.Kill()
			<-s.exited
			return ErrKilled
		}
	}
}

func (s *Server) removeDir() {
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
}

// Log is the server's log so far ("" once Stop has removed a temporary
// directory).
func (s *Server) Log() string {
	data, _ := os.ReadFile(s.LogPath)
	return string(data)
}

// LogTail is the last n lines of the server's log ("" once Stop has
// removed a temporary directory).
func (s *Server) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(s.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
