package signaling_test

import (
	"io"
	"net/http"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/echo"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestVoiceTransportAdvertised: resolve names the widget's voice transport
// and the session's voice_path is where that transport starts; a livekit
// widget on a server without LiveKit offers no voice at all (rather than a
// mic button that can only fail). And the SDK the widget would load is
// served by the real mux at the path widget.js names.
func TestVoiceTransportAdvertised(t *testing.T) {
	t.Parallel()
	lk := configs.WidgetConfig{Key: "pk_lk", ID: "wdg_lk", AllowDevOrigins: true, VoiceTransport: "livekit"}
	e := startEnv(t, noEcho, withWidget(lk))
	for _, tt := range []struct {
		key, transport string
		voice          bool
		path           string
	}{
		{configs.DemoWidgetKey, "webrtc", true, "/webrtc"},
		{"pk_lk", "", false, ""}, // no livekit.url here: cmd/parley's TestWidgetLiveKit has it
	} {
		r := e.ResolveWidget(tt.key, testOrigin)
		w, _ := r.Body["widget"].(map[string]any)
		modes, _ := w["modes"].([]any)
		tr, has := w["voice_transport"]
		if r.Status != http.StatusOK || slices.Contains(modes, any("voice")) != tt.voice || (tt.transport == "" && has) ||
			(tt.transport != "" && tr != tt.transport) {
			t.Fatalf("resolve %s: %d %s; want voice %v over %q", tt.key, r.Status, r.Raw, tt.voice, tt.transport)
		}
		s := e.Do("POST", "/v1/sessions", map[string]any{"widget_key": tt.key, "challenge": r.Str("challenge"), "mode": "chat"},
			"Origin", testOrigin)
		if s.Status != http.StatusCreated {
			t.Fatalf("session on %s: %d %s", tt.key, s.Status, s.Raw)
		}
		want := ""
		if tt.path != "" {
			want = "/v1/sessions/" + s.Str("session_id") + tt.path
		}
		if got := s.Str("voice_path"); got != want {
			t.Fatalf("voice_path on %s = %q, want %q", tt.key, got, want)
		}
	}

	res, err := http.Get(e.Base + "/widget.js")
	if err != nil {
		t.Fatal(err)
	}
	js, err := io.ReadAll(res.Body)
	res.Body.Close()
	m := regexp.MustCompile(`const LIVEKIT_CLIENT = \{ path: "([^"]+)"`).FindSubmatch(js)
	if err != nil || m == nil {
		t.Fatalf("widget.js names no LiveKit SDK path (%v)", err)
	}
	res, err = http.Get(e.Base + string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" || n < 100000 {
		t.Fatalf("GET %s: %d %v (%d bytes)", m[1], res.StatusCode, res.Header, n)
	}
}

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
