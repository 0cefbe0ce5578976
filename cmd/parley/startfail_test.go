package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/configs"
)

// TestStartFailureStopsEverything makes each step of (*app).Start fail in
// turn: whatever it had started (broker and embedded NATS, media engine,
// HTTP server and its sweeper, LiveKit, echo workers) is stopped, no
// goroutine is left, and Parley starts again on the same data dir.
func TestStartFailureStopsEverything(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, cfg *configs.Config)
	}{
		{"data dir unusable", func(t *testing.T, cfg *configs.Config) {
			f := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.DataDir = f // the broker fails, before anything else started
		}},
		{"media port range empty", func(_ *testing.T, cfg *configs.Config) {
			cfg.Media.PortMin, cfg.Media.PortMax = 50001, 50000 // NewEngine refuses, after the broker started
		}},
		{"http listen address taken", func(t *testing.T, cfg *configs.Config) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			cfg.Listen = ln.Addr().String()
		}},
		{"livekit without credentials", func(_ *testing.T, cfg *configs.Config) {
			cfg.LiveKit.URL = "ws://127.0.0.1:1" // never dialled: NewLiveKit refuses first
			cfg.LiveKit.APIKey, cfg.LiveKit.APISecret = "", ""
		}},
		{"echo agent name invalid", func(_ *testing.T, cfg *configs.Config) {
			cfg.EchoAgent.Enabled, cfg.EchoAgent.Workers = true, 1
			cfg.EchoAgent.Agent = "not one token"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			good := cfg
			tc.break_(t, &cfg)
			func() {
				// Not parallel: goleak looks at every goroutine.
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
				a := newApp(cfg, discardLogger())
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := a.Start(ctx); err == nil {
					_ = a.Stop(ctx)
					t.Fatal("Start succeeded")
				} else {
					t.Logf("Start: %v", err)
				}
				if a.server != nil && a.server.Addr() != "" && a.server.Addr() != cfg.Listen {
					// The HTTP port it had bound is free again.
					ln, err := net.Listen("tcp", a.server.Addr())
					if err != nil {
						t.Errorf("http port still bound: %v", err)
					} else {
						_ = ln.Close()
					}
				}
			}()
			// The data dir (JetStream store, NATS credentials) was released.
			a := newApp(good, discardLogger())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := a.Start(ctx); err != nil {
				t.Fatalf("second start on the same data dir: %v", err)
			}
			if err := a.Stop(ctx); err != nil {
				t.Fatalf("stop: %v", err)
			}
		})
	}
}
