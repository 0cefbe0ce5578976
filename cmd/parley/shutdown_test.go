package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// sseLine is one line of an event stream, with when it was read.
type sseLine struct {
	text string
	at   time.Time
}

// TestShutdownWithPagesOpen: SIGTERM with an operator's ops event stream
// and a visitor's WebSocket open stops `parley serve` cleanly in under
// 2 s (it took 31 s, "shutdown was not clean: context deadline exceeded",
// while the stream kept the HTTP server waiting and chat went on): the
// stream gets a shutdown event and ends, the WebSocket closes with 1001,
// new work is refused and the process exits 0.
func TestShutdownWithPagesOpen(t *testing.T) {
	dir := t.TempDir()
	p, e, natsURL := serveProc(t, dir)
	out, err := exec.Command(parleyBinary(t), "keys", "create", "--nats-url", natsURL, "--data-dir", dir,
		"--kind", "admin", "--scopes", "ops:read", "--name", "shutdown test", "--json").CombinedOutput()
	var created struct {
		Key string `json:"key"`
	}
	if err != nil || json.Unmarshal(out, &created) != nil || created.Key == "" {
		t.Fatalf("parley keys create: %v\n%s", err, out)
	}

	// The ops page's stream, read line by line as the page reads it.
	req, err := http.NewRequestWithContext(t.Context(), "GET", e.base+"/v1/ops/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+created.Key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/ops/events: %d", res.StatusCode)
	}
	lines := make(chan sseLine, 1000)
	streamEnd := make(chan time.Time, 1)
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			lines <- sseLine{sc.Text(), time.Now()}
		}
		streamEnd <- time.Now()
	}()
	waitLine := func(what string, match func(string) bool) time.Time {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l := <-lines:
				if match(l.text) {
					return l.at
				}
			case <-timeout:
				t.Fatalf("no %s on the ops event stream within 20 s", what)
			}
		}
	}
	waitLine("ready event", func(l string) bool { return l == "event: ready" })

	// A visitor's page: a chat session with its WebSocket.
	s, ws := e.chatSession("sd-1", "before the shutdown")
	waitLine("room event of the chat", func(l string) bool {
		return strings.HasPrefix(l, "data: ") && strings.Contains(l, s.ConversationID) && strings.Contains(l, `"websocket"`)
	})

	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	shutdownAt := waitLine("shutdown event", func(l string) bool { return l == "event: shutdown" })
	var ended time.Time
	select {
	case ended = <-streamEnd:
	case <-time.After(5 * time.Second):
		t.Fatal("the ops event stream did not end within 5 s of SIGTERM")
	}
	if code, reason := ws.CloseStatus(); code != 1001 {
		t.Fatalf("the WebSocket closed with %d %q, want 1001", code, reason)
	}
	// New work is refused: a new session gets no answer but 503
	// SHUTTING_DOWN or a closed connection (the listener is closed).
	client := &http.Client{Timeout: 5 * time.Second}
	body := strings.NewReader(`{"widget_key":"` + configs.DemoWidgetKey + `"}`)
	sreq, _ := http.NewRequest("POST", e.base+"/v1/sessions", body)
	sreq.Header.Set("Content-Type", "application/json")
	sreq.Header.Set("Origin", signalingtest.DemoOrigin)
	if r, err := client.Do(sreq); err == nil {
		r.Body.Close()
		if r.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("a new session during the shutdown: %d, want 503 or a refused connection", r.StatusCode)
		}
	}

	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("parley still running 10 s after SIGTERM; stderr:\n%s", tail(p.stderr.String(), 3000))
	}
	took := time.Since(start)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, tail(p.stderr.String(), 3000))
	}
	logs := p.stderr.String()
	if strings.Contains(logs, "shutdown was not clean") {
		t.Fatalf("the shutdown was not clean:\n%s", tail(logs, 3000))
	}
	if !strings.Contains(logs, `"msg":"stopped"`) {
		t.Fatalf("no \"stopped\" line in the log:\n%s", tail(logs, 3000))
	}
	t.Logf("SIGTERM → shutdown event %v, stream end %v, process exit %v",
		shutdownAt.Sub(start).Round(time.Millisecond), ended.Sub(start).Round(time.Millisecond), took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("shutdown with the ops stream and a WebSocket open took %v, want under 2 s", took)
	}
}
