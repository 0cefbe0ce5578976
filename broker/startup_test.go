package broker

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// logBuffer collects a broker's logs for assertions.
type logBuffer struct{ agenttest.LogBuffer }

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// freePort returns a free loopback port below the kernel's ephemeral range
// (32768 and up), chosen at random: the tests bind it only later, and a
// port from that range may meanwhile be given to any outgoing connection.
func freePort(t *testing.T) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

func embeddedConfig(t *testing.T) configs.Config {
	cfg := configs.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:-1"
	cfg.EchoAgent.Enabled = false
	return cfg
}

// TestStartDataDirUnusable: a data directory that cannot be created (it
// lies under a regular file, which fails as root too) fails Start at once
// with the operating system's error, not after 30 s with "did not become
// ready".
func TestStartDataDirUnusable(t *testing.T) {
	cfg := embeddedConfig(t)
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(file, "data"), file} {
		cfg.DataDir = dir
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		err := New(cfg, slog.New(slog.DiscardHandler)).Start(ctx)
		cancel()
		took := time.Since(start)
		t.Logf("data dir %s: Start failed in %s: %v", dir, took.Round(time.Millisecond), err)
		if err == nil || !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), "data dir") {
			t.Fatalf("Start with data dir %s = %v, want the real cause (not a directory)", dir, err)
		}
		if took > 10*time.Second {
			t.Errorf("Start took %s to fail", took)
		}
	}
}

// TestStartReportsServerFatal: when nats-server itself fails to start (its
// client port is taken), Start returns the server's own error at once.
func TestStartReportsServerFatal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := embeddedConfig(t)
	cfg.NATS.Listen = ln.Addr().String()
	start := time.Now()
	err = New(cfg, slog.New(slog.DiscardHandler)).Start(t.Context())
	took := time.Since(start)
	t.Logf("Start failed in %s: %v", took.Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start = %v, want nats-server's listen error", err)
	}
	if took > 10*time.Second {
		t.Errorf("Start took %s to fail", took)
	}
}

// runNATSAt starts a JetStream nats-server on port, with optional
// user/password authentication.
func runNATSAt(t *testing.T, port int, user, pass string) *server.Server {
	t.Helper()
	return agenttest.RunNATS(t, func(o *server.Options) { o.Port, o.Username, o.Password = port, user, pass })
}

// TestStartRetriesUntilNATSUp: a broker started before its external NATS
// retries (logging each retry at WARN) and starts once NATS is up; an
// authentication error is not retried.
func TestStartRetriesUntilNATSUp(t *testing.T) {
	port := freePort(t)
	cfg := configs.Default()
	cfg.NATS.URL = "nats://127.0.0.1:" + itoa(port)
	cfg.NATS.StartTimeout = time.Minute
	logs := &logBuffer{}
	b := New(cfg, logs.logger())
	done := make(chan error, 1)
	go func() { done <- b.Start(t.Context()) }()
	agenttest.Poll(t, 20*time.Second, "a retry to be logged", func() bool {
		return strings.Contains(logs.String(), "retrying start-up")
	})
	runNATSAt(t, port, "", "")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start after NATS came up: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start did not return after NATS came up")
	}
	defer b.Close()
	if err := b.Ready(t.Context()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	t.Logf("retries logged: %d", strings.Count(logs.String(), "retrying start-up"))

	// Authentication failures are not transient: no retry.
	authPort := freePort(t)
	runNATSAt(t, authPort, "parley", "right")
	cfg.NATS.URL = "nats://parley:wrong@127.0.0.1:" + itoa(authPort)
	logs2 := &logBuffer{}
	start := time.Now()
	err := New(cfg, logs2.logger()).Start(t.Context())
	if err == nil || strings.Contains(logs2.String(), "retrying start-up") {
		t.Fatalf("Start with a wrong password = %v after %s, logs:\n%s", err, time.Since(start), logs2.String())
	}
	t.Logf("auth failure after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestStartCancelledWhileRetrying: cancelling Start's context while it
// waits for NATS returns promptly with the context's error.
func TestStartCancelledWhileRetrying(t *testing.T) {
	cfg := configs.Default()
	cfg.NATS.URL = "nats://127.0.0.1:" + itoa(freePort(t))
	cfg.NATS.StartTimeout = 10 * time.Minute
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- New(cfg, logs.logger()).Start(ctx) }()
	agenttest.Poll(t, 20*time.Second, "a retry to be logged", func() bool {
		return strings.Contains(logs.String(), "retrying start-up")
	})
	cancel()
	cancelled := time.Now()
	select {
	case err := <-done:
		t.Logf("Start returned %s after cancel: %v", time.Since(cancelled).Round(time.Millisecond), err)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Start = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after its context was cancelled")
	}
}

// TestStartGivesUpAfterStartTimeout: with NATS never coming up, Start fails
// after nats.start_timeout naming the setting and the last cause.
func TestStartGivesUpAfterStartTimeout(t *testing.T) {
	cfg := configs.Default()
	cfg.NATS.URL = "nats://127.0.0.1:" + itoa(freePort(t))
	cfg.NATS.StartTimeout = time.Second
	err := New(cfg, slog.New(slog.DiscardHandler)).Start(t.Context())
	t.Logf("Start: %v", err)
	if err == nil || !strings.Contains(err.Error(), "nats.start_timeout") || !strings.Contains(err.Error(), "no servers available") {
		t.Fatalf("Start = %v, want a give-up error naming nats.start_timeout and the cause", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestEmbeddedSyncPolicy: nats.sync and nats.sync_interval reach the
// embedded server's JetStream.
func TestEmbeddedSyncPolicy(t *testing.T) {
	for _, tc := range []struct {
		sync     string
		interval time.Duration
	}{{configs.SyncAlways, 2 * time.Minute}, {configs.SyncInterval, 5 * time.Second}} {
		cfg := embeddedConfig(t)
		cfg.NATS.Sync, cfg.NATS.SyncInterval = tc.sync, tc.interval
		b := New(cfg, slog.New(slog.DiscardHandler))
		if err := b.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		jc := b.ns.JetStreamConfig()
		b.Close()
		t.Logf("sync %s interval %s: server SyncAlways=%v SyncInterval=%s", tc.sync, tc.interval, jc.SyncAlways, jc.SyncInterval)
		if jc.SyncAlways != (tc.sync == configs.SyncAlways) || tc.sync == configs.SyncInterval && jc.SyncInterval != tc.interval {
			t.Errorf("sync %s interval %s: server has SyncAlways=%v SyncInterval=%s", tc.sync, tc.interval, jc.SyncAlways, jc.SyncInterval)
		}
	}
}
