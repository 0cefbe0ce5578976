package signalingtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestClient: Do sends JSON and decodes a JSON answer, error codes read
// out of it; DoRaw keeps a Body only for an answer labelled JSON.
func TestClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/json":
			if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Test") != "yes" {
				http.Error(w, "bad request headers", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error": {"code": "NOPE"}, "echo": ` + string(body) + `}`))
		case "/text":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(`{"looks": "like json"}`))
		}
	}))
	t.Cleanup(srv.Close)
	c := &Client{T: t, Base: srv.URL}

	r := c.Do("POST", "/json", map[string]any{"a": 1}, "X-Test", "yes")
	if r.Status != http.StatusConflict || r.ErrCode() != "NOPE" || r.Body["echo"].(map[string]any)["a"] != 1.0 {
		t.Fatalf("Do: %d %q %v", r.Status, r.ErrCode(), r.Body)
	}
	if r := c.DoRaw("GET", "/text", "", ""); r.Body != nil || r.Raw != `{"looks": "like json"}` || r.Str("looks") != "" {
		t.Fatalf("DoRaw on a text answer: body %v, raw %q", r.Body, r.Raw)
	}
	if r := c.Do("GET", "/text", nil); r.Str("looks") != "like json" {
		t.Fatalf("Do on a text answer: body %v", r.Body)
	}
}

// TestMetricValue: a counter by its labels, a histogram's count, and an
// absent series.
func TestMetricValue(t *testing.T) {
	text := `# TYPE x_total counter
x_total{kind="a"} 3
x_total{kind="b"} 5
# TYPE h_seconds histogram
h_seconds_bucket{le="+Inf"} 7
h_seconds_sum 1.5
h_seconds_count 7
`
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
		ok     bool
	}{
		{"x_total", []string{"kind", "b"}, 5, true},
		{"x_total", []string{"kind", "c"}, 0, false},
		{"h_seconds", nil, 7, true},
		{"y_total", nil, 0, false},
	} {
		if v, ok := MetricValue(mfs, tc.name, tc.labels...); v != tc.want || ok != tc.ok {
			t.Errorf("%s%v = %v, %v; want %v, %v", tc.name, tc.labels, v, ok, tc.want, tc.ok)
		}
	}
}

// TestSpeechAndTranscript: Speech is one Opus frame per 20 ms of signal;
// Transcript renders history lines.
func TestSpeechAndTranscript(t *testing.T) {
	if frames := Speech(t, 2, 100, 60); len(frames) != 2*8 || len(frames[0]) == 0 {
		t.Fatalf("Speech(2, 100, 60) = %d frames, want 16", len(frames))
	}
	got := Transcript([]map[string]any{{"role": "visitor", "body": "hi"}, {"role": "agent", "body": "echo: hi"}})
	if !slices.Equal(got, []string{"visitor: hi", "agent: echo: hi"}) {
		t.Fatalf("Transcript = %q", got)
	}
}
