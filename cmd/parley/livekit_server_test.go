package main

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media/mediatest"
)

// A real livekit-server for the LiveKit tests (media/mediatest): `make
// livekit` builds v1.11.0 from its Go module into .cache/bin; the tests
// start it in --dev mode on loopback, on free ports, with webhooks to the
// Parley under test. Its keys are liveKitDevKey and liveKitDevSecret.
const (
	liveKitDevKey    = mediatest.DevKey
	liveKitDevSecret = mediatest.DevSecret
)

// liveKitServerPath finds livekit-server, or skips (fails under
// PARLEY_REQUIRE_LIVEKIT=1) loudly.
func liveKitServerPath(t *testing.T) string {
	t.Helper()
	return mediatest.Binary(t, "")
}

// freePort returns a port that was free a moment ago on 127.0.0.1
// (network "tcp" or "udp").
func freePort(t testing.TB, network string) int {
	t.Helper()
	port, err := mediatest.FreePort(network)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// liveKitWidgetKey is the public key of the test widget whose voice goes
// over LiveKit.
const liveKitWidgetKey = "pk_livekit"

// liveKitEnv is a Parley configured for a real livekit-server, with a
// livekit widget (voice_transport: livekit) allowed from testOrigin.
type liveKitEnv struct {
	*env
	lk *mediatest.Server
}

// startLiveKitEnv starts livekit-server (webhooks to Parley) and then
// Parley with livekit.url pointing at it; opts change Parley's config.
// LiveKit stops after Parley, so Parley's bridges can still leave and
// delete their rooms when it shuts down.
func startLiveKitEnv(t *testing.T, opts ...func(*configs.Config)) *liveKitEnv {
	t.Helper()
	parleyPort := freePort(t, "tcp")
	lk := mediatest.Run(t, mediatest.Options{WebhookURL: fmt.Sprintf("http://127.0.0.1:%d/v1/livekit/webhook", parleyPort)})
	opts = append([]func(*configs.Config){voiceConfig, func(c *configs.Config) {
		c.Listen = "127.0.0.1:" + strconv.Itoa(parleyPort)
		c.LiveKit.URL, c.LiveKit.APIKey, c.LiveKit.APISecret = lk.URL, lk.APIKey, lk.APISecret
	}, withWidget(configs.WidgetConfig{Key: liveKitWidgetKey, ID: "wdg_livekit", AllowDevOrigins: true,
		VoiceTransport: "livekit"})}, opts...)
	return &liveKitEnv{env: startEnv(t, opts...), lk: lk}
}
