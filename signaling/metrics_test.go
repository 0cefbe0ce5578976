package signaling_test

import (
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/parley-rtc/parley/configs"
)

// scrape reads /metrics into metric families.
func (e *env) scrape() map[string]*dto.MetricFamily {
	e.t.Helper()
	res, err := http.Get(e.base + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /metrics: %d", res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		e.t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// metricValue is the value of the series of name with labels (a counter,
// gauge, or a histogram's sample count); ok is false when absent.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// TestMetrics: /metrics moves with a chat exchange, a voice call, a
// tripped rate limit and a resume.
func TestMetrics(t *testing.T) {
	e := startEnv(t, voiceConfig, fastRooms, func(c *configs.Config) {
		c.Limits.Captures = configs.RateConfig{PerIP: "1/1h", PerWidget: "0"}
	})
	before := e.scrape()
	val := func(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
		v, _ := metricValue(mfs, name, labels...)
		return v
	}

	s := e.newSession(nil)
	ws := e.mustDialWS(s)
	ws.send(map[string]any{"type": "message", "body": "count me", "client_message_id": "m-1"})
	expectReply(t, ws, "m-1", "echo: count me")
	during := e.scrape()
	if v := val(during, "parley_conversations_active", "mode", "chat"); v < 1 {
		t.Fatalf("parley_conversations_active{mode=chat} = %v with a WebSocket open", v)
	}
	if v := val(during, "parley_sessions_active"); v < 1 {
		t.Fatalf("parley_sessions_active = %v with a WebSocket open", v)
	}

	// A voice call: frames in, the mic hop, a switch to voice.
	c := e.newVoiceClient(s)
	c.waitConnected()
	c.send(speech(t, 1, 400, 200))
	waitFor(t, 10*time.Second, "media frames counted", func() bool {
		return val(e.scrape(), "parley_media_frames_total", "direction", "in") > val(before, "parley_media_frames_total", "direction", "in")
	})
	c.close()

	// A tripped limit, and a resume.
	capture := func() response {
		return e.do("POST", "/v1/sessions/"+s.ID+"/captures", map[string]any{"kind": "email", "value": "ada@example.com", "source": "volunteered"},
			"Authorization", "Bearer "+s.Token)
	}
	if r := capture(); r.status != http.StatusCreated {
		t.Fatalf("capture: %d %s", r.status, r.raw)
	}
	expectErr(t, "second capture", capture(), http.StatusTooManyRequests, "RATE_LIMITED")
	if s2 := e.newSession(map[string]any{"resume_token": s.ResumeToken}); !s2.Resumed {
		t.Fatal("not resumed")
	}

	after := e.scrape()
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
	if v, ok := metricValue(after, "parley_agent_workers_alive", "agent", configs.DefaultAgent); !ok || v != 1 {
		t.Errorf("parley_agent_workers_alive{agent=echo} = %v (present %v), want 1", v, ok)
	}
	if _, ok := metricValue(after, "go_goroutines"); !ok {
		t.Error("go_goroutines missing")
	}
	if _, ok := metricValue(after, "parley_conversations_active", "mode", "voice"); !ok {
		t.Error("parley_conversations_active{mode=voice} missing")
	}
}
