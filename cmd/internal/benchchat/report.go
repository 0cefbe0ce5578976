package benchchat

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// Report is what a run measured (JSON with --json).
type Report struct {
	Conversations int     `json:"conversations"`
	Live          int     `json:"live"` // conversations whose first message was answered
	RatePerS      float64 `json:"rate_per_s"`
	WindowS       float64 `json:"window_s"`
	WarmupS       float64 `json:"warmup_s"`
	Workers       int     `json:"workers"`
	AgentMode     string  `json:"agent_mode"` // process or in-process
	AgentWorkers  int     `json:"agent_workers"`
	Brokers       int     `json:"brokers"`
	NATSNodes     int     `json:"nats_nodes,omitempty"` // 0: each broker's embedded NATS
	ServerPIDs    []int   `json:"server_pids"`
	AgentPID      int     `json:"agent_pid,omitempty"`

	Sessions struct {
		PerS float64        `json:"per_s"` // created per second with Workers clients
		MS   benchproc.Dist `json:"ms"`    // resolve + create, per session
	} `json:"sessions"`

	// Messages sent in the window, and what became of them.
	Messages struct {
		Sent       int            `json:"sent"`
		Acked      int            `json:"acked"`
		Answered   int            `json:"answered"`
		Lost       int            `json:"lost"`        // socket closed before the answer
		Busy       int64          `json:"busy_skips"`  // visitors skipped: their last message was in flight
		AchievedPS float64        `json:"achieved_ps"` // sent per second
		Errors     map[string]int `json:"errors,omitempty"`
	} `json:"messages"`
	AckMS        benchproc.Dist `json:"ack_ms"`         // sent → ack
	FirstChunkMS benchproc.Dist `json:"first_chunk_ms"` // sent → first chunk of the reply

	Server ProcFigures `json:"server"`         // the brokers together (with the embedded NATS when NATSNodes is 0)
	NATS   ProcFigures `json:"nats,omitempty"` // the NATS nodes together (NATSNodes > 0)
	Agent  ProcFigures `json:"agent"`

	JetStreamConsumers       int `json:"jetstream_consumers"`        // with every conversation live and idle
	JetStreamConsumersLoaded int `json:"jetstream_consumers_loaded"` // at the end of the window

	MachineCPUPct float64        `json:"machine_cpu_pct"`
	Cores         int            `json:"cores"`
	Failures      map[string]int `json:"failures,omitempty"`
	ServerLog     []string       `json:"server_log,omitempty"`
	AgentLog      []string       `json:"agent_log,omitempty"`
}

// ProcFigures are one process's CPU and memory.
type ProcFigures struct {
	CPUPct                 float64 `json:"cpu_pct"` // of one core, in the window
	RSSIdleMiB             float64 `json:"rss_idle_mib"`
	RSSLiveIdleMiB         float64 `json:"rss_live_idle_mib"` // every conversation live, none talking
	RSSSteadyMiB           float64 `json:"rss_steady_mib"`    // at the end of the window
	KiBPerIdleConversation float64 `json:"kib_per_idle_conversation"`
	FDs                    int     `json:"fds,omitempty"`
}

func durationsMS(ds []time.Duration) benchproc.Dist {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = ms(d)
	}
	return benchproc.DistOf(out)
}

// fill takes the window's figures from the visitors' stats and the CPU
// samples at the window's ends.
func (r *Report) fill(s *stats, c0, c1 benchproc.CPUSample, busy int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := &r.Messages
	m.Sent, m.Acked, m.Answered, m.Lost, m.Busy = s.sent, s.acked, s.answeredN, s.lostN, busy
	m.AchievedPS = float64(s.sent) / r.WindowS
	if len(s.errors) > 0 {
		m.Errors = make(map[string]int, len(s.errors))
		for k, v := range s.errors {
			m.Errors[k] = v
		}
	}
	r.AckMS, r.FirstChunkMS = durationsMS(s.acks), durationsMS(s.firsts)
	if wall := c1.At.Sub(c0.At).Seconds(); wall > 0 && !c0.At.IsZero() {
		r.Server.CPUPct = 100 * (c1.Server - c0.Server).Seconds() / wall
		r.Agent.CPUPct = 100 * (c1.Agent - c0.Agent).Seconds() / wall
		if c1.SysTotal > c0.SysTotal {
			r.MachineCPUPct = 100 * (c1.SysBusy - c0.SysBusy) / (c1.SysTotal - c0.SysTotal)
		}
	}
	r.Cores = c1.Cores
}

