package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/parley-rtc/parley/cmd/internal/livekitserver"
	"github.com/parley-rtc/parley/configs"
)

// A real livekit-server for the LiveKit tests (cmd/internal/livekitserver): `make
// livekit` builds v1.11.0 from its Go module into .cache/bin; the tests
// start it in --dev mode on loopback, on free ports, with webhooks to the
// Parley under test. Its keys are liveKitDevKey and liveKitDevSecret.
const (
	liveKitDevKey    = livekitserver.DevKey
	liveKitDevSecret = livekitserver.DevSecret
)

// liveKitServerPath finds livekit-server, or skips (fails under
// PARLEY_REQUIRE_LIVEKIT=1) loudly.
func liveKitServerPath(t *testing.T) string {
	t.Helper()
	path, err := livekitserver.FindServer("")
	if err == nil {
		return path
	}
	if !errors.Is(err, livekitserver.ErrNoServer) {
		t.Fatal(err)
	}
	msg := "\n################################################################\n" +
		"## " + err.Error() + "\n" +
		"################################################################"
	if os.Getenv(livekitserver.EnvRequire) == "1" {
		t.Fatalf("%s\n## %s=1: the LiveKit tests must run.", msg, livekitserver.EnvRequire)
	}
	t.Skipf("%s\n## SKIPPING the LiveKit test %s.", msg, t.Name())
	return ""
}

// runLiveKit starts a livekit-server for t (see livekitserver.Start), in
// t.TempDir(), and stops it when the test ends, logging its log's tail if
// the test failed. Without the binary it skips the test loudly, or fails
// it under PARLEY_REQUIRE_LIVEKIT=1.
func runLiveKit(t *testing.T, opts livekitserver.Options) *livekitserver.Server {
	t.Helper()
	opts.Binary = liveKitServerPath(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := livekitserver.Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Log(err)
		}
		if t.Failed() {
			t.Logf("livekit-server log (tail):\n%s", s.LogTail(60))
		}
	})
	t.Logf("livekit-server up on %s (udp %d, tcp %d) in %s", s.URL, s.UDPPort, s.TCPPort, s.Started.Round(time.Millisecond))
	return s
}

// freePort returns a port that was free a moment ago on 127.0.0.1
// (network "tcp" or "udp").
func freePort(t testing.TB, network string) int {
	t.Helper()
	port, err := livekitserver.FreePort(network)
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
	lk *livekitserver.Server
}

// startLiveKitEnv starts livekit-server (webhooks to Parley) and then
// Parley with livekit.url pointing at it; opts change Parley's config.
// LiveKit stops after Parley, so Parley's bridges can still leave and
// delete their rooms when it shuts down.
func startLiveKitEnv(t *testing.T, opts ...func(*configs.Config)) *liveKitEnv {
	t.Helper()
	parleyPort := freePort(t, "tcp")
	lk := runLiveKit(t, livekitserver.Options{WebhookURL: fmt.Sprintf("http://127.0.0.1:%d/v1/livekit/webhook", parleyPort)})
	opts = append([]func(*configs.Config){voiceConfig, func(c *configs.Config) {
		c.Listen = "127.0.0.1:" + strconv.Itoa(parleyPort)
		c.LiveKit.URL, c.LiveKit.APIKey, c.LiveKit.APISecret = lk.URL, lk.APIKey, lk.APISecret
	}, withWidget(configs.WidgetConfig{Key: liveKitWidgetKey, ID: "wdg_livekit", AllowDevOrigins: true,
		VoiceTransport: "livekit"})}, opts...)
	return &liveKitEnv{env: startEnv(t, opts...), lk: lk}
}
