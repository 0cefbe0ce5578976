package signaling_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestAdminWidgetVoice: a widget's voice settings round-trip through the
// admin API with their defaults filled in, and bad ones are refused with
// 422 naming each field.
func TestAdminWidgetVoice(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ak, _ := e.newAdminKey("", broker.Scopes...)
	auth := []string{"Authorization", "Bearer " + ak}
	const origin = "https://voice.example.org"

	r := e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Voice", "allowed_origins": []string{origin},
		"voice": map[string]any{"vad": map[string]any{"threshold_dbov": -52.5, "hangover_ms": 600}, "barge_in": "off"}}, auth...)
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	id := r.Str("id")
	voice := func(r response) map[string]any {
		t.Helper()
		v, ok := r.Body["voice"].(map[string]any)
		if !ok {
			t.Fatalf("no voice in %s", r.Raw)
		}
		return v
	}
	check := func(what string, v map[string]any, threshold float64, minSpeech, hangover float64, bargeIn string, bargeInMin float64) {
		t.Helper()
		vad, _ := v["vad"].(map[string]any)
		if vad["threshold_dbov"] != threshold || vad["min_speech_ms"] != minSpeech || vad["hangover_ms"] != hangover ||
			v["barge_in"] != bargeIn || v["barge_in_min_ms"] != bargeInMin {
			t.Fatalf("%s: voice = %v", what, v)
		}
	}
	check("created", voice(r), -52.5, 60, 600, "off", 300)
	got := e.Do("GET", "/v1/admin/widgets/"+id, nil, auth...)
	check("read back", voice(got), -52.5, 60, 600, "off", 300)

	// What GET shows can be PUT back, changed.
	body := got.Body
	body["voice"] = map[string]any{"vad": map[string]any{"threshold_dbov": -40, "min_speech_ms": 100, "hangover_ms": 300},
		"barge_in": "auto", "barge_in_min_ms": 450}
	r = e.Do("PUT", "/v1/admin/widgets/"+id, body, auth...)
	if r.Status != http.StatusOK {
		t.Fatalf("put: %d %s", r.Status, r.Raw)
	}
	check("put", voice(r), -40, 100, 300, "auto", 450)

	// Bad settings: 422, every field named.
	r = e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "Bad", "allowed_origins": []string{origin},
		"voice": map[string]any{"vad": map[string]any{"threshold_dbov": 6, "min_speech_ms": 5000, "hangover_ms": -1},
			"barge_in": "sometimes", "barge_in_min_ms": 99999}}, auth...)
	signalingtest.ExpectErr(t, "bad voice settings", r, 422, "VALIDATION_FAILED")
	var fields []string
	details, _ := r.Body["error"].(map[string]any)["details"].(map[string]any)
	list, _ := details["fields"].([]any)
	for _, f := range list {
		fields = append(fields, f.(map[string]any)["field"].(string))
	}
	slices.Sort(fields)
	want := []string{"voice.barge_in", "voice.barge_in_min_ms", "voice.vad.hangover_ms", "voice.vad.min_speech_ms", "voice.vad.threshold_dbov"}
	if !slices.Equal(fields, want) {
		t.Fatalf("fields = %v, want %v (%s)", fields, want, r.Raw)
	}
	signalingtest.ExpectErr(t, "unknown voice field", e.Do("POST", "/v1/admin/widgets", map[string]any{"display_title": "x",
		"allowed_origins": []string{origin}, "voice": map[string]any{"vad": map[string]any{"threshold": -40}}}, auth...), 400, "BAD_REQUEST")

	// The demo widget, created from the config without voice settings,
	// shows the defaults.
	check("demo widget", voice(e.Do("GET", "/v1/admin/widgets/wdg_demo", nil, auth...)), -45, 60, 400, "auto", 300)
}
