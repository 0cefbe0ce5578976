package configs

import (
	"bytes"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

// TestLogValueDurationsReadable: the start-up log shows durations as Go
// durations ("2m0s") in JSON as in text, never as integers of nanoseconds.
func TestLogValueDurationsReadable(t *testing.T) {
	cfg := Default()
	var js, txt bytes.Buffer
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", "config", cfg)
	slog.New(slog.NewTextHandler(&txt, nil)).Info("config", "config", cfg)
	for _, want := range []string{`"dedup_window":"2m0s"`, `"jitter_window":"60ms"`, `"credential_ttl":"1h0m0s"`} {
		if !strings.Contains(js.String(), want) {
			t.Errorf("JSON log lacks %s:\n%s", want, js.String())
		}
	}
	if !strings.Contains(txt.String(), "config.nats.dedup_window=2m0s") {
		t.Errorf("text log lacks config.nats.dedup_window=2m0s:\n%s", txt.String())
	}
	// No setting whose name says it is a duration is logged as a bare
	// number (nanoseconds).
	if m := regexp.MustCompile(`"[a-z_]*(window|timeout|ttl|interval|max_age|grace|heartbeat|skew|retry_max)":-?\d`).FindString(js.String()); m != "" {
		t.Errorf("duration logged as a number: %s", m)
	}
}
