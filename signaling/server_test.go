package signaling

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// TestServerGoroutinesBelongToStart checks a Server's goroutines are
// started by Start, not by New: a Server built and dropped, or whose Start
// failed, leaves nothing running; one that started stops everything on
// Shutdown and cannot be started again.
func TestServerGoroutinesBelongToStart(t *testing.T) {
	cfg := configs.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:-1"
	cfg.Listen = "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := broker.New(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	// Not parallel: goleak looks at every goroutine.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	if _, err := New(cfg, BrokerDeps(b), nil, log); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := cfg
	taken.Listen = ln.Addr().String()
	s, err := New(taken, BrokerDeps(b), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Fatal("Start on a taken address succeeded")
	}

	s, err = New(cfg, BrokerDeps(b), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Start after Shutdown: %v, want broker.ErrClosed", err)
	}
}
