package configs

import (
	"testing"
	"time"
)

// TestRetentionRules: retention and idle-sweeper settings are checked, and
// a widget may not keep conversations longer than the stream keeps events.
func TestRetentionRules(t *testing.T) {
	t.Parallel()
	tests := []problemCase[Config]{
		{"max age too short", func(c *Config) { c.Retention.ConversationMaxAge = 500 * time.Millisecond }, "retention.conversation_max_age"},
		{"log shorter than max age", func(c *Config) { c.Retention.LogMaxAge = 24 * time.Hour }, "retention.log_max_age"},
		{"log negative", func(c *Config) { c.Retention.LogMaxAge = -1 }, "retention.log_max_age"},
		{"uploads negative", func(c *Config) { c.Retention.UploadsMaxBytes = -1 }, "retention.uploads_max_bytes"},
		{"retention sweep", func(c *Config) { c.Retention.SweepInterval = 0 }, "retention.sweep_interval"},
		{"idle timeout", func(c *Config) { c.Sessions.IdleTimeout = 0 }, "sessions.idle_timeout"},
		{"session sweep", func(c *Config) { c.Sessions.SweepInterval = 0 }, "sessions.sweep_interval"},
		{"record grace", func(c *Config) { c.Sessions.RecordGrace = -time.Second }, "sessions.record_grace"},
		{"widget max age not a duration", func(c *Config) { c.Widgets[0].ConversationMaxAge = "30d" }, "widgets[0].conversation_max_age"},
		{"widget max age too short", func(c *Config) { c.Widgets[0].ConversationMaxAge = "900ms" }, "widgets[0].conversation_max_age"},
		{"widget max age beyond the log", func(c *Config) { c.Widgets[0].ConversationMaxAge = "10000h" }, "widgets[0].conversation_max_age"},
	}
	runProblemCases(t, tests, wantOneProblem)
	// Accepted: a widget shorter or longer than the default, within the log.
	c := Default()
	c.Widgets[0].ConversationMaxAge = "24h"
	c.Widgets = append(c.Widgets, c.Widgets[0])
	c.Widgets[1].Key, c.Widgets[1].ID, c.Widgets[1].ConversationMaxAge = "pk_long", "wdg_long", "8760h"
	c.Retention.LogMaxAge = 0 // no stream limit: any length
	c.Widgets[1].ConversationMaxAge = "87600h"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if d, ok := c.Widgets[0].MaxAge(); !ok || d != 24*time.Hour {
		t.Fatalf("MaxAge: %v %v", d, ok)
	}
}
