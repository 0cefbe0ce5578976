package benchvoice

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// The report's table, the comparison and the JSON are what
// docs/BENCHMARKS.md quotes and scripts read: testdata/report.golden was
// written by the code before it moved into this package, and must not
// change by accident.
func TestReportGolden(t *testing.T) {
	d, l := fixtureReport("direct"), fixtureReport("livekit")
	var out bytes.Buffer
	d.PrintTable(&out)
	out.WriteString("----\n")
	l.PrintTable(&out)
	out.WriteString("----\n")
	PrintComparison(&out, d, l)
	out.WriteString("----\n")
	enc := json.NewEncoder(&out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(comparison{Direct: d, LiveKit: l}); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/report.golden")
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("report differs from testdata/report.golden:\n%s", lineDiff(string(want), got))
	}
}

// lineDiff lists the lines that differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("- " + wl + "\n+ " + gl + "\n")
		}
	}
	return b.String()
}

// A server that is not measured, and an agent in the server, print their
// own lines.
func TestReportTableRunningServer(t *testing.T) {
	r := fixtureReport("direct")
	r.ServerPID, r.ChildServer, r.Agent.PID, r.Agent.Where = 0, false, 0, "as the server runs it"
	var out bytes.Buffer
	r.PrintTable(&out)
	for _, want := range []string{
		"a running server",
		"server                     CPU and RSS not measured (give --server-pid)",
		"echo agent                 as the server runs it (its CPU and RSS are in the server's)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "WARNING") {
		t.Errorf("the other-load warning needs a measured server:\n%s", out.String())
	}
}

func TestPublished(t *testing.T) {
	got := make([]uint64, 4)
	for _, i := range []uint32{0, 5, 63, 64, 100, 130, 200} {
		got[i/64] |= 1 << (i % 64)
	}
	for _, tc := range []struct {
		i0, i1 uint32
		want   uint64
	}{
		{0, 256, 7}, {1, 64, 2}, {63, 65, 2}, {64, 64, 0}, {100, 131, 2}, {0, 1000, 7}, {201, 1000, 0},
	} {
		if n := published(got, tc.i0, tc.i1); n != tc.want {
			t.Errorf("published(%d, %d) = %d, want %d", tc.i0, tc.i1, n, tc.want)
		}
	}
}

