package benchvoice

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/thesyncim/gopus"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
	"github.com/parley-rtc/parley/cmd/internal/livekitserver"
)

// Run runs one load test and reports it. Progress goes to log.
// The report is returned (possibly partial) together with any error.
func Run(ctx context.Context, o Options, log io.Writer) (*Report, error) {
	frames, index, err := opusLoop()
	if err != nil {
		return nil, err
	}
	base, natsURL, creds, pid, agentPID := o.URL, o.NATSURL, o.NATSCreds, o.ServerPID, 0
	var child, agent *benchproc.Proc
	var lk *livekitserver.Server
	var serveConfig string // the child serve's --config; empty: none
	if o.Transport == "livekit" {
		if lk, err = startLiveKit(ctx, o.LiveKitServer); err != nil {
			return nil, err
		}
		defer func() { // after the server: its bridges leave and delete their rooms first
			if err := lk.Stop(); err != nil {
				fmt.Fprintf(log, "bench: %v\n", err)
			}
		}()
		fmt.Fprintf(log, "bench: started livekit-server (pid %d) at %s\n", lk.PID(), lk.URL)
		serveConfig = liveKitServeConfig(lk)
	}
	var prof *benchproc.Profiler
	if o.ProfileDir != "" {
		if prof, err = benchproc.NewProfiler(o.ProfileDir); err != nil {
			return nil, err
		}
	}
	var cluster *benchproc.Cluster
	var brokers, nodes []int // pids in cluster mode
	if o.NATSNodes > 0 {
		// The brokers gather every interface's candidates (the cluster's
		// brokers take no --config, and media.interfaces is a list).
		if cluster, err = benchproc.StartCluster(ctx, o.Binary, o.NATSNodes, o.Brokers, o.ServerEnv, log); err != nil {
			return nil, err
		}
		defer cluster.Stop(log)
		brokers, nodes = benchproc.PIDs(cluster.Brokers), benchproc.PIDs(cluster.Nodes)
		natsURL, creds, agentPID = cluster.NATSURL, "", cluster.Agent.PID()
		fmt.Fprintf(log, "bench: started a %d-node NATS cluster (pids %v), %d brokers (pids %v), parley agent echo (pid %d)\n",
			o.NATSNodes, nodes, o.Brokers, brokers, agentPID)
	}
	if base == "" && cluster == nil {
		if o.Interfaces != "" {
			serveConfig += "media:\n  interfaces: [" + strings.Join(strings.Split(o.Interfaces, ","), ", ") + "]\n"
		}
		env := slices.Clone(o.ServerEnv)
		if prof != nil {
			env = append(env, prof.Env()...)
		}
		if child, agent, base, natsURL, creds, err = benchproc.StartServe(ctx, o.Binary, o.Agent == "process", serveConfig, env); err != nil {
			return nil, err
		}
		defer child.Stop(log)
		pid = child.PID()
		fmt.Fprintf(log, "bench: started parley serve (pid %d) at %s, %s\n", pid, base, natsURL)
		if agent != nil {
			defer agent.Stop(log) // runs first: the agent leaves before the server
			agentPID = agent.PID()
			fmt.Fprintf(log, "bench: started parley agent echo (pid %d)\n", agentPID)
		}
	}
	bases := []string{base}
	if cluster != nil {
		bases = cluster.Bases
	}
	g, err := newGen(o, bases, frames, index)
	if err != nil {
		return nil, err
	}
	defer g.close()
	tap, err := newTap(natsURL, creds, o.Prefix, &g.win)
	if err != nil {
		return nil, err
	}
	defer tap.close()

	srv := brokers // the pids whose CPU and memory are the server's
	if cluster == nil && pid > 0 {
		srv = []int{pid}
	}
	rep := &Report{Sessions: o.Sessions, WindowS: o.Duration.Seconds(), WarmupS: o.Warmup.Seconds(),
		Ramp: o.Ramp, ClientSockets: o.Sockets, ServerPID: pid, ChildServer: child != nil || cluster != nil, Failures: map[string]int{},
		Transport: cmp.Or(o.Transport, "direct")}
	lkPID := 0
	if lk != nil {
		lkPID = lk.PID()
		rep.LiveKit.PID = lkPID
		rep.LiveKit.RSSIdleMiB = mib(benchproc.RSS(lkPID))
	}
	rep.Agent.Where, rep.Agent.PID = "in-process", agentPID
	if cluster != nil {
		rep.Cluster = &ClusterFigures{Brokers: len(brokers), NATSNodes: len(nodes)}
		rep.Cluster.NATS.RSSIdleMiB = mib(benchproc.RSSOf(nodes))
	}
	if agent != nil || cluster != nil {
		rep.Agent.Where = "process"
	} else if child == nil {
		rep.Agent.Where = "as the server runs it"
	}
	if len(srv) > 0 {
		rep.Server.RSSIdleMiB = mib(benchproc.RSSOf(srv))
	}
	if agentPID > 0 {
		rep.Agent.RSSIdleMiB = mib(benchproc.RSS(agentPID))
	}
	// What else keeps the machine busy: the figures mean little if this
	// is high.
	b0 := benchproc.SampleCPU(0, 0)
	if err := benchproc.SleepUntil(ctx, b0.At.Add(time.Second)); err != nil {
		return nil, err
	}
	if b1 := benchproc.SampleCPU(0, 0); b1.SysTotal > b0.SysTotal {
		rep.MachineBusyBeforePct = 100 * (b1.SysBusy - b0.SysBusy) / (b1.SysTotal - b0.SysTotal)
	}
	g.startSenders()

	fmt.Fprintf(log, "bench: starting %d sessions at %.0f/s\n", o.Sessions, o.Ramp)
	g.ramp(ctx, tap)
	connected := 0
	for _, s := range g.sessions {
		if s.err == nil {
			connected++
		}
	}
	fmt.Fprintf(log, "bench: %d/%d connected; warm-up %v, then measuring %v\n", connected, o.Sessions, o.Warmup, o.Duration)

	t0 := time.Now().Add(o.Warmup)
	t1 := t0.Add(o.Duration)
	g.win.set(t0, t1)
	prof.Heap(ctx, "broker-heap-connected.pb.gz", log) // in the warm-up, not the window
	prof.State(ctx, "broker-connected", log)
	if err := benchproc.SleepUntil(ctx, t0); err != nil {
		return rep, g.teardown(tap, err)
	}
	tap.checkAudio(g.sessions) // connected but nothing on NATS yet: failed
	prof.StartCPU(ctx, time.Until(t1), "broker-cpu-window.pb.gz", log)
	c0, nats0 := benchproc.SampleCPUOf(srv, agentPID), benchproc.CPUOf(nodes)
	lk0 := benchproc.ProcCPU(lkPID)
	d0s, d0g, d0l := benchproc.UDPDropsOf(srv), benchproc.UDPDrops(os.Getpid()), benchproc.UDPDrops(lkPID)
	if err := benchproc.SleepUntil(ctx, t1); err != nil {
		return rep, g.teardown(tap, err)
	}
	c1, nats1 := benchproc.SampleCPUOf(srv, agentPID), benchproc.CPUOf(nodes)
	lk1 := benchproc.ProcCPU(lkPID)
	prof.WaitCPU()
	prof.Heap(ctx, "broker-heap-loaded.pb.gz", log)
	if lkPID > 0 {
		rep.LiveKit.CPUPct = 100 * (lk1 - lk0).Seconds() / c1.At.Sub(c0.At).Seconds()
		rep.LiveKit.RSSSteadyMiB = mib(benchproc.RSS(lkPID))
		rep.LiveKit.RSSPerSessionKiB = (rep.LiveKit.RSSSteadyMiB - rep.LiveKit.RSSIdleMiB) * 1024 / float64(o.Sessions)
		rep.LiveKit.UDPDrops = benchproc.DropsSince(d0l, benchproc.UDPDrops(lkPID))
	}
	if len(srv) > 0 {
		rep.Server.RSSSteadyMiB = mib(benchproc.RSSOf(srv))
		rep.Server.RSSPerSessionKiB = (rep.Server.RSSSteadyMiB - rep.Server.RSSIdleMiB) * 1024 / float64(o.Sessions)
		rep.Server.FDs = benchproc.FDsOf(srv)
		rep.Server.UDPDrops = benchproc.DropsSince(d0s, benchproc.UDPDropsOf(srv))
	}
	if rep.Cluster != nil {
		n := &rep.Cluster.NATS
		n.CPUPct = 100 * (nats1 - nats0).Seconds() / c1.At.Sub(c0.At).Seconds()
		n.RSSSteadyMiB = mib(benchproc.RSSOf(nodes))
		n.RSSPerSessionKiB = (n.RSSSteadyMiB - n.RSSIdleMiB) * 1024 / float64(o.Sessions)
	}
	if agentPID > 0 {
		rep.Agent.RSSSteadyMiB = mib(benchproc.RSS(agentPID))
	}
	rep.Generator.UDPDrops = benchproc.DropsSince(d0g, benchproc.UDPDrops(os.Getpid()))
	rep.fillCPU(c0, c1, len(srv) > 0)
	if rep.Cluster != nil {
		rep.OtherCPUPct = max(0, rep.OtherCPUPct-rep.Cluster.NATS.CPUPct)
	}
	rep.OtherCPUPct = max(0, rep.OtherCPUPct-rep.LiveKit.CPUPct)

	g.stopSenders()
	tap.settle(ctx) // frames in flight land
	err = g.teardown(tap, nil)
	rep.fill(g, tap) // every reader has stopped
	if child != nil {
		rep.ServerLog = child.LogSummary()
	}
	if agent != nil {
		rep.AgentLog = agent.LogSummary()
	}
	if lk != nil {
		child.Stop(log) // the bridges leave before LiveKit's log is read
		rep.LiveKitLog = benchproc.LogSummary(lk.Log())
	}
	return rep, err
}

