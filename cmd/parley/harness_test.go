package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// testOrigin is an origin the demo widget allows.
const testOrigin = signalingtest.DemoOrigin

// env is a Parley started in-process the way serve starts it, on ephemeral
// ports with a fresh data dir.
type env struct {
	*signalingtest.Client // talks to the edge, as a browser or a site's server

	t    testing.TB
	cfg  configs.Config
	app  *app
	base string
	logs *syncBuffer
}

// syncBuffer collects logs of a run (tests grep them for secrets).
type syncBuffer = agenttest.LogBuffer

// testConfig is signalingtest's test configuration (this package's tests
// and benchmarks call it by this name).
func testConfig(t testing.TB) configs.Config { return signalingtest.Config(t) }

// startEnv starts Parley with the test config, changed by opts.
func startEnv(t testing.TB, opts ...func(*configs.Config)) *env {
	t.Helper()
	cfg := testConfig(t)
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := newApp(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	e := &env{t: t, cfg: cfg, app: a, base: "http://" + a.server.Addr(), logs: logs}
	e.Client = &signalingtest.Client{T: t, Base: e.base, MetricsKey: signalingtest.NewMetricsKey(t, a.broker)}
	t.Cleanup(e.stop)
	return e
}

// envAt is an env for a Parley at base that the test started some other
// way (a child process): a client, and no app to stop.
func envAt(t testing.TB, base string) *env {
	return &env{Client: &signalingtest.Client{T: t, Base: base}, t: t, base: base}
}

func (e *env) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.app.Stop(ctx); err != nil {
		e.t.Errorf("stop: %v", err)
	}
}

// natsConn connects a client with full permissions (the operator tools'
// credentials) to the env's NATS.
func (e *env) natsConn() *nats.Conn {
	e.t.Helper()
	return e.natsConnAs(broker.RoleOperator)
}

// natsConnAs connects a client to the env's NATS with the credentials of
// role (broker.RoleOperator, broker.AgentRole(name), …): the one way tests
// reach the authenticated embedded server.
func (e *env) natsConnAs(role string, extra ...nats.Option) *nats.Conn {
	e.t.Helper()
	return signalingtest.ConnectAs(e.t, e.app.broker, role, extra...)
}

// agentConn connects as a worker of agent: the agent's credentials and
// inbox prefix (protocol v2).
func (e *env) agentConn(agent string, extra ...nats.Option) *nats.Conn {
	e.t.Helper()
	return signalingtest.ConnectAgent(e.t, e.app.broker, agent, extra...)
}

// startWorker starts one echo worker on its own connection.
func (e *env) startWorker() *agentbridge.Worker {
	e.t.Helper()
	return e.startAgent(echoAgent)
}

// startAgent starts one worker of the default agent running h, on its own
// connection.
func (e *env) startAgent(h agentbridge.Handler) *agentbridge.Worker {
	e.t.Helper()
	return signalingtest.StartWorker(e.t, e.agentConn(configs.DefaultAgent), configs.DefaultAgent, h)
}

// chatSession starts a session, dials its WebSocket and has one chat turn
// on it (body, as client message clientID) answered by the echo agent.
func (e *env) chatSession(clientID, body string) (session, *wsClient) {
	e.t.Helper()
	return e.chatSessionReply(clientID, body, "echo: "+body)
}

// chatSessionReply is chatSession with the reply the agent must give.
func (e *env) chatSessionReply(clientID, body, reply string) (session, *wsClient) {
	e.t.Helper()
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	ws.Send(map[string]any{"type": "message", "body": body, "client_message_id": clientID})
	signalingtest.ExpectReply(e.t, ws, clientID, reply)
	return s, ws
}

// voiceSession starts a session, dials its WebSocket and connects a call
// on it: the start of the tests that talk and chat on one session.
func (e *env) voiceSession() (session, *wsClient, *voiceClient) {
	e.t.Helper()
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	call := e.NewVoiceClient(s)
	call.WaitConnected()
	return s, ws, call
}

// The client side is signalingtest's, shared with signaling's handler
// tests; these names keep the tests short.
type (
	response    = signalingtest.Response
	session     = signalingtest.Session
	frame       = signalingtest.Frame
	wsClient    = signalingtest.WSClient
	voiceClient = signalingtest.VoiceClient
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// closeReason is the reason of a close frame, or "".
func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}

// settle has one chat turn answered on s, so that an agent worker holds the
// conversation with everything it runs for it started: take a goroutine
// baseline after this, not before (the dispatch may finish late on a busy
// machine).
func (e *env) settle(s session, ws *wsClient) {
	e.t.Helper()
	if r := e.Post(s, "hello", "settle-1", true); r.Status != http.StatusOK && r.Status != http.StatusCreated {
		e.t.Fatalf("chat turn: %d %s", r.Status, r.Raw)
	}
	if f, _ := ws.Until("done"); f.Str("body") != "echo: hello" {
		e.t.Fatalf("chat reply %v", f)
	}
}
