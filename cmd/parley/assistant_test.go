package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/cmd/internal/assistant"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media/speech"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// testKey is the API key the tests give the assistant; it must appear in
// no log, frame or history.
const testKey = "sk-test-4f9c2e7a1b6d"

// chatRequest is one request the test endpoint received.
type chatRequest struct {
	Auth     string
	Model    string              `json:"model"`
	Stream   bool                `json:"stream"`
	Messages []assistant.Message `json:"messages"`
}

// chatEndpoint is a local OpenAI-compatible chat-completions server
// speaking Server-Sent Events; answer serves each request (the test's
// script). It records every request. No model: the replies are scripted.
type chatEndpoint struct {
	*httptest.Server
	answer func(w http.ResponseWriter, r *http.Request, req chatRequest)

	mu   sync.Mutex
	reqs []chatRequest
}

func newChatEndpoint(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, req chatRequest)) *chatEndpoint {
	ep := &chatEndpoint{answer: answer}
	ep.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		var req chatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		req.Auth = r.Header.Get("Authorization")
		ep.mu.Lock()
		ep.reqs = append(ep.reqs, req)
		ep.mu.Unlock()
		ep.answer(w, r, req)
	}))
	t.Cleanup(ep.Close)
	return ep
}

func (ep *chatEndpoint) requests() []chatRequest {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return slices.Clone(ep.reqs)
}

// sse writes the event-stream header and then each delta as a chunk,
// flushed at once; done ends the stream with [DONE].
func sse(w http.ResponseWriter, done bool, deltas ...string) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
	}
	for _, d := range deltas {
		b, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]string{"content": d}}}})
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	if done {
		fmt.Fprint(w, "data: [DONE]\n\n")
	}
	w.(http.Flusher).Flush()
}

// startAssistant starts one assistant worker of the default agent against
// ep, logging as JSON into logs.
func (e *env) startAssistant(ep *chatEndpoint, timeout time.Duration, logs *syncBuffer) *agentbridge.Worker {
	e.t.Helper()
	client, err := assistant.NewClient(assistant.Config{BaseURL: ep.URL + "/v1", Model: "test-model",
		Key: speech.Secret(testKey), Timeout: timeout})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(client.Close)
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := &assistant.Agent{Client: client, System: "Be brief.", Log: log}
	w, err := agentbridge.NewWorker(e.agentConn(configs.DefaultAgent), agentbridge.Options{Agent: configs.DefaultAgent, Logger: log}, a.Run)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(w.Close)
	return w
}

// roles renders messages as "role: content" lines.
func roles(msgs []assistant.Message) []string {
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, m.Role+": "+m.Content)
	}
	return out
}

// noKey fails the test if the API key appears in any of texts.
func noKey(t *testing.T, texts map[string]string) {
	t.Helper()
	for what, s := range texts {
		if strings.Contains(s, testKey) {
			t.Errorf("the API key appears in %s", what)
		}
	}
}

