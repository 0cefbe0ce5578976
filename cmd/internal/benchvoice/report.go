package benchvoice

import (
	"cmp"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// ClusterFigures are a cluster run's: how many brokers and NATS nodes,
// and the nodes' CPU and memory together.
type ClusterFigures struct {
	Brokers   int `json:"brokers"`
	NATSNodes int `json:"nats_nodes"`
	NATS      struct {
		CPUPct           float64 `json:"cpu_pct"`
		RSSIdleMiB       float64 `json:"rss_idle_mib"`
		RSSSteadyMiB     float64 `json:"rss_steady_mib"`
		RSSPerSessionKiB float64 `json:"rss_per_session_kib"`
	} `json:"nats"`
}

// Report is the result of a run; every count is over the steady window
// and the sessions that connected.
type Report struct {
	Sessions      int            `json:"sessions"`
	Connected     int            `json:"connected"`
	Failed        int            `json:"failed"`
	Failures      map[string]int `json:"failures,omitempty"`
	WindowS       float64        `json:"window_s"`
	WarmupS       float64        `json:"warmup_s"`
	Ramp          float64        `json:"ramp_per_s"`
	ClientSockets string         `json:"client_sockets"`
	ServerPID     int            `json:"server_pid,omitempty"`
	ChildServer   bool           `json:"child_server"`
	Cores         int            `json:"cores"`
	Transport     string         `json:"transport"` // direct or livekit

	Frames struct {
		Sent             uint64 `json:"sent"`
		Published        uint64 `json:"published"`        // seen by the agent subscriber
		Missing          int64  `json:"missing"`          // sent − published
		ServerUDPDrops   uint64 `json:"server_udp_drops"` // kernel drops on the server's sockets: lost before the broker
		LostAtBroker     int64  `json:"lost_at_broker"`   // missing − server UDP drops
		SeqGaps          uint64 `json:"parley_seq_gaps"`  // Parley-Seq numbers skipped
		Echoed           uint64 `json:"echoed"`           // echoed RTP back at the clients
		EchoGaps         uint64 `json:"echo_gaps"`        // RTP seq numbers skipped on the way back
		EchoUnknown      uint64 `json:"echo_unknown"`     // echoed payloads that are not ours
		SessionsWithLoss int    `json:"sessions_with_loss"`
		WriteErrors      uint64 `json:"write_errors"`
		SlowConsumer     uint64 `json:"nats_slow_consumer"`
	} `json:"frames"`
	LatencyUS Dist `json:"latency_us"`  // RTP arrival at the broker → agent subscriber
	E2EUS     Dist `json:"e2e_us"`      // client writes a frame → agent subscriber
	EchoRTTMS Dist `json:"echo_rtt_ms"` // client writes a frame → its echo is back at the client
	// The echo round trip's median in the window's first and last second:
	// a rise means frames pile up somewhere (e.g. the playout queue).
	EchoRTTFirstSecMS float64 `json:"echo_rtt_first_second_p50_ms"`
	EchoRTTLastSecMS  float64 `json:"echo_rtt_last_second_p50_ms"`
	ConnectMS         struct {
		OfferAnswer     Dist `json:"offer_answer"`      // HTTP POST of the offer → answer
		OfferConnected  Dist `json:"offer_connected"`   // → ICE+DTLS connected at the client
		OfferFirstFrame Dist `json:"offer_first_frame"` // → first frame of the conversation on NATS
	} `json:"connect_ms"`
	Server struct {
		CPUPct           float64 `json:"cpu_pct"` // of one core
		RSSIdleMiB       float64 `json:"rss_idle_mib"`
		RSSSteadyMiB     float64 `json:"rss_steady_mib"`
		RSSPerSessionKiB float64 `json:"rss_per_session_kib"`
		FDs              int     `json:"fds"`
		UDPDrops         uint64  `json:"udp_drops"`
	} `json:"server"`
	Agent struct {
		Where        string  `json:"where"` // in-process (the server's own echo agent) or process
		PID          int     `json:"pid,omitempty"`
		CPUPct       float64 `json:"cpu_pct,omitempty"`
		RSSIdleMiB   float64 `json:"rss_idle_mib,omitempty"`
		RSSSteadyMiB float64 `json:"rss_steady_mib,omitempty"`
	} `json:"agent"`
	Cluster *ClusterFigures `json:"cluster,omitempty"` // --nats-nodes: brokers on a NATS cluster (Server sums the brokers)
	LiveKit struct {        // --transport livekit: the livekit-server
		PID              int     `json:"pid,omitempty"`
		CPUPct           float64 `json:"cpu_pct,omitempty"`
		RSSIdleMiB       float64 `json:"rss_idle_mib,omitempty"`
		RSSSteadyMiB     float64 `json:"rss_steady_mib,omitempty"`
		RSSPerSessionKiB float64 `json:"rss_per_session_kib,omitempty"`
		UDPDrops         uint64  `json:"udp_drops,omitempty"`
	} `json:"livekit"`
	Generator struct {
		CPUPct        float64 `json:"cpu_pct"`
		UDPDrops      uint64  `json:"udp_drops"`
		LateTicks     uint64  `json:"late_ticks"`    // ticks more than 10 ms late
		SkippedTicks  uint64  `json:"skipped_ticks"` // ticks given up (over 100 ms behind)
		MaxTickLateMS float64 `json:"max_tick_late_ms"`
	} `json:"generator"`
	MachineCPUPct        float64  `json:"machine_cpu_pct"`        // of all cores
	OtherCPUPct          float64  `json:"other_cpu_pct"`          // of one core: what else ran in the window
	MachineBusyBeforePct float64  `json:"machine_cpu_pct_before"` // busy before the run: other load
	ServerLog            []string `json:"server_log,omitempty"`   // warnings and errors of a child server, counted
	AgentLog             []string `json:"agent_log,omitempty"`    // and of a child agent`
	LiveKitLog           []string `json:"livekit_log,omitempty"`  // and of livekit-server
}

// Dist summarises samples (nearest rank); the shape every load generator
// reports.
type Dist = benchproc.Dist

// fill computes the frame counts, latencies and connect times. The senders
// have stopped; the tap and the echo readers are still running but count
// only inside the window, which is over.
func (r *Report) fill(g *gen, tap *audioTap) {
	var answer, conn, first, rtt, rttFirst, rttLast []float64
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for _, s := range g.sessions {
		if s.err != nil {
			r.Failures[errClass(s.err)]++
		} else {
			r.Connected++
		}
		if !s.answerAt.IsZero() {
			answer = append(answer, ms(s.answerAt.Sub(s.offerAt)))
		}
		if c := s.connectedAt.Load(); c != 0 {
			conn = append(conn, ms(time.Unix(0, c).Sub(s.offerAt)))
		}
		if !s.firstNATS.IsZero() {
			first = append(first, ms(s.firstNATS.Sub(s.offerAt)))
		}
		if s.connectedAt.Load() == 0 || !s.inWin {
			continue
		}
		f := &r.Frames
		pub := published(s.got, s.i0, s.i1)
		f.Sent += s.sentWindow
		f.Published += pub
		f.SeqGaps += s.seqGaps
		f.Echoed += s.echoWindow
		f.EchoGaps += s.echoGaps
		f.EchoUnknown += s.echoUnknown
		f.WriteErrors += s.writeErrs
		for i, v := range s.echoRTT {
			rtt = append(rtt, float64(v))
			if i < 50 { // about the first second of the window
				rttFirst = append(rttFirst, float64(v))
			}
			if i >= len(s.echoRTT)-50 {
				rttLast = append(rttLast, float64(v))
			}
		}
		if pub < s.sentWindow || s.echoGaps > 0 {
			f.SessionsWithLoss++
		}
	}
	r.Failed = r.Sessions - r.Connected
	r.Frames.Missing = int64(r.Frames.Sent) - int64(r.Frames.Published)
	r.Frames.ServerUDPDrops = r.Server.UDPDrops
	r.Frames.LostAtBroker = r.Frames.Missing - int64(r.Server.UDPDrops)
	r.Frames.SlowConsumer = tap.slowConsumer.Load()
	lat := make([]float64, len(tap.latUS))
	for i, v := range tap.latUS {
		lat[i] = float64(v)
	}
	r.LatencyUS = benchproc.DistOf(lat)
	e2e := make([]float64, len(tap.e2eUS))
	for i, v := range tap.e2eUS {
		e2e[i] = float64(v)
	}
	r.E2EUS = benchproc.DistOf(e2e)
	r.EchoRTTMS = benchproc.DistOf(rtt)
	r.EchoRTTFirstSecMS = benchproc.DistOf(rttFirst).P50
	r.EchoRTTLastSecMS = benchproc.DistOf(rttLast).P50
	r.ConnectMS.OfferAnswer = benchproc.DistOf(answer)
	r.ConnectMS.OfferConnected = benchproc.DistOf(conn)
	r.ConnectMS.OfferFirstFrame = benchproc.DistOf(first)
	r.Generator.LateTicks = g.lateTicks.Load()
	r.Generator.SkippedTicks = g.skippedTicks.Load()
	r.Generator.MaxTickLateMS = ms(time.Duration(g.maxLate.Load()))
}

// errClass is an error without what differs between sessions.
func errClass(err error) string {
	return varying.ReplaceAllString(err.Error(), "…")
}

// varying matches ids and ports in error texts.
var varying = regexp.MustCompile(`(ses|leg|conv)_[A-Za-z0-9_-]+|127\.0\.0\.1:\d+`)

func (r *Report) fillCPU(c0, c1 benchproc.CPUSample, server bool) {
	wall := c1.At.Sub(c0.At).Seconds()
	if wall <= 0 {
		return
	}
	if server {
		r.Server.CPUPct = 100 * (c1.Server - c0.Server).Seconds() / wall
	}
	r.Generator.CPUPct = 100 * (c1.Self - c0.Self).Seconds() / wall
	r.Agent.CPUPct = 100 * (c1.Agent - c0.Agent).Seconds() / wall
	if c1.SysTotal > c0.SysTotal {
		r.MachineCPUPct = 100 * (c1.SysBusy - c0.SysBusy) / (c1.SysTotal - c0.SysTotal)
	}
	r.Cores = c1.Cores
	r.OtherCPUPct = max(0, r.MachineCPUPct*float64(r.Cores)-r.Server.CPUPct-r.Agent.CPUPct-r.Generator.CPUPct)
}

// PrintTable prints the report as the table docs/BENCHMARKS.md quotes,
// and the counted warnings of the child processes' logs below it.
func (r *Report) PrintTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	server := "a running server"
	if r.ChildServer {
		server = "a child `parley serve`"
	}
	fmt.Fprintf(tw, "parley bench voice\t%d sessions, ramp %.0f/s, %s window after %s warm-up, %s, client sockets: %s, transport: %s\n",
		r.Sessions, r.Ramp, secs(r.WindowS), secs(r.WarmupS), server, r.ClientSockets, cmp.Or(r.Transport, "direct"))
	fmt.Fprintf(tw, "sessions\t%d connected, %d failed\n", r.Connected, r.Failed)
	for k, n := range r.Failures {
		fmt.Fprintf(tw, "  failure\t%d × %s\n", n, k)
	}
	f := r.Frames
	pct := func(a uint64) string {
		if f.Sent == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f%%", 100*float64(a)/float64(f.Sent))
	}
	fmt.Fprintf(tw, "frames (window)\tsent %d, published on NATS %d (%s), echoed back %d (%s)\n",
		f.Sent, f.Published, pct(f.Published), f.Echoed, pct(f.Echoed))
	fmt.Fprintf(tw, "loss\tmissing on NATS %d = server UDP drops %d + lost at broker %d; Parley-Seq gaps %d; echo RTP gaps %d; %d sessions with loss\n",
		f.Missing, f.ServerUDPDrops, f.LostAtBroker, f.SeqGaps, f.EchoGaps, f.SessionsWithLoss)
	l := r.LatencyUS
	fmt.Fprintf(tw, "latency RTP→agent\tp50 %.0f µs, p90 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, max %.0f µs (%d frames)\n",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.N)
	l = r.E2EUS
	fmt.Fprintf(tw, "latency client→agent\tp50 %.0f µs, p90 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, max %.0f µs (%d frames)\n",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.N)
	e := r.EchoRTTMS
	fmt.Fprintf(tw, "echo round trip\tp50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%d frames); p50 %.1f ms in the window's first second, %.1f ms in its last\n",
		e.P50, e.P90, e.P99, e.Max, e.N, r.EchoRTTFirstSecMS, r.EchoRTTLastSecMS)
	c := r.ConnectMS
	names := [3]string{"offer → answer", "offer → connected", "offer → 1st frame on NATS"}
	if r.Transport == "livekit" {
		names = [3]string{"token → joined the room", "token → mic track bound", "token → 1st frame on NATS"}
	}
	fmt.Fprintf(tw, "%s\tp50 %.1f ms, p99 %.1f ms, max %.1f ms\n", names[0], c.OfferAnswer.P50, c.OfferAnswer.P99, c.OfferAnswer.Max)
	fmt.Fprintf(tw, "%s\tp50 %.1f ms, p99 %.1f ms, max %.1f ms\n", names[1], c.OfferConnected.P50, c.OfferConnected.P99, c.OfferConnected.Max)
	fmt.Fprintf(tw, "%s\tp50 %.1f ms, p99 %.1f ms, max %.1f ms\n", names[2], c.OfferFirstFrame.P50, c.OfferFirstFrame.P99, c.OfferFirstFrame.Max)
	if cl := r.Cluster; cl != nil {
		s, n := r.Server, cl.NATS
		fmt.Fprintf(tw, "%d brokers together\tCPU %.1f%% of one core; RSS %.1f MiB idle → %.1f MiB steady = %.0f KiB/session; %d fds\n",
			cl.Brokers, s.CPUPct, s.RSSIdleMiB, s.RSSSteadyMiB, s.RSSPerSessionKiB, s.FDs)
		fmt.Fprintf(tw, "%d NATS nodes together\tCPU %.1f%% of one core; RSS %.1f MiB idle → %.1f MiB steady = %.0f KiB/session\n",
			cl.NATSNodes, n.CPUPct, n.RSSIdleMiB, n.RSSSteadyMiB, n.RSSPerSessionKiB)
	} else if r.ServerPID > 0 {
		s := r.Server
		fmt.Fprintf(tw, "server (pid %d)\tCPU %.1f%% of one core; RSS %.1f MiB idle → %.1f MiB steady = %.0f KiB/session; %d fds\n",
			r.ServerPID, s.CPUPct, s.RSSIdleMiB, s.RSSSteadyMiB, s.RSSPerSessionKiB, s.FDs)
	} else {
		fmt.Fprintf(tw, "server\tCPU and RSS not measured (give --server-pid)\n")
	}
	if r.Agent.PID > 0 {
		fmt.Fprintf(tw, "echo agent (pid %d)\tCPU %.1f%% of one core; RSS %.1f MiB idle → %.1f MiB steady\n",
			r.Agent.PID, r.Agent.CPUPct, r.Agent.RSSIdleMiB, r.Agent.RSSSteadyMiB)
	} else {
		fmt.Fprintf(tw, "echo agent\t%s (its CPU and RSS are in the server's)\n", r.Agent.Where)
	}
	if lk := r.LiveKit; lk.PID > 0 {
		fmt.Fprintf(tw, "livekit-server (pid %d)\tCPU %.1f%% of one core; RSS %.1f MiB idle → %.1f MiB steady = %.0f KiB/session; UDP drops %d\n",
			lk.PID, lk.CPUPct, lk.RSSIdleMiB, lk.RSSSteadyMiB, lk.RSSPerSessionKiB, lk.UDPDrops)
	}
	gn := r.Generator
	fmt.Fprintf(tw, "generator\tCPU %.1f%% of one core; UDP drops %d; ticks late >10 ms %d, skipped %d, max late %.1f ms\n",
		gn.CPUPct, gn.UDPDrops, gn.LateTicks, gn.SkippedTicks, gn.MaxTickLateMS)
	fmt.Fprintf(tw, "machine\tCPU %.1f%% busy of %d cores in the window (%.1f%% before the run); other processes %.1f%% of one core; NATS slow-consumer errors %d\n",
		r.MachineCPUPct, r.Cores, r.MachineBusyBeforePct, r.OtherCPUPct, f.SlowConsumer)
	if r.OtherCPUPct > 10 && (r.ServerPID > 0 || r.Cluster != nil) {
		fmt.Fprintf(tw, "WARNING\tother processes took %.0f%% of a core during the window: the figures above are not clean\n", r.OtherCPUPct)
	}
	_ = tw.Flush()
	if len(r.ServerLog) > 0 {
		fmt.Fprintf(w, "server log (warn and above, last 64 KiB):\n  %s\n", strings.Join(r.ServerLog, "\n  "))
	}
	if len(r.AgentLog) > 0 {
		fmt.Fprintf(w, "agent log (warn and above, last 64 KiB):\n  %s\n", strings.Join(r.AgentLog, "\n  "))
	}
	if len(r.LiveKitLog) > 0 {
		fmt.Fprintf(w, "livekit-server log (warn and above, last 64 KiB):\n  %s\n", strings.Join(r.LiveKitLog, "\n  "))
	}
}

func secs(s float64) string { return (time.Duration(s * float64(time.Second))).String() }

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
