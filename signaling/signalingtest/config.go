package signalingtest

import (
	"testing"
	"time"

	"github.com/parley-rtc/parley/configs"
)

// Config is the configuration test edges start from: the defaults on
// ephemeral ports (HTTP on 127.0.0.1:0, embedded NATS on port -1) with a
// fresh data dir, agent dispatch retried quickly, and no rate limits.
func Config(t testing.TB) configs.Config {
	cfg := configs.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATS.Listen = "127.0.0.1:-1"
	cfg.DataDir = t.TempDir()
	cfg.Agents.DispatchTimeout = 500 * time.Millisecond
	cfg.Agents.DispatchRetryMax = 250 * time.Millisecond
	cfg.Chat.ReplyTimeout = 10 * time.Second
	// The echo agent plays the visitor's audio back, which the voice
	// tests measure; the speech tests turn its speech pipeline on.
	cfg.Speech.Enabled = false
	// Tests make many sessions from 127.0.0.1; the limits have their own
	// test.
	for _, rc := range []*configs.RateConfig{&cfg.Limits.Resolve, &cfg.Limits.Sessions,
		&cfg.Limits.Messages, &cfg.Limits.Captures, &cfg.Limits.Uploads} {
		rc.PerIP, rc.PerWidget = "0", "0"
	}
	return cfg
}
