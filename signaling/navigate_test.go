package signaling_test

import (
	"context"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestNavigateActionsUseNavMap: an agent's navigate action names a target of
// the widget's nav map, and the page gets that target's path, selector and
// label, never what the agent put beside it; a target outside the map (or a
// bare URL) is refused by Parley: an error frame NAV_TARGET_UNKNOWN instead
// of the action, and the reply goes on.
func TestNavigateActionsUseNavMap(t *testing.T) {
	e := startEnv(t, noEcho, func(c *configs.Config) {
		c.Widgets[0].NavMap = []configs.NavTarget{{ID: "pricing", Path: "/pricing", Selector: "#plans", Label: "Pricing"}}
	})
	signalingtest.StartWorker(t, e.agentConn(configs.DefaultAgent), configs.DefaultAgent,
		signalingtest.OnMessages(func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
			data := map[string]string{"target": ev.Text, "path": "https://evil.example/"}
			if ev.Text == "url" {
				data = map[string]string{"url": "https://example.com/pricing"}
			}
			if err := c.SendAction(ctx, agentbridge.ActionNavigate, data); err != nil {
				return err
			}
			return c.SendText(ctx, ev.MessageID, "ok")
		}))

	s := e.NewSession(nil)
	c := e.MustDialWS(s)
	for _, tc := range []struct{ target, frames, want string }{
		{"pricing", "ack,typing,action,chunk,done", `/pricing #plans Pricing`},
		{"admin", "ack,typing,error,chunk,done", `"admin"`},
		{"url", "ack,typing,error,chunk,done", `navigate needs {"target": "<nav map id>"}`},
	} {
		c.Send(map[string]any{"type": "message", "body": tc.target, "client_message_id": "n-" + tc.target})
		var types []string
		for {
			f := c.Next()
			types = append(types, f.Str("type"))
			switch f.Str("type") {
			case "action":
				d, _ := f["data"].(map[string]any)
				if got := strings.Join([]string{d["path"].(string), d["selector"].(string), d["label"].(string)}, " "); got != tc.want || d["target"] != tc.target {
					t.Fatalf("%s: action data %v", tc.target, d)
				}
			case "error":
				if f.Str("code") != "NAV_TARGET_UNKNOWN" || !strings.Contains(f.Str("message"), tc.want) {
					t.Fatalf("%s: error frame %v", tc.target, f)
				}
			}
			if f.Str("type") == "done" {
				break
			}
		}
		if got := strings.Join(types, ","); got != tc.frames {
			t.Fatalf("%s: frames %s, want %s", tc.target, got, tc.frames)
		}
	}
	if n := strings.Count(e.logs.String(), `"msg":"agent action refused"`); n != 2 {
		t.Fatalf("%d refusals logged, want 2", n)
	}
}