// distOf is nearest rank: the smallest sample with at least q of them at
// or below it.
func TestDistOf(t *testing.T) {
	if d := benchproc.DistOf(nil); d != (Dist{}) {
		t.Errorf("benchproc.DistOf(nil) = %+v", d)
	}
	xs := make([]float64, 1000)
	for i := range xs {
		xs[i] = float64(1000 - i) // 1000 … 1, unsorted
	}
	want := Dist{N: 1000, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if d := benchproc.DistOf(xs); d != want {
		t.Errorf("benchproc.DistOf(1…1000) = %+v, want %+v", d, want)
	}
	if d := benchproc.DistOf([]float64{7}); d != (Dist{N: 1, P50: 7, P90: 7, P99: 7, P999: 7, Max: 7}) {
		t.Errorf("benchproc.DistOf(7) = %+v", d)
	}
}

func TestErrClass(t *testing.T) {
	for in, want := range map[string]string{
		"DELETE /v1/sessions/ses_AbC-12_x: timeout":             "DELETE /v1/sessions/…: timeout",
		"dial tcp 127.0.0.1:43121: connect: connection refused": "dial tcp …: connect: connection refused",
		"leg_1 of conv_2 failed":                                "… of … failed",
	} {
		if got := errClass(errString(in)); got != want {
			t.Errorf("errClass(%q) = %q, want %q", in, got, want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestRouteOf(t *testing.T) {
	if got := routeOf("/v1/sessions/ses_abc/voice/leg_def"); got != "/v1/sessions/{ses}/voice/{leg}" {
		t.Errorf("routeOf = %q", got)
	}
}

// The child's log is summarised by level and message, most frequent
// first, and only its JSON lines count.
func TestLogSummary(t *testing.T) {
	var tb benchproc.TailBuffer
	for _, l := range []string{
		`{"level":"WARN","msg":"slow consumer"}`,
		`not json`,
		`{"level":"ERROR","msg":"store","err":"full"}`,
		`{"level":"WARN","msg":"slow consumer"}`,
		`{"level":"WARN"}`,
	} {
		_, _ = tb.Write([]byte(l + "\n"))
	}
	got := tb.Summary()
	want := []string{"2× WARN slow consumer", "1× ERROR store: full"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("summary = %q, want %q", got, want)
	}
	// The buffer keeps the last 64 KiB only.
	_, _ = tb.Write(bytes.Repeat([]byte("x"), 100<<10))
	if n := len(tb.String()); n != 64<<10 {
		t.Errorf("tail keeps %d bytes, want %d", n, 64<<10)
	}
}

func fixtureReport(transport string) *Report {
	r := &Report{Sessions: 5, Connected: 4, Failed: 1, Failures: map[string]int{"POST /v1/sessions: 429 RATE_LIMITED": 1},
		WindowS: 5, WarmupS: 2, Ramp: 50, ClientSockets: "mux", ServerPID: 4242, ChildServer: true, Cores: 2, Transport: transport}
	f := &r.Frames
	f.Sent, f.Published, f.Missing, f.ServerUDPDrops, f.LostAtBroker = 1000, 990, 10, 4, 6
	f.SeqGaps, f.Echoed, f.EchoGaps, f.EchoUnknown, f.SessionsWithLoss, f.WriteErrors, f.SlowConsumer = 3, 985, 2, 1, 2, 0, 0
	r.LatencyUS = Dist{N: 990, P50: 120, P90: 250, P99: 800, P999: 1500, Max: 2100}
	r.E2EUS = Dist{N: 990, P50: 300, P90: 500, P99: 1200, P999: 2500, Max: 3100}
	r.EchoRTTMS = Dist{N: 985, P50: 21.5, P90: 23, P99: 30.25, P999: 31, Max: 40}
	r.EchoRTTFirstSecMS, r.EchoRTTLastSecMS = 21.2, 21.9
	r.ConnectMS.OfferAnswer = Dist{N: 4, P50: 10.5, P99: 20.25, Max: 20.25}
	r.ConnectMS.OfferConnected = Dist{N: 4, P50: 30.5, P99: 40.25, Max: 40.25}
	r.ConnectMS.OfferFirstFrame = Dist{N: 4, P50: 50.5, P99: 60.25, Max: 60.25}
	r.Server.CPUPct, r.Server.RSSIdleMiB, r.Server.RSSSteadyMiB, r.Server.RSSPerSessionKiB, r.Server.FDs, r.Server.UDPDrops = 12.5, 40, 45, 1024, 77, 4
	r.Agent.Where, r.Agent.PID, r.Agent.CPUPct, r.Agent.RSSIdleMiB, r.Agent.RSSSteadyMiB = "process", 4343, 3.5, 20, 22
	r.Generator.CPUPct, r.Generator.UDPDrops, r.Generator.LateTicks, r.Generator.SkippedTicks, r.Generator.MaxTickLateMS = 30, 1, 2, 0, 12.5
	r.MachineCPUPct, r.OtherCPUPct, r.MachineBusyBeforePct = 40, 15, 5
	r.ServerLog = []string{"2× WARN slow consumer"}
	r.AgentLog = []string{"1× ERROR agent thing"}
	if transport == "livekit" {
		r.LiveKit.PID, r.LiveKit.CPUPct, r.LiveKit.RSSIdleMiB, r.LiveKit.RSSSteadyMiB, r.LiveKit.RSSPerSessionKiB, r.LiveKit.UDPDrops = 4444, 9.5, 60, 70, 2048, 3
		r.LiveKitLog = []string{"1× warn livekit thing"}
	}
	return r
}