// PrintTable writes the report for a person.
func (r *Report) PrintTable(w io.Writer) {
	row := func(k, format string, args ...any) {
		fmt.Fprintf(w, "%-44s "+format+"\n", append([]any{k}, args...)...)
	}
	dist := func(s benchproc.Dist) string {
		return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms  (n=%d)", s.P50, s.P90, s.P99, s.Max, s.N)
	}
	if r.NATSNodes > 0 {
		row("deployment", "%d brokers on a %d-node NATS JetStream cluster (processes)", r.Brokers, r.NATSNodes)
	}
	row("conversations (live)", "%d (%d)", r.Conversations, r.Live)
	row("session creation", "%.0f/s with %d clients; %s", r.Sessions.PerS, r.Workers, dist(r.Sessions.MS))
	row("messages in the window", "%d sent (%.0f/s of %.0f/s asked), %d acked, %d answered, %d lost, %d skips of a busy visitor",
		r.Messages.Sent, r.Messages.AchievedPS, r.RatePerS, r.Messages.Acked, r.Messages.Answered, r.Messages.Lost, r.Messages.Busy)
	row("sent → ack", "%s", dist(r.AckMS))
	row("sent → first chunk of the reply", "%s", dist(r.FirstChunkMS))
	row("broker CPU (% of a core)", "%.1f", r.Server.CPUPct)
	row("agent CPU ("+r.AgentMode+", % of a core)", "%.1f", r.Agent.CPUPct)
	row("machine CPU (all cores)", "%.1f%% of %d cores", r.MachineCPUPct, r.Cores)
	row("broker RSS idle / live idle / loaded", "%.1f / %.1f / %.1f MiB", r.Server.RSSIdleMiB, r.Server.RSSLiveIdleMiB, r.Server.RSSSteadyMiB)
	if r.NATSNodes > 0 {
		row("brokers' memory per idle conversation", "%.1f KiB", r.Server.KiBPerIdleConversation)
		row("NATS nodes' CPU (% of a core, together)", "%.1f", r.NATS.CPUPct)
		row("NATS nodes' RSS idle / live idle / loaded", "%.1f / %.1f / %.1f MiB", r.NATS.RSSIdleMiB, r.NATS.RSSLiveIdleMiB, r.NATS.RSSSteadyMiB)
		row("NATS nodes' memory per idle conversation", "%.1f KiB", r.NATS.KiBPerIdleConversation)
	} else {
		row("broker + NATS memory per idle conversation", "%.1f KiB", r.Server.KiBPerIdleConversation)
	}
	if r.AgentMode == "process" {
		row("agent RSS idle / live idle / loaded", "%.1f / %.1f / %.1f MiB", r.Agent.RSSIdleMiB, r.Agent.RSSLiveIdleMiB, r.Agent.RSSSteadyMiB)
		row("agent memory per idle conversation", "%.1f KiB", r.Agent.KiBPerIdleConversation)
	}
	row("broker open files", "%d", r.Server.FDs)
	row("JetStream consumers (live idle / loaded)", "%d / %d", r.JetStreamConsumers, r.JetStreamConsumersLoaded)
	for k, v := range r.Messages.Errors {
		row("error frames", "%d× %s", v, k)
	}
	for k, v := range r.Failures {
		row("failed", "%d× %s", v, k)
	}
	if len(r.ServerLog) > 0 {
		row("server log (warn and above)", "%s", strings.Join(r.ServerLog, "; "))
	}
	if len(r.AgentLog) > 0 {
		row("agent log (warn and above)", "%s", strings.Join(r.AgentLog, "; "))
	}
}
