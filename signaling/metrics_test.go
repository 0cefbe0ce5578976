package signaling_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestMetrics: /metrics moves with a chat exchange, a voice call, a
// tripped rate limit and a resume.
func TestMetrics(t *testing.T) {
	e := startEnv(t, voiceConfig, fastRooms, func(c *configs.Config) {
		c.Limits.Captures = configs.RateConfig{PerIP: "1/1h", PerWidget: "0"}
	})
	before := e.Scrape()
	val := func(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
		v, _ := signalingtest.MetricValue(mfs, name, labels...)
		return v
	}

	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	ws.Send(map[string]any{"type": "message", "body": "count me", "client_message_id": "m-1"})
	signalingtest.ExpectReply(t, ws, "m-1", "echo: count me")
	during := e.Scrape()
	if v := val(during, "parley_conversations_active", "mode", "chat"); v < 1 {
		t.Fatalf("parley_conversations_active{mode=chat} = %v with a WebSocket open", v)
	}
	if v := val(during, "parley_sessions_active"); v < 1 {
		t.Fatalf("parley_sessions_active = %v with a WebSocket open", v)
	}

	// A voice call: frames in, the mic hop, a switch to voice.
	c := e.NewVoiceClient(s)
	c.WaitConnected()
	c.Send(signalingtest.Speech(t, 1, 400, 200))
	agenttest.Poll(t, 10*time.Second, "media frames counted", func() bool {
		return val(e.Scrape(), "parley_media_frames_total", "direction", "in") > val(before, "parley_media_frames_total", "direction", "in")
	})
	c.Close()

	// A tripped limit, and a resume.
	capture := func() response {
		return e.Do("POST", "/v1/sessions/"+s.ID+"/captures", map[string]any{"kind": "email", "value": "ada@example.com", "source": "volunteered"},
			"Authorization", "Bearer "+s.Token)
	}
	if r := capture(); r.Status != http.StatusCreated {
		t.Fatalf("capture: %d %s", r.Status, r.Raw)
	}
	signalingtest.ExpectErr(t, "second capture", capture(), http.StatusTooManyRequests, "RATE_LIMITED")
	if s2 := e.NewSession(map[string]any{"resume_token": s.ResumeToken}); !s2.Resumed {
		t.Fatal("not resumed")
	}

	after := e.Scrape()
	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"parley_http_requests_total", []string{"route", "POST /v1/sessions", "code", "201"}},
		{"parley_sessions_started_total", []string{"resumed", "false"}},
		{"parley_sessions_started_total", []string{"resumed", "true"}},
		{"parley_sessions_resumes_total", nil},
		{"parley_chat_round_trip_seconds", nil},
		{"parley_agents_dispatch_seconds", []string{"agent", configs.DefaultAgent}},
		{"parley_media_frames_total", []string{"direction", "in"}},
		{"parley_media_hop_seconds", nil},
		{"parley_sessions_mode_switches_total", []string{"mode", "voice"}},
		{"parley_http_rate_limited_total", []string{"kind", "captures"}},
	} {
		b, a := val(before, m.name, m.labels...), val(after, m.name, m.labels...)
		if a <= b {
			t.Errorf("%s%v: %v before, %v after; want it to rise", m.name, m.labels, b, a)
		} else {
			t.Logf("%s%v: %v → %v", m.name, m.labels, b, a)
		}
	}
	if v, ok := signalingtest.MetricValue(after, "parley_agent_workers_alive", "agent", configs.DefaultAgent); !ok || v != 1 {
		t.Errorf("parley_agent_workers_alive{agent=echo} = %v (present %v), want 1", v, ok)
	}
	if _, ok := signalingtest.MetricValue(after, "go_goroutines"); !ok {
		t.Error("go_goroutines missing")
	}
	if _, ok := signalingtest.MetricValue(after, "parley_conversations_active", "mode", "voice"); !ok {
		t.Error("parley_conversations_active{mode=voice} missing")
	}
}

// TestMetricsNotPublic: /metrics names every tenant's agents and traffic,
// so on the public address it needs an admin key of every tenant with
// ops:read; ops.metrics_listen serves it without a key on a second address,
// and nothing else there.
func TestMetricsNotPublic(t *testing.T) {
	t.Parallel()
	e := startEnv(t, noEcho, func(c *configs.Config) { c.Ops.MetricsListen = "127.0.0.1:0" })
	opsAll, _ := e.newAdminKey("", broker.ScopeOpsRead)
	tenantOps, _ := e.newAdminKey("tenant-a", broker.ScopeOpsRead)
	cfgAll, _ := e.newAdminKey("", broker.ScopeConfigRead)
	for _, tc := range []struct {
		name, key, code string
		status          int
	}{
		{"no key", "", "INVALID_API_KEY", 401},
		{"a session token", e.NewSession(nil).Token, "INVALID_API_KEY", 401},
		{"a key without ops:read", cfgAll, "MISSING_SCOPE", 403},
		{"a key of one tenant", tenantOps, "MISSING_SCOPE", 403},
	} {
		r := e.Do("GET", "/metrics", nil, "Authorization", "Bearer "+tc.key)
		signalingtest.ExpectErr(t, tc.name, r, tc.status, tc.code)
	}
	r := e.Do("GET", "/metrics", nil, "Authorization", "Bearer "+opsAll)
	if r.Status != 200 || !strings.Contains(r.Raw, "parley_sessions_active") {
		t.Fatalf("/metrics with an ops:read key of every tenant: %d %.200s", r.Status, r.Raw)
	}

	side := &signalingtest.Client{T: t, Base: "http://" + e.srv.MetricsAddr()}
	if e.srv.MetricsAddr() == "" {
		t.Fatal("no metrics listener")
	}
	r = side.Do("GET", "/metrics", nil)
	if r.Status != 200 || !strings.Contains(r.Raw, "parley_sessions_active") {
		t.Fatalf("/metrics on ops.metrics_listen: %d %.200s", r.Status, r.Raw)
	}
	signalingtest.ExpectErr(t, "the widget API on the metrics address", side.Do("POST", "/v1/widget/resolve", map[string]any{}), 404, "NOT_FOUND")
}

// TestPprofOnlyOnTheMetricsAddress: ops.pprof serves Go's profiles on the
// metrics listener, never on the public address; off, the metrics address
// has none either.
func TestPprofOnlyOnTheMetricsAddress(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		e := startEnv(t, noEcho, func(c *configs.Config) { c.Ops.MetricsListen, c.Ops.Pprof = "127.0.0.1:0", on })
		side := &signalingtest.Client{T: t, Base: "http://" + e.srv.MetricsAddr()}
		r := side.Do("GET", "/debug/pprof/heap?debug=1", nil)
		switch {
		case on && (r.Status != 200 || !strings.Contains(r.Raw, "heap profile")):
			t.Fatalf("pprof on: the heap profile on the metrics address: %d %.200s", r.Status, r.Raw)
		case !on:
			signalingtest.ExpectErr(t, "pprof off, on the metrics address", r, 404, "NOT_FOUND")
		}
		signalingtest.ExpectErr(t, "the heap profile on the public address", e.Do("GET", "/debug/pprof/heap", nil), 404, "NOT_FOUND")
		e.stop()
	}
}