// opusLoop encodes a 5 s loop of a quiet tone (about -50 dBFS: decoded
// by the echo agent's detector, but below its speech threshold, so no
// transcripts) as Opus frames, stereo 48 kHz as WebRTC carries it. The
// tone glides around 440 Hz so that every frame of the loop differs: an
// echoed frame is recognised by its payload, which gives the echo's round
// trip. The map gives each payload's place in the loop.
func opusLoop() ([][]byte, map[string]int, error) {
	enc, err := gopus.NewEncoder(gopus.EncoderConfig{SampleRate: 48000, Channels: 2, Application: gopus.ApplicationVoIP})
	if err != nil {
		return nil, nil, err
	}
	const warm = 50 // one second warms the encoder up
	pcm := make([]int16, 2*frameSamples)
	frames := make([][]byte, 0, loopFrames)
	index := make(map[string]int, loopFrames)
	phase := 0.0
	for i := range warm + loopFrames {
		hz := 440 + 40*math.Sin(2*math.Pi*float64(i)/loopFrames)
		for s := range frameSamples {
			v := int16(150 * math.Sin(phase))
			phase += 2 * math.Pi * hz / 48000
			pcm[2*s], pcm[2*s+1] = v, v
		}
		buf := make([]byte, 1500)
		n, err := enc.EncodeInt16(pcm, buf)
		if err != nil {
			return nil, nil, fmt.Errorf("bench: opus encode: %w", err)
		}
		if i < warm {
			continue
		}
		if n <= 8 { // the echo agent treats these as silence and skips them
			return nil, nil, fmt.Errorf("bench: opus frame %d is only %d bytes", i, n)
		}
		index[string(buf[:n])] = len(frames)
		frames = append(frames, buf[:n])
	}
	if len(index) != len(frames) {
		return nil, nil, fmt.Errorf("bench: only %d of %d opus frames differ", len(index), len(frames))
	}
	return frames, index, nil
}

// window is the steady window, shared by senders, readers and the tap.
type window struct{ t0, t1 atomic.Int64 }

func (w *window) set(t0, t1 time.Time) {
	w.t1.Store(t1.UnixNano())
	w.t0.Store(t0.UnixNano())
}

func (w *window) contains(t time.Time) bool {
	n, t0 := t.UnixNano(), w.t0.Load()
	return t0 != 0 && n >= t0 && n < w.t1.Load()
}
