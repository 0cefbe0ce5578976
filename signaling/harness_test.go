package signaling_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/agentbridge/echo"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// The handler tests' harness: a real broker (embedded NATS on an ephemeral
// port, a fresh data dir), a real media engine, the Server on 127.0.0.1:0
// and real echo agent workers on NATS with an agent's own credentials:
// what cmd/parley's app starts, in process, without the binary. Tests
// talk to it over HTTP and WebSocket like a browser or a site's server.

// testOrigin is an origin the demo widget allows.
const testOrigin = signalingtest.DemoOrigin

// env is one started edge and its core.
type env struct {
	*signalingtest.Client // talks to the edge, as a browser or a site's server

	t    testing.TB
	cfg  configs.Config
	b    *broker.Broker
	srv  *signaling.Server
	base string
	logs *agenttest.LogBuffer

	stops    []func() // in start order; stop runs them in reverse
	stopOnce sync.Once
}

// stop stops what startEnv started, the edge first and the broker last,
// as cmd/parley's app does; it runs once (also at the test's cleanup).
func (e *env) stop() {
	e.stopOnce.Do(func() {
		for i := len(e.stops) - 1; i >= 0; i-- {
			e.stops[i]()
		}
	})
}

// noEcho starts no echo worker (the test runs its own agent).
func noEcho(c *configs.Config) { c.EchoAgent.Enabled = false }

// withWidget adds a widget to the config.
func withWidget(w configs.WidgetConfig) func(*configs.Config) {
	w.Normalize()
	return func(c *configs.Config) { c.Widgets = append(c.Widgets, w) }
}

// startEnv starts the edge with the test config, changed by opts; the
// test's cleanup stops it in the order cmd/parley's app does.
func startEnv(t testing.TB, opts ...func(*configs.Config)) *env {
	t.Helper()
	cfg := signalingtest.Config(t)
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &agenttest.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	e := &env{t: t, cfg: cfg, logs: logs}
	t.Cleanup(e.stop)
	e.b = broker.New(cfg, log)
	e.stops = append(e.stops, e.b.Close)
	if err := e.b.Start(ctx); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	m := cfg.Media
	engine, err := media.NewEngine(media.Config{
		UDPPort: m.UDPPort, PortMin: uint16(m.PortMin), PortMax: uint16(m.PortMax),
		NAT1To1IPs: m.NAT1To1IPs, Interfaces: m.Interfaces, IncludeLoopback: m.IncludeLoopback,
		DisconnectedTimeout: m.DisconnectedTimeout, FailedTimeout: m.FailedTimeout,
		JitterWindow: m.JitterWindow, SilenceTimeout: m.SilenceTimeout, PlayoutQueue: m.PlayoutQueueFrames,
	}, log.With("component", "media"))
	if err != nil {
		t.Fatalf("media engine: %v", err)
	}
	// The engine closes after the broker, which hangs up the voice legs
	// on it.
	e.stops = slices.Insert(e.stops, 0, func() {
		if err := engine.Close(); err != nil {
			t.Errorf("close media engine: %v", err)
		}
	})
	e.srv, err = signaling.New(cfg, signaling.BrokerDeps(e.b), engine, log)
	if err != nil {
		t.Fatalf("signaling: %v", err)
	}
	if err := e.srv.Start(); err != nil {
		t.Fatalf("start signaling: %v", err)
	}
	e.base = "http://" + e.srv.Addr()
	e.Client = &signalingtest.Client{T: t, Base: e.base, MetricsKey: signalingtest.NewMetricsKey(t, e.b)}
	if cfg.EchoAgent.Enabled {
		opts, err := e.b.ClientOptions(broker.AgentRole(cfg.EchoAgent.Agent))
		if err != nil {
			t.Fatalf("echo agent credentials: %v", err)
		}
		nc, err := nats.Connect(e.b.NATSClientURL(), append(opts,
			agentbridge.ConnectOptions(cfg.NATS.Prefix, cfg.EchoAgent.Agent)...)...)
		if err != nil {
			t.Fatalf("echo agent: connect: %v", err)
		}
		e.stops = append(e.stops, nc.Close)
		for range cfg.EchoAgent.Workers {
			w, err := agentbridge.NewWorker(nc, agentbridge.Options{Agent: cfg.EchoAgent.Agent,
				Prefix: cfg.NATS.Prefix, Logger: log}, echo.Agent{}.Run)
			if err == nil {
				err = w.Start()
			}
			if err != nil {
				t.Fatalf("echo worker: %v", err)
			}
			e.stops = append(e.stops, func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := w.Drain(ctx); err != nil {
					t.Errorf("echo agent drain: %v", err)
				}
			})
		}
	}
	// Last in, so first out: the edge stops before its agents and its
	// core (in-flight requests finish storing, WebSockets close with 1001).
	e.stops = append(e.stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e
}

// natsConnAs connects a client to the env's NATS with the credentials of
// role (broker.RoleOperator, broker.AgentRole(name), …).
func (e *env) natsConnAs(role string, extra ...nats.Option) *nats.Conn {
	e.t.Helper()
	return signalingtest.ConnectAs(e.t, e.b, role, extra...)
}

// agentConn connects as a worker of agent: the agent's credentials and
// inbox prefix.
func (e *env) agentConn(agent string, extra ...nats.Option) *nats.Conn {
	e.t.Helper()
	return signalingtest.ConnectAgent(e.t, e.b, agent, extra...)
}

// The client side is signalingtest's, shared with cmd/parley's
// end-to-end tests; these names keep the tests short.
type (
	response    = signalingtest.Response
	session     = signalingtest.Session
	frame       = signalingtest.Frame
	wsClient    = signalingtest.WSClient
	voiceClient = signalingtest.VoiceClient
)

// readLog reads a conversation's whole log.
func (e *env) readLog(cid string) []agentbridge.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := e.b.ReadLog(ctx, cid, 0)
	if err != nil {
		e.t.Fatalf("read log: %v", err)
	}
	return evs
}