// TestAssistantStreamsWithHistory: the assistant takes over a conversation
// the echo agent began, and the endpoint gets the replayed history as
// context (visitor → user, agent → assistant) after the system prompt,
// with the key as a bearer token, the model and "stream": true. Its reply
// reaches the visitor in chunks as the endpoint streams it (the endpoint
// sends the next piece only after the visitor saw the last), and the next
// turn carries that reply as context.
func TestAssistantStreamsWithHistory(t *testing.T) {
	e := startEnv(t, noEcho, func(c *configs.Config) { c.Agents.HeartbeatTimeout = time.Second })
	nc := e.agentConn(configs.DefaultAgent)
	echoW := signalingtest.StartWorker(t, nc, configs.DefaultAgent, echoAgent)
	s, ws := e.chatSession("h-1", "hello")

	pieces := []string{"We open ", "at nine ", "and close at five."}
	seen := make(chan struct{}, len(pieces)) // the test saw a piece on the visitor's socket
	ep := newChatEndpoint(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) {
		if len(req.Messages) > 0 && req.Messages[len(req.Messages)-1].Content == "thanks" {
			sse(w, true, "You're welcome.")
			return
		}
		for i, p := range pieces {
			sse(w, i == len(pieces)-1, p)
			if i < len(pieces)-1 {
				select {
				case <-seen:
				case <-r.Context().Done():
					return
				case <-time.After(15 * time.Second):
					return // the test fails on the missing piece
				}
			}
		}
	})
	logs := &syncBuffer{}
	e.startAssistant(ep, 5*time.Second, logs)
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := echoW.Drain(dctx); err != nil {
		t.Fatalf("drain the echo worker: %v", err)
	}
	nc.Close()

	start := time.Now()
	ws.Send(map[string]any{"type": "message", "body": "when are you open?", "client_message_id": "h-2"})
	var chunks []string
	for len(chunks) < len(pieces) {
		f := ws.Next()
		switch f.Str("type") {
		case "chunk":
			chunks = append(chunks, f.Str("chunk"))
			if len(chunks) < len(pieces) {
				seen <- struct{}{}
			}
		case "done", "error":
			t.Fatalf("frame %v before every piece came as a chunk (chunks %q)", f, chunks)
		}
	}
	if !slices.Equal(chunks, pieces) {
		t.Fatalf("chunks = %q, want %q (one per streamed piece)", chunks, pieces)
	}
	done, _ := ws.Until("done")
	want := strings.Join(pieces, "")
	if done.Str("body") != want || done["interrupted"] == true {
		t.Fatalf("done = %v, want body %q", done, want)
	}
	t.Logf("reply streamed in %d chunks in %s (the takeover included)", len(chunks), time.Since(start).Round(time.Millisecond))

	reqs := ep.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Auth != "Bearer "+testKey || r.Model != "test-model" || !r.Stream {
		t.Errorf("request: auth ok %v, model %q, stream %v", r.Auth == "Bearer "+testKey, r.Model, r.Stream)
	}
	wantCtx := []string{"system: Be brief.", "user: hello", "assistant: echo: hello", "user: when are you open?"}
	if got := roles(r.Messages); !slices.Equal(got, wantCtx) {
		t.Fatalf("messages = %q, want %q", got, wantCtx)
	}

	if r := e.Post(s, "thanks", "h-3", true); r.Status != http.StatusOK {
		t.Fatalf("next turn: %d %s", r.Status, r.Raw)
	}
	reqs = ep.requests()
	wantCtx = append(wantCtx, "assistant: "+want, "user: thanks")
	if got := roles(reqs[len(reqs)-1].Messages); !slices.Equal(got, wantCtx) {
		t.Fatalf("second request's messages = %q, want %q", got, wantCtx)
	}
	wantHist := []string{"visitor: hello", "agent: echo: hello", "visitor: when are you open?", "agent: " + want,
		"visitor: thanks", "agent: You're welcome."}
	if got := signalingtest.Transcript(e.History(s)); !slices.Equal(got, wantHist) {
		t.Fatalf("history = %q, want %q", got, wantHist)
	}
	noKey(t, map[string]string{"the agent's logs": logs.String(), "the broker's logs": e.logs.String()})
}

// TestAssistantInterruptCancelsUpstream: on a call, the visitor barges in
// (reported to the broker as the media leg reports it) while the endpoint
// is still streaming the reply: the agent cancels the upstream request at
// once (the endpoint sees its request's context end), the reply is closed
// as interrupted with what was said, and the next turn carries that part
// as the assistant's context.
func TestAssistantInterruptCancelsUpstream(t *testing.T) {
	e := startEnv(t, noEcho, voiceConfig)
	const said = "Our opening hours are "
	cancelled := make(chan time.Time, 1)
	ep := newChatEndpoint(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) {
		if req.Messages[len(req.Messages)-1].Content == "and on sundays?" {
			sse(w, true, "Closed on Sundays.")
			return
		}
		sse(w, false, said)
		select {
		case <-r.Context().Done():
			cancelled <- time.Now()
		case <-time.After(30 * time.Second): // the test fails on the missing cancel
		}
	})
	logs := &syncBuffer{}
	e.startAssistant(ep, 30*time.Second, logs)

	s, ws, _ := e.voiceSession()
	var leg *broker.Voice
	agenttest.Poll(t, 10*time.Second, "the voice leg", func() bool {
		var ok bool
		leg, ok = e.app.broker.Voice(s.ID)
		return ok
	})
	ws.Send(map[string]any{"type": "message", "body": "when are you open?", "client_message_id": "i-1"})
	if f, _ := ws.Until("chunk"); f.Str("chunk") != said {
		t.Fatalf("first chunk = %v", f)
	}
	cut := time.Now()
	leg.Speech(broker.SpeechEvent{Kind: broker.SpeechBargeIn, At: cut, Source: "decode", HeardMS: 400})
	select {
	case at := <-cancelled:
		t.Logf("upstream request cancelled %s after the barge-in was reported", at.Sub(cut).Round(time.Microsecond))
		if d := at.Sub(cut); d > 2*time.Second {
			t.Errorf("upstream cancelled %s after the barge-in, want well under 2 s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the endpoint's request was not cancelled by the barge-in")
	}
	done, _ := ws.Until("done")
	if done["interrupted"] != true || done.Str("body") != said {
		t.Fatalf("done = %v, want the reply interrupted with %q", done, said)
	}

	if r := e.Post(s, "and on sundays?", "i-2", true); r.Status != http.StatusOK {
		t.Fatalf("next turn: %d %s", r.Status, r.Raw)
	}
	reqs := ep.requests()
	want := []string{"system: Be brief.", "user: when are you open?", "assistant: " + said, "user: and on sundays?"}
	if got := roles(reqs[len(reqs)-1].Messages); !slices.Equal(got, want) {
		t.Fatalf("messages after the barge-in = %q, want %q", got, want)
	}
	var cutReplies int
	for _, m := range e.History(s) {
		if m["role"] == "agent" && m["interrupted"] == true {
			cutReplies++
			if m["body"] != said {
				t.Errorf("interrupted reply in the history = %q, want %q", m["body"], said)
			}
		}
	}
	if cutReplies != 1 {
		t.Errorf("%d interrupted replies in the history, want 1", cutReplies)
	}
	noKey(t, map[string]string{"the agent's logs": logs.String(), "the broker's logs": e.logs.String()})
}

