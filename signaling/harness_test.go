package signaling_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media"
	"github.com/parley-rtc/parley/signaling"
)

// The handler tests' harness: a real broker (embedded NATS on an ephemeral
// port, a fresh data dir), a real media engine, the Server on 127.0.0.1:0
// and real echo agent workers on NATS with an agent's own credentials:
// what cmd/parley's app starts, in process, without the binary. Tests
// talk to it over HTTP and WebSocket like a browser or a site's server.

// testOrigin is an origin the demo widget allows.
const testOrigin = "http://localhost:3000"

// env is one started edge and its core.
type env struct {
	t    testing.TB
	cfg  configs.Config
	b    *broker.Broker
	srv  *signaling.Server
	base string
	logs *syncBuffer

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

// syncBuffer collects logs of a run (tests grep them for secrets).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testConfig(t testing.TB) configs.Config {
	cfg := configs.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATS.Listen = "127.0.0.1:-1"
	cfg.DataDir = t.TempDir()
	cfg.Agents.DispatchTimeout = 500 * time.Millisecond
	cfg.Agents.DispatchRetryMax = 250 * time.Millisecond
	cfg.Chat.ReplyTimeout = 10 * time.Second
	// Tests make many sessions from 127.0.0.1; the limits have their own
	// test.
	for _, rc := range []*configs.RateConfig{&cfg.Limits.Resolve, &cfg.Limits.Sessions,
		&cfg.Limits.Messages, &cfg.Limits.Captures, &cfg.Limits.Uploads} {
		rc.PerIP, rc.PerWidget = "0", "0"
	}
	return cfg
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
	cfg := testConfig(t)
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
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
				Prefix: cfg.NATS.Prefix, Logger: log}, echoAgent)
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
	opts, err := e.b.ClientOptions(role)
	if err != nil {
		e.t.Fatalf("nats credentials: %v", err)
	}
	nc, err := nats.Connect(e.b.NATSClientURL(), append(opts, extra...)...)
	if err != nil {
		e.t.Fatalf("nats connect: %v", err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// agentConn connects as a worker of agent: the agent's credentials and
// inbox prefix.
func (e *env) agentConn(agent string, extra ...nats.Option) *nats.Conn {
	e.t.Helper()
	opts := append(agentbridge.ConnectOptions(e.b.Subjects().Prefix, agent), extra...)
	return e.natsConnAs(broker.AgentRole(agent), opts...)
}

// echoChunks is how many chunks the echo agent streams a reply in.
const echoChunks = 3

// echoAgent answers every visitor message with "echo: <text>", streamed in
// a few chunks, sends every audio frame back unchanged and acknowledges
// mode changes with its state: cmd/parley's echo agent without its
// utterance detector (no transcripts).
func echoAgent(ctx context.Context, c *agentbridge.Conversation) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-c.Audio():
			_ = c.SendAudio(f) // audio is best effort
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			switch ev.Type {
			case agentbridge.EventUserMessage:
				r := c.NewReply(ev.MessageID)
				for _, part := range split("echo: "+ev.Text, echoChunks) {
					if err := r.Write(ctx, part); err != nil {
						return err
					}
				}
				if err := r.Done(ctx); err != nil {
					return err
				}
			case agentbridge.EventModeChanged:
				state := agentbridge.StateIdle
				if ev.Mode == agentbridge.ModeVoice {
					state = agentbridge.StateListening
				}
				if err := c.SetState(ctx, state, ""); err != nil {
					return err
				}
			}
		}
	}
}

// split cuts s into at most n parts of similar length on rune boundaries.
func split(s string, n int) []string {
	runes := utf8.RuneCountInString(s)
	size := max((runes+n-1)/n, 1)
	parts := make([]string, 0, n)
	for len(s) > 0 {
		i, count := 0, 0
		for i < len(s) && count < size {
			_, w := utf8.DecodeRuneInString(s[i:])
			i += w
			count++
		}
		parts = append(parts, s[:i])
		s = s[i:]
	}
	return parts
}

// response is a decoded HTTP response.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r response) errCode() string {
	if e, ok := r.body["error"].(map[string]any); ok {
		code, _ := e["code"].(string)
		return code
	}
	return ""
}

func (r response) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

// do sends a request; body may be a string (sent raw) or a value (JSON).
func (e *env) do(method, path string, body any, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return e.send(req)
}

// doRaw sends a body with an explicit content type.
func (e *env) doRaw(method, path, contentType, body string, headers ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	r := e.send(req)
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		r.body = nil
	}
	return r
}

