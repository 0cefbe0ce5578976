package signaling_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestSessionCaps: one session token holds at most
// limits.per_session.websockets live WebSockets, and its mode switches,
// voice offers and LiveKit joins (each stored in the log) are rate limited.
func TestSessionCaps(t *testing.T) {
	t.Parallel()
	e := startEnv(t, voiceConfig, func(c *configs.Config) {
		c.Limits.PerSession = configs.SessionLimits{WebSockets: 2, ModeSwitches: "3/1m"}
	})
	s := e.NewSession(nil)
	auth := []string{"Authorization", "Bearer " + s.Token}

	first, second := e.MustDialWS(s), e.MustDialWS(s)
	third, _, err := e.DialWS(s, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, reason := third.CloseStatus(); code != websocket.StatusPolicyViolation || reason != "SESSION_LIMIT" {
		t.Fatalf("a third WebSocket: closed %d %q, want 1008 SESSION_LIMIT", code, reason)
	}
	if other := e.NewSession(nil); other.ID != "" {
		e.MustDialWS(other) // another session has its own cap
	}
	_ = first.Conn.Close(websocket.StatusNormalClosure, "")
	agenttest.Poll(t, 10*time.Second, "a WebSocket after one closed", func() bool {
		c, _, err := e.DialWS(s, "")
		if err != nil {
			return false
		}
		defer c.Conn.Close(websocket.StatusNormalClosure, "")
		f, err := c.Read(5 * time.Second)
		return err == nil && f.Str("type") == "session"
	})

	for i, mode := range []string{"voice", "chat", "voice"} {
		if r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": mode}, auth...); r.Status != 200 {
			t.Fatalf("switch %d: %d %s", i, r.Status, r.Raw)
		}
	}
	r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": "chat"}, auth...)
	signalingtest.ExpectErr(t, "a fourth switch in a minute", r, 429, "RATE_LIMITED")
	if ra := r.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("no Retry-After on a refused switch: %q", ra)
	}
	r = e.DoRaw("POST", "/v1/sessions/"+s.ID+"/webrtc", "application/sdp", "v=0", auth...)
	signalingtest.ExpectErr(t, "a voice offer past the limit", r, 429, "RATE_LIMITED")
	second.Send(map[string]any{"type": "mode", "mode": "chat"})
	if f, _ := second.Until("error"); f.Str("code") != "RATE_LIMITED" {
		t.Fatalf("WS mode frame past the limit: %v", f)
	}
}

// TestBodyTimeout: a client that trickles a body is cut off after
// limits.body_timeout on the unauthenticated resolve route; a request whose
// body is in may then wait longer than that for its answer.
func TestBodyTimeout(t *testing.T) {
	t.Parallel()
	e := startEnv(t, noEcho, func(c *configs.Config) { c.Limits.BodyTimeout = time.Second })
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /v1/widget/resolve HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", signalingtest.DemoOrigin)
	// Trickle a byte every 200 ms (the behaviour under test) until the
	// server answers or hangs up.
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(conn).ReadString('\n')
		answered <- line
	}()
	var line string
trickle:
	for {
		select {
		case line = <-answered:
			break trickle
		case <-time.After(200 * time.Millisecond):
			_, _ = conn.Write([]byte(" "))
		case <-time.After(30 * time.Second):
			t.Fatal("a trickled body held the connection for 30 s")
		}
	}
	took := time.Since(start)
	t.Logf("trickled body cut off after %s: %q", took.Round(time.Millisecond), strings.TrimSpace(line))
	if took > 10*time.Second {
		t.Fatalf("cut off after %s, want about limits.body_timeout (1s)", took)
	}
	if line != "" && !strings.HasPrefix(line, "HTTP/1.1 4") {
		t.Fatalf("answered %q", line)
	}

	// A reply that takes longer than body_timeout still arrives.
	signalingtest.StartWorker(t, e.agentConn(configs.DefaultAgent), configs.DefaultAgent,
		func(ctx context.Context, c *agentbridge.Conversation) error {
			for ev := range c.Events() {
				if ev.Type != agentbridge.EventUserMessage {
					continue
				}
				select {
				case <-time.After(1500 * time.Millisecond): // slower than body_timeout: the behaviour under test
				case <-ctx.Done():
					return nil
				}
				if err := c.SendText(ctx, ev.MessageID, "late"); err != nil {
					return err
				}
			}
			return nil
		})
	s := e.NewSession(nil)
	if r := e.Post(s, "hello", "slow-1", true); r.Status != http.StatusOK {
		t.Fatalf("a reply slower than body_timeout: %d %s", r.Status, r.Raw)
	}
}