// TestAssistantFailures: whatever goes wrong upstream — the connection
// dropped, 401 (with the key echoed back, as some providers do), 503, a
// stream that is not JSON, silence past the timeout, a stream that stalls
// half way — the visitor gets a short apology (after what was said, if
// anything), the agent logs the coded cause, and the next message is
// answered normally. The key appears in no log, frame or history.
func TestAssistantFailures(t *testing.T) {
	e := startEnv(t, noEcho)
	const timeout = 300 * time.Millisecond
	ep := newChatEndpoint(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) {
		switch req.Messages[len(req.Messages)-1].Content {
		case "down":
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case "rejected":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","type":"invalid_request_error"}}`, testKey)
		case "overloaded":
			http.Error(w, "upstream overloaded", http.StatusServiceUnavailable)
		case "garbage":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: <html>oops</html>\n\n")
		case "silent":
			<-r.Context().Done()
		case "stall":
			sse(w, false, "Let me think")
			<-r.Context().Done()
		default:
			sse(w, true, "Fine, ", "thanks.")
		}
	})
	logs := &syncBuffer{}
	e.startAssistant(ep, timeout, logs)
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	var frames bytes.Buffer
	turn := 0
	ask := func(body, want string) {
		t.Helper()
		turn++
		id := fmt.Sprintf("f-%d", turn)
		start := time.Now()
		ws.Send(map[string]any{"type": "message", "body": body, "client_message_id": id})
		done, before := ws.Until("done")
		for _, f := range append(before, done) {
			b, _ := json.Marshal(f)
			frames.Write(b)
		}
		if done.Str("body") != want {
			t.Errorf("%s: reply %q, want %q", body, done.Str("body"), want)
		}
		t.Logf("%-10s answered in %s", body, time.Since(start).Round(time.Millisecond))
	}
	cases := []struct{ body, code, reply string }{
		{"down", "down", assistant.Apology},
		{"rejected", "rejected", assistant.Apology},
		{"overloaded", "down", assistant.Apology},
		{"garbage", "bad_response", assistant.Apology},
		{"silent", "timeout", assistant.Apology},
		{"stall", "timeout", "Let me think … " + assistant.Apology},
	}
	for _, c := range cases {
		ask(c.body, c.reply)
		ask("how are you?", "Fine, thanks.")
	}
	failed := regexp.MustCompile(`"msg":"assistant reply failed[^"]*".*?"code":"([a-z_]+)"`)
	var codes []string
	for _, m := range failed.FindAllStringSubmatch(logs.String(), -1) {
		codes = append(codes, m[1])
	}
	var want []string
	for _, c := range cases {
		want = append(want, c.code)
	}
	if !slices.Equal(codes, want) {
		t.Errorf("logged codes %q, want %q", codes, want)
	}
	if !strings.Contains(logs.String(), "[redacted]") {
		t.Error("the 401's echoed key is not logged as [redacted]")
	}
	hist, _ := json.Marshal(e.History(s))
	noKey(t, map[string]string{"the agent's logs": logs.String(), "the broker's logs": e.logs.String(),
		"the visitor's frames": frames.String(), "the history": string(hist)})
}

