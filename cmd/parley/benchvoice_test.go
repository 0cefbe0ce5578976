package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/cmd/internal/benchvoice"
)

// TestBenchVoice runs `parley bench voice` in-process with a few sessions
// against a child `parley serve` and checks that it measured something,
// connected every session and left no goroutine behind.
func TestBenchVoice(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds parley and runs a child `parley serve` under voice load for about 30 s")
	}
	bin := parleyBinary(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rep, table := runBenchVoice(t, benchvoice.Options{Sessions: 3, Duration: 3 * time.Second, Warmup: 2 * time.Second, Binary: bin})

	if rep.Connected != 3 || rep.Failed != 0 {
		t.Errorf("connected %d, failed %d (%v), want 3 and 0", rep.Connected, rep.Failed, rep.Failures)
	}
	f := rep.Frames
	// 3 sessions × 50 frames/s × 3 s.
	if f.Sent < 400 || f.Published == 0 || f.Echoed == 0 {
		t.Errorf("frames sent %d, published %d, echoed %d", f.Sent, f.Published, f.Echoed)
	}
	if f.Published > f.Sent {
		t.Errorf("published %d > sent %d: the frame accounting is off", f.Published, f.Sent)
	}
	l := rep.LatencyUS
	if l.N == 0 || l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 {
		t.Errorf("latency = %+v", l)
	}
	c := rep.ConnectMS
	if c.OfferAnswer.N != 3 || c.OfferConnected.N != 3 || c.OfferFirstFrame.N != 3 || c.OfferFirstFrame.P50 <= 0 {
		t.Errorf("connect times = %+v", c)
	}
	if rep.Server.CPUPct <= 0 || rep.Server.RSSSteadyMiB <= 0 || rep.Generator.CPUPct <= 0 {
		t.Errorf("server %+v, generator %+v", rep.Server, rep.Generator)
	}
	var back benchvoice.Report
	if b, err := json.Marshal(rep); err != nil || json.Unmarshal(b, &back) != nil || back.Frames.Sent != f.Sent {
		t.Errorf("JSON round trip: %v", err)
	}
	if !strings.Contains(table, "latency RTP→agent") {
		t.Errorf("table:\n%s", table)
	}
}

// TestBenchVoiceLiveKit runs `parley bench voice --transport livekit`
// in-process with 2 sessions through a real livekit-server (skipped loudly
// without it, failed under PARLEY_REQUIRE_LIVEKIT=1) and checks that the
// frames went client → SFU → bridge → NATS and back, and that it measured
// both latencies and both servers.
func TestBenchVoiceLiveKit(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds parley and runs livekit-server and a child `parley serve` under voice load")
	}
	lkBin := liveKitServerPath(t)
	bin := parleyBinary(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rep, table := runBenchVoice(t, benchvoice.Options{Sessions: 2, Duration: 2 * time.Second, Warmup: time.Second, Binary: bin,
		Transport: "livekit", LiveKitServer: lkBin})

	if rep.Connected != 2 || rep.Failed != 0 || rep.Transport != "livekit" {
		t.Errorf("connected %d, failed %d (%v), transport %q", rep.Connected, rep.Failed, rep.Failures, rep.Transport)
	}
	f := rep.Frames
	// 2 sessions × 50 frames/s × 2 s.
	if f.Sent < 180 || f.Published == 0 || f.Echoed == 0 || f.Published > f.Sent {
		t.Errorf("frames sent %d, published %d, echoed %d", f.Sent, f.Published, f.Echoed)
	}
	for name, l := range map[string]benchvoice.Dist{"bridge → NATS": rep.LatencyUS, "client → NATS": rep.E2EUS} {
		if l.N == 0 || l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 {
			t.Errorf("latency %s = %+v", name, l)
		}
	}
	if rep.E2EUS.P50 < rep.LatencyUS.P50 {
		t.Errorf("client → NATS p50 %.0f µs < bridge → NATS p50 %.0f µs", rep.E2EUS.P50, rep.LatencyUS.P50)
	}
	if rep.Server.CPUPct <= 0 || rep.LiveKit.PID == 0 || rep.LiveKit.CPUPct <= 0 || rep.LiveKit.RSSSteadyMiB <= 0 {
		t.Errorf("server %+v, livekit %+v", rep.Server, rep.LiveKit)
	}
	if !strings.Contains(table, "livekit-server (pid") || !strings.Contains(table, "latency client→agent") {
		t.Errorf("table:\n%s", table)
	}
	var cmpOut bytes.Buffer
	benchvoice.PrintComparison(&cmpOut, rep, rep)
	if !strings.Contains(cmpOut.String(), "client write → NATS p99") || !strings.Contains(cmpOut.String(), "1.00") {
		t.Errorf("comparison:\n%s", cmpOut.String())
	}
}

// runBenchVoice runs `parley bench voice` in-process with o plus what the
// tests above share (ramp 50/s, 2 senders, one muxed socket, the echo agent
// in the child serve, 30 s to connect, 2 min in all), and returns the
// report and its table (runBench).
func runBenchVoice(t *testing.T, o benchvoice.Options) (*benchvoice.Report, string) {
	t.Helper()
	o.Ramp, o.ConnectTimeout, o.Senders, o.Sockets, o.Prefix, o.Agent = 50, 30*time.Second, 2, "mux", "parley", "in-process"
	return runBench(t, func(ctx context.Context, log io.Writer) (*benchvoice.Report, error) {
		return benchvoice.Run(ctx, o, log)
	})
}

// TestBenchVoiceProfile profiles the broker under voice load. Parley runs in
// this process, so -cpuprofile and -memprofile see the server only, and the
// load generator runs as a child `parley bench voice --url …`:
//
//	PARLEY_BENCH_VOICE_PROFILE=300 go test -run TestBenchVoiceProfile \
//	    -cpuprofile cpu.out -timeout 10m ./cmd/parley
//	go tool pprof -top cpu.out
//
// PARLEY_BENCH_VOICE_ARGS adds flags for the generator (e.g. "--duration 30s").
func TestBenchVoiceProfile(t *testing.T) {
	n := os.Getenv("PARLEY_BENCH_VOICE_PROFILE")
	if n == "" {
		t.Skip("set PARLEY_BENCH_VOICE_PROFILE=<sessions> to profile the broker under voice load")
	}
	bin := parleyBinary(t)
	cfg := testConfig(t)
	cfg.Media.IncludeLoopback = true
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a := newApp(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.Stop(sctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	creds, err := a.broker.CredsFile(broker.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"bench", "voice", "--sessions", n, "--url", "http://" + a.server.Addr(),
		"--nats-url", a.broker.NATSClientURL(), "--nats-creds", creds, "--server-pid", strconv.Itoa(os.Getpid())}
	args = append(args, strings.Fields(os.Getenv("PARLEY_BENCH_VOICE_ARGS"))...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("%v: %v", args, err)
	}
}
