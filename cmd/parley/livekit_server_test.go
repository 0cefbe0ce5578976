package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-rtc/parley/configs"
)

// A real livekit-server for the LiveKit tests: `make livekit` builds
// v1.11.0 from its Go module into .cache/bin; the tests start it in --dev
// mode (keys devkey / secret) on loopback, on free ports, with webhooks to
// the Parley under test. Its keys are devkey and liveKitDevSecret.

// Environment of the LiveKit tests.
const (
	envLiveKitServer  = "PARLEY_LIVEKIT_SERVER"  // path of livekit-server (default .cache/bin/livekit-server)
	envRequireLiveKit = "PARLEY_REQUIRE_LIVEKIT" // "1": fail instead of skipping without it
	liveKitDevKey     = "devkey"
	// liveKitDevSecret replaces --dev's placeholder secret ("secret"),
	// which livekit.api_secret's validation (at least 8 characters)
	// rejects; LiveKit itself wants 32 outside dev mode.
	liveKitDevSecret  = "parley-test-secret-0123456789abcdef"
	liveKitStartLimit = 30 * time.Second
)

// liveKitServerPath finds livekit-server, or skips (fails under
// PARLEY_REQUIRE_LIVEKIT=1) loudly.
func liveKitServerPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv(envLiveKitServer)
	if path == "" {
		root, err := repoRoot()
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(root, ".cache", "bin", "livekit-server")
	}
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		return path
	}
	msg := fmt.Sprintf("\n################################################################\n"+
		"## livekit-server is missing (%s).\n"+
		"## Build it with `make livekit` (about 90 s, once) or set %s.\n"+
		"################################################################", path, envLiveKitServer)
	if os.Getenv(envRequireLiveKit) == "1" {
		t.Fatalf("%s\n## %s=1: the LiveKit tests must run.", msg, envRequireLiveKit)
	}
	t.Skipf("%s\n## SKIPPING the LiveKit test %s.", msg, t.Name())
	return ""
}

// repoRoot is the directory holding go.mod, from the test's directory up.
func repoRoot() (string, error) {
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
			return "", fmt.Errorf("no go.mod above the test directory")
		}
		dir = parent
	}
}

// freePort returns a port that was free a moment ago on 127.0.0.1: bound
// with port 0 and closed again (network "tcp" or "udp").
func freePort(t testing.TB, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
}

// liveKitServer is a running livekit-server.
type liveKitServer struct {
	url     string // ws://127.0.0.1:<port>
	httpURL string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	started time.Duration // process start → first HTTP answer
}

// startLiveKitServer starts livekit-server --dev on free loopback ports,
// sending webhooks to webhookURL (if set), and waits until it answers HTTP.
// It is stopped (SIGTERM, then SIGKILL) when the test ends.
func startLiveKitServer(t *testing.T, webhookURL string) *liveKitServer {
	t.Helper()
	bin := liveKitServerPath(t)
	dir := t.TempDir()
	port, tcpPort, udpPort := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "udp")
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
  level: info
`, port, liveKitDevKey, liveKitDevSecret, udpPort, tcpPort)
	if webhookURL != "" {
		conf += fmt.Sprintf("webhook:\n  api_key: %s\n  urls:\n    - %q\n", liveKitDevKey, webhookURL)
	}
	confPath := filepath.Join(dir, "livekit.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "livekit.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--dev", "--bind", "127.0.0.1", "--config", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	s := &liveKitServer{url: fmt.Sprintf("ws://127.0.0.1:%d", port), httpURL: fmt.Sprintf("http://127.0.0.1:%d/", port),
		logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("livekit-server log (tail):\n%s", s.logTail(60))
		}
	})
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(liveKitStartLimit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := client.Get(s.httpURL)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-s.exited:
			t.Fatalf("livekit-server exited during start-up:\n%s", s.logTail(40))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("livekit-server did not answer on %s within %s:\n%s", s.httpURL, liveKitStartLimit, s.logTail(40))
		}
	}
	s.started = time.Since(start)
	t.Logf("livekit-server up on %s (udp %d, tcp %d) in %s", s.url, udpPort, tcpPort, s.started.Round(time.Millisecond))
	return s
}

// stop ends the process this test started, by its id: SIGTERM, and
// SIGKILL if it has not exited after 10 s.
func (s *liveKitServer) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// logTail is the last n lines of the server's log.
func (s *liveKitServer) logTail(n int) string {
	data, _ := os.ReadFile(s.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// liveKitWidgetKey is the public key of the test widget whose voice goes
// over LiveKit.
const liveKitWidgetKey = "pk_livekit"

// liveKitEnv is a Parley configured for a real livekit-server, with a
// livekit widget (voice_transport: livekit) allowed from testOrigin.
type liveKitEnv struct {
	*env
	lk *liveKitServer
}

// startLiveKitEnv starts livekit-server (webhooks to Parley) and then
// Parley with livekit.url pointing at it; opts change Parley's config.
// LiveKit stops after Parley, so Parley's bridges can still leave and
// delete their rooms when it shuts down.
func startLiveKitEnv(t *testing.T, opts ...func(*configs.Config)) *liveKitEnv {
	t.Helper()
	parleyPort := freePort(t, "tcp")
	lk := startLiveKitServer(t, fmt.Sprintf("http://127.0.0.1:%d/v1/livekit/webhook", parleyPort))
	opts = append([]func(*configs.Config){voiceConfig, func(c *configs.Config) {
		c.Listen = "127.0.0.1:" + strconv.Itoa(parleyPort)
		c.LiveKit.URL, c.LiveKit.APIKey, c.LiveKit.APISecret = lk.url, liveKitDevKey, liveKitDevSecret
	}, withWidget(configs.WidgetConfig{Key: liveKitWidgetKey, ID: "wdg_livekit", AllowDevOrigins: true,
		VoiceTransport: "livekit"})}, opts...)
	return &liveKitEnv{env: startEnv(t, opts...), lk: lk}
}