// TestAssistantNeedsEndpoint: without a base URL (flag or environment)
// parley agent assistant exits 2 and says how to give one, before it
// touches NATS; -h exits 0 with the flags. parley agent alone lists both
// agents, and echo reports a bad flag on its own stderr.
func TestAssistantNeedsEndpoint(t *testing.T) {
	for _, v := range []string{"PARLEY_ASSISTANT_BASE_URL", "OPENAI_BASE_URL", "PARLEY_ASSISTANT_API_KEY", "OPENAI_API_KEY"} {
		t.Setenv(v, "")
	}
	var out, errb bytes.Buffer
	if code := agentCmd([]string{"assistant", "--nats-url", "nats://127.0.0.1:1"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2: %s", code, errb.String())
	}
	if msg := errb.String(); !strings.Contains(msg, "--base-url") || !strings.Contains(msg, "PARLEY_ASSISTANT_BASE_URL") {
		t.Errorf("the message does not say how to configure an endpoint:\n%s", msg)
	}
	errb.Reset()
	if code := agentCmd([]string{"assistant", "--base-url", "ftp://example.com"}, &out, &errb); code != 2 {
		t.Errorf("a base URL that is not http(s): exit %d, want 2: %s", code, errb.String())
	}
	errb.Reset()
	if code := agentCmd(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "parley agent echo") || !strings.Contains(errb.String(), "parley agent assistant") {
		t.Errorf("no subcommand: exit %d:\n%s", code, errb.String())
	}
	errb.Reset()
	if code := agentCmd([]string{"echo", "--bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "bogus") {
		t.Errorf("echo with an unknown flag: exit %d:\n%s", code, errb.String())
	}
	errb.Reset()
	if code := agentCmd([]string{"assistant", "-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-max-history") || !strings.Contains(errb.String(), "-nats-url") {
		t.Errorf("-h: exit %d:\n%s", code, errb.String())
	}
}

// assistantReady is the line parley agent assistant prints once serving.
var assistantReady = regexp.MustCompile(`^assistant agent: 1 worker\(s\) serving "echo"`)

// TestAssistantProcess: `parley agent assistant` as its own process, the
// endpoint from --base-url and the key from PARLEY_ASSISTANT_API_KEY,
// answers a visitor; the endpoint gets the key as a bearer token, and the
// process's debug logs never hold it, even when the endpoint echoes it in
// a 401.
func TestAssistantProcess(t *testing.T) {
	e := startEnv(t, noEcho)
	ep := newChatEndpoint(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) {
		if req.Messages[len(req.Messages)-1].Content == "first" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s"}}`, testKey)
			return
		}
		sse(w, true, "Hello ", "from the model.")
	})
	p := startProcEnv(t, []string{"PARLEY_ASSISTANT_API_KEY=" + testKey},
		"agent", "assistant", "--nats-url", e.app.broker.NATSClientURL(), "--data-dir", e.cfg.DataDir,
		"--base-url", ep.URL+"/v1", "--model", "test-model", "--log-level", "debug")
	p.line(assistantReady)
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	ws.Send(map[string]any{"type": "message", "body": "first", "client_message_id": "p-1"})
	if done, _ := ws.Until("done"); done.Str("body") != assistant.Apology {
		t.Fatalf("reply to a rejected request = %v", done)
	}
	signalingtest.ExpectReply(t, ws, sendNext(ws, "second", "p-2"), "Hello from the model.")
	reqs := ep.requests()
	if len(reqs) != 2 || reqs[1].Auth != "Bearer "+testKey || reqs[1].Model != "test-model" {
		t.Fatalf("%d requests; the last with the key: %v, model %q", len(reqs), len(reqs) > 1 && reqs[1].Auth == "Bearer "+testKey, reqs[len(reqs)-1].Model)
	}
	// stderr is its own pipe: the warning logged before the apology may
	// still be on its way.
	if !poll(10*time.Second, func() bool { return strings.Contains(p.stderr.String(), `"code":"rejected"`) }) {
		t.Errorf("the process did not log the coded cause of the failed reply:\n%s", tail(p.stderr.String(), 2000))
	}
	noKey(t, map[string]string{"the process's logs": p.stderr.String()})
}

// sendNext sends body as a message and returns its client id.
func sendNext(ws *wsClient, body, id string) string {
	ws.Send(map[string]any{"type": "message", "body": body, "client_message_id": id})
	return id
}
