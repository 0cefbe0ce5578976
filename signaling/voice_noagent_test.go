package signaling_test

import (
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/echo"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// A voice call to an agent with no worker: the chat leg is told
// AGENT_UNAVAILABLE when the call starts (as chat is when a message is
// stored), though the broker's dispatch loop, already retrying since the
// session started, says nothing new. When a worker comes, the leg says
// agent_state connected, which clears the widget's note.
func TestVoiceCallNoAgent(t *testing.T) {
	e := startEnv(t, voiceConfig, func(c *configs.Config) {
		for i := range c.Widgets {
			if c.Widgets[i].Key == configs.DemoWidgetKey {
				c.Widgets[i].Agent = "nobody"
			}
		}
	})
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	v := e.NewVoiceClient(s)
	defer v.Close()
	mode, _ := ws.Until("mode")
	if mode.Str("mode") != "voice" || mode.Str("ts") == "" {
		t.Fatalf("mode frame %v: want voice, with its ts (call markers)", mode)
	}
	errFrame, _ := ws.Until("error")
	if errFrame.Str("code") != "AGENT_UNAVAILABLE" {
		t.Fatalf("error frame %v, want AGENT_UNAVAILABLE", errFrame)
	}
	started := time.Now()
	signalingtest.StartWorker(t, e.agentConn("nobody"), "nobody", echo.Agent{}.Run)
	for {
		f, _ := ws.Until("agent_state")
		if f.Str("state") == "connected" {
			break
		}
	}
	t.Logf("worker started → agent_state connected in %v", time.Since(started).Round(time.Millisecond))
}
