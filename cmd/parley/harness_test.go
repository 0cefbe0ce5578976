package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// testOrigin is an origin the demo widget allows.
const testOrigin = "http://localhost:3000"

// env is a Parley started in-process the way serve starts it, on ephemeral
// ports with a fresh data dir.
type env struct {
	t    testing.TB
	cfg  configs.Config
	app  *app
	base string
	logs *syncBuffer
}

// syncBuffer collects logs of a run (tests grep them for secrets).
type syncBuffer = agenttest.LogBuffer

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
	t.Cleanup(e.stop)
	return e
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
	opts, err := e.app.broker.ClientOptions(role)
	if err != nil {
		e.t.Fatalf("nats credentials: %v", err)
	}
	nc, err := nats.Connect(e.app.broker.NATSClientURL(), append(opts, extra...)...)
	if err != nil {
		e.t.Fatalf("nats connect: %v", err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// agentConn connects as a worker of agent: the agent's credentials and
// inbox prefix (protocol v2).
func (e *env) agentConn(agent string, extra ...nats.Option) *nats.Conn {
	e.t.Helper()
	opts := append(agentbridge.ConnectOptions(e.app.broker.Subjects().Prefix, agent), extra...)
	return e.natsConnAs(broker.AgentRole(agent), opts...)
}

// startWorker starts one echo worker on its own connection.
func (e *env) startWorker() *agentbridge.Worker {
	e.t.Helper()
	w, err := agentbridge.NewWorker(e.agentConn(configs.DefaultAgent), agentbridge.Options{Agent: configs.DefaultAgent,
		Logger: discardLogger()}, echoAgent)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(w.Close)
	return w
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
	contentType := ""
	if rd != nil {
		contentType = "application/json"
	}
	return e.send(method, path, contentType, rd, headers...)
}

// send sends a request with body rd (none if nil) of contentType (no
// header if empty) and headers (name, value, …), and decodes a JSON
// answer into the response's body.
func (e *env) send(method, path, contentType string, rd io.Reader, headers ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r.body) // not JSON: body stays nil
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

// waitFor is agenttest.Poll under its old name, for the tests that still
// call it.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	agenttest.Poll(t, timeout, what, cond)
}

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
	if r := e.post(s, "hello", "settle-1", true); r.status != http.StatusOK && r.status != http.StatusCreated {
		e.t.Fatalf("chat turn: %d %s", r.status, r.raw)
	}
	if f, _ := ws.until("done"); f.str("body") != "echo: hello" {
		e.t.Fatalf("chat reply %v", f)
	}
}