func (e *env) send(req *http.Request) response {
	e.t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r.body)
	}
	return r
}

// resolve returns a fresh challenge for the demo widget from origin.
func (e *env) resolve(origin string) string {
	e.t.Helper()
	r := e.do("POST", "/v1/widget/resolve", map[string]any{"widget_key": configs.DemoWidgetKey}, "Origin", origin)
	if r.status != http.StatusOK || r.str("challenge") == "" {
		e.t.Fatalf("resolve: %d %s", r.status, r.raw)
	}
	return r.str("challenge")
}

// session is a created session.
type session struct {
	ID, ConversationID, Token, ResumeToken string
	Resumed                                bool
}

func (e *env) newSession(extra map[string]any) session {
	e.t.Helper()
	req := map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": e.resolve(testOrigin), "mode": "chat"}
	for k, v := range extra {
		req[k] = v
	}
	r := e.do("POST", "/v1/sessions", req, "Origin", testOrigin)
	if r.status != http.StatusCreated {
		e.t.Fatalf("create session: %d %s", r.status, r.raw)
	}
	resumed, _ := r.body["resumed"].(bool)
	return session{ID: r.str("session_id"), ConversationID: r.str("conversation_id"),
		Token: r.str("session_token"), ResumeToken: r.str("resume_token"), Resumed: resumed}
}

func (e *env) post(s session, body, clientID string, wait bool) response {
	e.t.Helper()
	return e.do("POST", "/v1/sessions/"+s.ID+"/messages",
		map[string]any{"body": body, "client_message_id": clientID, "wait": wait},
		"Authorization", "Bearer "+s.Token)
}

func (e *env) history(s session) []map[string]any {
	e.t.Helper()
	r := e.do("GET", "/v1/sessions/"+s.ID+"/history?message_limit=500", nil, "Authorization", "Bearer "+s.Token)
	if r.status != http.StatusOK {
		e.t.Fatalf("history: %d %s", r.status, r.raw)
	}
	raw, _ := r.body["messages"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, m := range raw {
		out = append(out, m.(map[string]any))
	}
	return out
}

// transcript renders history as "role: body" lines.
func transcript(msgs []map[string]any) []string {
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%s: %s", m["role"], m["body"]))
	}
	return out
}

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

// wsClient is a test WebSocket client.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

type frame map[string]any

func (f frame) str(k string) string { s, _ := f[k].(string); return s }

func (e *env) dialWS(s session, query string, headers ...string) (*wsClient, *http.Response, error) {
	e.t.Helper()
	h := http.Header{"Origin": {testOrigin}}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			h.Del(headers[i])
			continue
		}
		h.Set(headers[i], headers[i+1])
	}
	url := "ws" + strings.TrimPrefix(e.base, "http") + "/v1/sessions/" + s.ID + "/ws?token=" + s.Token + query
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, res, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return nil, res, err
	}
	c := &wsClient{t: e.t, conn: conn}
	e.t.Cleanup(func() { conn.CloseNow() })
	return c, res, nil
}

func (e *env) mustDialWS(s session) *wsClient {
	e.t.Helper()
	c, _, err := e.dialWS(s, "")
	if err != nil {
		e.t.Fatalf("dial ws: %v", err)
	}
	if f := c.next(); f.str("type") != "session" {
		e.t.Fatalf("first frame = %v, want session", f)
	}
	return c
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	data, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, data); err != nil {
		c.t.Fatalf("ws write: %v", err)
	}
}

// read returns the next frame or the error that ended the socket.
func (c *wsClient) read(timeout time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, data, err := c.conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	return f, nil
}

func (c *wsClient) next() frame {
	c.t.Helper()
	f, err := c.read(15 * time.Second)
	if err != nil {
		c.t.Fatalf("ws read: %v", err)
	}
	return f
}

// until reads frames until one of type typ (returned) and returns those
// before it too.
func (c *wsClient) until(typ string) (frame, []frame) {
	c.t.Helper()
	var before []frame
	for {
		f := c.next()
		if f.str("type") == typ {
			return f, before
		}
		before = append(before, f)
	}
}

// closeStatus waits for the server to close the socket and returns the code
// and reason.
func (c *wsClient) closeStatus() (websocket.StatusCode, string) {
	c.t.Helper()
	for {
		_, err := c.read(15 * time.Second)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("socket ended without a close frame: %v", err)
		}
		return ce.Code, ce.Reason
	}
}

// waitFor polls cond until it holds or the deadline passes. (A local
// poll helper until the shared test-support package exists.)
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
