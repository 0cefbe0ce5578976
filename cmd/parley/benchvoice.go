package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"
	"github.com/thesyncim/gopus"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
)

// `parley bench voice` is a load generator for the voice path, run in its
// own process: N pion peers play visitors that talk (50 Opus frames/s each)
// to a `parley serve`, whose echo agent sends every frame back. It measures,
// as an agent would see it, RTP arrival at the broker → NATS subscriber
// latency (Parley-Captured-At), frames sent vs published vs echoed, voice
// connect times, and the broker's CPU and RSS.
//
// The run: start (or use) a server → sample its idle RSS → create sessions
// at --ramp/s, each with a peer that starts sending once its answer is
// applied → when every session is connected (or failed), --warmup → the
// steady window of --duration, where everything is counted → stop sending,
// let in-flight frames land → hang up every leg and close every peer.

const (
	bvFrame        = 20 * time.Millisecond
	bvFrameSamples = 960 // RTP clock ticks (48 kHz) per 20 ms frame
	bvOpusPT       = 111
	bvOrigin       = "http://localhost"
	bvWidgetKey    = "pk_demo"
	bvSocketBuffer = 4 << 20
	bvSettle       = 300 * time.Millisecond // no new frame on NATS for this long: all landed
	bvSettleMax    = 10 * time.Second
	bvLoopFrames   = 250 // the signal loops every 5 s
)

// bvReadyLine is what `parley serve` prints on stdout once it is ready.
var bvReadyLine = regexp.MustCompile(`^Parley is ready: open (http://\S+)/ \(agents connect to (nats://\S+)\)`)

// benchVoiceOptions configure a run; see benchVoiceCmd for the flags.
type benchVoiceOptions struct {
	Sessions       int
	Duration       time.Duration // the steady window that is measured
	Warmup         time.Duration // skipped after the last session connected
	Ramp           float64       // sessions started per second
	URL, NATSURL   string        // a running server; empty: start a child
	NATSCreds      string        // .creds for NATSURL (operator tools' credentials)
	ServerPID      int           // for CPU/RSS of a running server
	ConnectTimeout time.Duration
	Senders        int    // sender goroutines shared by all sessions
	Sockets        string // "mux": one UDP socket for all peers; "peer": one each
	Prefix         string // NATS subject prefix
	Binary         string // parley binary for the child; empty: os.Executable()
	Agent          string // "in-process": serve's echo agent; "process": `parley agent echo`
	Transport      string // "direct" (Parley's own WebRTC) or "livekit"; "both" only in the command
	LiveKitServer  string // livekit-server binary for --transport livekit; empty: see bvLiveKitServerPath
}

func benchCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "voice" {
		fmt.Fprint(stderr, "Usage: parley bench voice [flags]\n\nRun \"parley bench voice -h\" for the flags.\n")
		return 2
	}
	return benchVoiceCmd(args[1:], stdout, stderr)
}

func benchVoiceCmd(args []string, stdout, stderr io.Writer) int {
	o := benchVoiceOptions{}
	var asJSON bool
	var cpuProfile string
	fs := flag.NewFlagSet("parley bench voice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.Sessions, "sessions", 100, "concurrent voice sessions")
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "length of the measured steady window")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "skipped after every session connected, before the window")
	fs.Float64Var(&o.Ramp, "ramp", 50, "sessions started per second")
	fs.StringVar(&o.URL, "url", "", "HTTP base URL of a running parley with loopback candidates and the resolve/sessions rate limits off (default: start `parley serve` as a child)")
	fs.StringVar(&o.NATSURL, "nats-url", "", "NATS URL of that running parley (with --url)")
	fs.StringVar(&o.NATSCreds, "nats-creds", os.Getenv(credsEnv), "NATS .creds file for --nats-url, e.g. DATA_DIR/auth/operator.creds ("+credsEnv+")")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "pid of that running parley, for its CPU and RSS (with --url)")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", 30*time.Second, "per session: offer → ICE+DTLS connected")
	fs.IntVar(&o.Senders, "senders", 4, "sender goroutines shared by all sessions")
	fs.StringVar(&o.Sockets, "client-sockets", "mux", `client UDP sockets: "mux" (one for all peers) or "peer" (one per peer)`)
	fs.StringVar(&o.Prefix, "nats-prefix", "parley", "NATS subject prefix of the server")
	fs.StringVar(&o.Agent, "agent", "in-process", `echo agent of the child server: "in-process" (serve's own) or "process" (a separate `+"`parley agent echo`"+`, so the broker's CPU is measured alone)`)
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write the generator's own CPU profile to this file (profile the server with TestBenchVoiceProfile)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of the table")
	fs.StringVar(&o.Transport, "transport", "direct", `voice transport: "direct" (Parley's WebRTC), "livekit" (through a child livekit-server --dev and Parley's bridge) or "both" (direct, then livekit, and their ratios)`)
	fs.StringVar(&o.LiveKitServer, "livekit-server", "", "livekit-server binary for --transport livekit (default $PARLEY_LIVEKIT_SERVER, else .cache/bin/livekit-server of the module, built by `make livekit`)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "parley bench voice: %v\n", err)
		return 2
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "parley bench voice: --cpuprofile: %v\n", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.Transport == "livekit" || o.Transport == "both" {
		bvQuietLiveKitSDK()
	}
	if o.Transport == "both" {
		return benchVoiceBoth(ctx, o, asJSON, stdout, stderr)
	}
	rep, err := runBenchVoice(ctx, o, stderr)
	if rep != nil {
		if asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			rep.printTable(stdout)
		}
	}
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "parley bench voice: %v\n", err)
		return 1
	case rep.Failed > 0:
		fmt.Fprintf(stderr, "parley bench voice: %d of %d sessions failed: %v\n", rep.Failed, rep.Sessions, rep.Failures)
		return 1
	}
	return 0
}

func (o benchVoiceOptions) validate() error {
	switch {
	case o.Sessions < 1:
		return errors.New("--sessions must be at least 1")
	case o.Duration < time.Second:
		return errors.New("--duration must be at least 1s")
	case o.Warmup < 0:
		return errors.New("--warmup must not be negative")
	case o.Ramp <= 0:
		return errors.New("--ramp must be positive")
	case (o.URL == "") != (o.NATSURL == ""):
		return errors.New("--url and --nats-url go together")
	case o.Senders < 1:
		return errors.New("--senders must be at least 1")
	case o.Sockets != "mux" && o.Sockets != "peer":
		return errors.New(`--client-sockets must be "mux" or "peer"`)
	case o.Agent != "in-process" && o.Agent != "process":
		return errors.New(`--agent must be "in-process" or "process"`)
	case o.Agent == "process" && o.URL != "":
		return errors.New(`--agent process starts the agent with the child server; not with --url`)
	case o.Transport != "" && o.Transport != "direct" && o.Transport != "livekit" && o.Transport != "both":
		return errors.New(`--transport must be "direct", "livekit" or "both"`)
	case o.Transport != "" && o.Transport != "direct" && o.URL != "":
		return errors.New(`--transport livekit starts livekit-server and the child server; not with --url`)
	}
	return nil
}

// runBenchVoice runs one load test and reports it. Progress goes to log.
// The report is returned (possibly partial) together with any error.
func runBenchVoice(ctx context.Context, o benchVoiceOptions, log io.Writer) (*voiceReport, error) {
	frames, index, err := bvOpusLoop()
	if err != nil {
		return nil, err
	}
	base, natsURL, creds, pid, agentPID := o.URL, o.NATSURL, o.NATSCreds, o.ServerPID, 0
	var child, agent *bvChild
	var lk *bvLiveKit
	var serveArgs []string
	if o.Transport == "livekit" {
		bin, err := bvLiveKitServerPath(o.LiveKitServer)
		if err != nil {
			return nil, err
		}
		if lk, err = bvStartLiveKit(ctx, bin); err != nil {
			return nil, err
		}
		defer lk.stop(log) // after the server: its bridges leave and delete their rooms first
		fmt.Fprintf(log, "bench: started livekit-server (pid %d) at %s\n", lk.pid(), lk.url)
		conf, err := lk.parleyConfig()
		if err != nil {
			return nil, err
		}
		serveArgs = []string{"--config", conf}
	}
	if base == "" {
		if child, agent, base, natsURL, creds, err = bvStartServe(ctx, o.Binary, o.Agent == "process", serveArgs...); err != nil {
			return nil, err
		}
		defer child.stop(log)
		pid = child.pid()
		fmt.Fprintf(log, "bench: started parley serve (pid %d) at %s, %s\n", pid, base, natsURL)
		if agent != nil {
			defer agent.stop(log) // runs first: the agent leaves before the server
			agentPID = agent.pid()
			fmt.Fprintf(log, "bench: started parley agent echo (pid %d)\n", agentPID)
		}
	}
	g, err := newBVGen(o, base, frames, index)
	if err != nil {
		return nil, err
	}
	defer g.close()
	tap, err := bvTapNATS(natsURL, creds, o.Prefix, &g.win)
	if err != nil {
		return nil, err
	}
	defer tap.close()

	rep := &voiceReport{Sessions: o.Sessions, WindowS: o.Duration.Seconds(), WarmupS: o.Warmup.Seconds(),
		Ramp: o.Ramp, ClientSockets: o.Sockets, ServerPID: pid, ChildServer: child != nil, Failures: map[string]int{},
		Transport: cmp.Or(o.Transport, "direct")}
	lkPID := 0
	if lk != nil {
		lkPID = lk.pid()
		rep.LiveKit.PID = lkPID
		rep.LiveKit.RSSIdleMiB = bvMiB(bvRSS(lkPID))
	}
	rep.Agent.Where, rep.Agent.PID = "in-process", agentPID
	if agent != nil {
		rep.Agent.Where = "process"
	} else if child == nil {
		rep.Agent.Where = "as the server runs it"
	}
	if pid > 0 {
		rep.Server.RSSIdleMiB = bvMiB(bvRSS(pid))
	}
	if agentPID > 0 {
		rep.Agent.RSSIdleMiB = bvMiB(bvRSS(agentPID))
	}
	// What else keeps the machine busy: the figures mean little if this
	// is high.
	b0 := bvSampleCPU(0, 0)
	if err := bvSleepUntil(ctx, b0.at.Add(time.Second)); err != nil {
		return nil, err
	}
	if b1 := bvSampleCPU(0, 0); b1.sysTotal > b0.sysTotal {
		rep.MachineBusyBeforePct = 100 * float64(b1.sysBusy-b0.sysBusy) / float64(b1.sysTotal-b0.sysTotal)
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
	if err := bvSleepUntil(ctx, t0); err != nil {
		return rep, g.teardown(tap, err)
	}
	tap.checkAudio(g.sessions) // connected but nothing on NATS yet: failed
	c0 := bvSampleCPU(pid, agentPID)
	lk0 := bvProcCPU(lkPID)
	d0s, d0g, d0l := bvUDPDrops(pid), bvUDPDrops(os.Getpid()), bvUDPDrops(lkPID)
	if err := bvSleepUntil(ctx, t1); err != nil {
		return rep, g.teardown(tap, err)
	}
	c1 := bvSampleCPU(pid, agentPID)
	lk1 := bvProcCPU(lkPID)
	if lkPID > 0 {
		rep.LiveKit.CPUPct = 100 * (lk1 - lk0).Seconds() / c1.at.Sub(c0.at).Seconds()
		rep.LiveKit.RSSSteadyMiB = bvMiB(bvRSS(lkPID))
		rep.LiveKit.RSSPerSessionKiB = (rep.LiveKit.RSSSteadyMiB - rep.LiveKit.RSSIdleMiB) * 1024 / float64(o.Sessions)
		rep.LiveKit.UDPDrops = bvDropsSince(d0l, bvUDPDrops(lkPID))
	}
	if pid > 0 {
		rep.Server.RSSSteadyMiB = bvMiB(bvRSS(pid))
		rep.Server.RSSPerSessionKiB = (rep.Server.RSSSteadyMiB - rep.Server.RSSIdleMiB) * 1024 / float64(o.Sessions)
		rep.Server.FDs = bvCountFDs(pid)
		rep.Server.UDPDrops = bvDropsSince(d0s, bvUDPDrops(pid))
	}
	if agentPID > 0 {
		rep.Agent.RSSSteadyMiB = bvMiB(bvRSS(agentPID))
	}
	rep.Generator.UDPDrops = bvDropsSince(d0g, bvUDPDrops(os.Getpid()))
	rep.fillCPU(c0, c1, pid > 0)
	rep.OtherCPUPct = max(0, rep.OtherCPUPct-rep.LiveKit.CPUPct)

	g.stopSenders()
	tap.settle(ctx) // frames in flight land
	err = g.teardown(tap, nil)
	rep.fill(g, tap) // every reader has stopped
	if child != nil {
		rep.ServerLog = child.stderr.summary()
	}
	if agent != nil {
		rep.AgentLog = agent.stderr.summary()
	}
	if lk != nil {
		child.stop(log) // the bridges leave before LiveKit's log is read
		rep.LiveKitLog = lk.logSummary()
	}
	return rep, err
}

// bvOpusLoop encodes a 5 s loop of a quiet tone (about -50 dBFS: decoded
// by the echo agent's detector, but below its speech threshold, so no
// transcripts) as Opus frames, stereo 48 kHz as WebRTC carries it. The
// tone glides around 440 Hz so that every frame of the loop differs: an
// echoed frame is recognised by its payload, which gives the echo's round
// trip. The map gives each payload's place in the loop.
func bvOpusLoop() ([][]byte, map[string]int, error) {
	enc, err := gopus.NewEncoder(gopus.EncoderConfig{SampleRate: 48000, Channels: 2, Application: gopus.ApplicationVoIP})
	if err != nil {
		return nil, nil, err
	}
	const warm = 50 // one second warms the encoder up
	pcm := make([]int16, 2*bvFrameSamples)
	frames := make([][]byte, 0, bvLoopFrames)
	index := make(map[string]int, bvLoopFrames)
	phase := 0.0
	for i := range warm + bvLoopFrames {
		hz := 440 + 40*math.Sin(2*math.Pi*float64(i)/bvLoopFrames)
		for s := range bvFrameSamples {
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

// bvWindow is the steady window, shared by senders, readers and the tap.
type bvWindow struct{ t0, t1 atomic.Int64 }

func (w *bvWindow) set(t0, t1 time.Time) {
	w.t1.Store(t1.UnixNano())
	w.t0.Store(t0.UnixNano())
}

func (w *bvWindow) contains(t time.Time) bool {
	n, t0 := t.UnixNano(), w.t0.Load()
	return t0 != 0 && n >= t0 && n < w.t1.Load()
}

func bvSleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// bvChild is a parley process started by the bench: `parley serve`, or
// `parley agent echo`.
type bvChild struct {
	name     string
	cmd      *exec.Cmd
	dir      string // removed by stop
	stderr   *bvTail
	exited   chan struct{}
	waitErr  error // set before exited closes
	stopOnce sync.Once
}

// bvAgentReadyLine is what `parley agent echo` prints once its workers run.
var bvAgentReadyLine = regexp.MustCompile(`^echo agent: \d+ worker\(s\) serving`)

// bvStartChild starts bin with args and waits for a stdout line matching
// ready, whose submatches it returns. The child gets its own process group
// (a terminal's ^C reaches only the bench, which stops it) and is killed if
// the bench dies.
func bvStartChild(ctx context.Context, name, bin, dir string, env []string, ready *regexp.Regexp, args ...string) (*bvChild, []string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c := &bvChild{name: name, cmd: cmd, dir: dir, stderr: &bvTail{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("bench: starting %s: %w", name, err)
	}
	lines := make(chan []string, 1)
	go func() { // owned: ends when the child exits; stop waits for exited
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case lines <- m:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	select {
	case m := <-lines:
		return c, m, nil
	case <-c.exited:
		err = fmt.Errorf("bench: %s exited (%v) before it was ready:\n%s", name, c.waitErr, c.stderr.String())
	case <-timeout.C:
		err = fmt.Errorf("bench: %s was not ready within 60s", name)
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	c.stop(io.Discard)
	return nil, nil, err
}

// bvStartServe starts `parley serve` on ephemeral ports and a fresh data
// dir, with loopback candidates, and returns it with its HTTP and NATS
// URLs. With externalAgent its in-process echo agent is off, and a
// `parley agent echo` process is started too.
func bvStartServe(ctx context.Context, bin string, externalAgent bool, extra ...string) (srv, agent *bvChild, base, natsURL, creds string, err error) {
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, nil, "", "", "", fmt.Errorf("bench: finding the parley binary: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		return nil, nil, "", "", "", err
	}
	// All sessions come from 127.0.0.1: the per-IP and per-widget limits
	// of resolve and session creation would refuse most of them.
	env := []string{"PARLEY_MEDIA_INCLUDE_LOOPBACK=true",
		"PARLEY_LIMITS_RESOLVE_PER_IP=0", "PARLEY_LIMITS_RESOLVE_PER_WIDGET=0",
		"PARLEY_LIMITS_SESSIONS_PER_IP=0", "PARLEY_LIMITS_SESSIONS_PER_WIDGET=0"}
	srv, m, err := bvStartChild(ctx, "parley serve", bin, dir, env, bvReadyLine,
		append([]string{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1",
			"--log-level", "warn", "--echo-agent=" + strconv.FormatBool(!externalAgent)}, extra...)...)
	if err != nil {
		return nil, nil, "", "", "", err
	}
	base, natsURL = strings.Replace(m[1], "//localhost:", "//127.0.0.1:", 1), m[2]
	creds = broker.CredsPath(dir, broker.RoleOperator)
	if externalAgent {
		agent, _, err = bvStartChild(ctx, "parley agent echo", bin, "", nil, bvAgentReadyLine,
			"agent", "echo", "--nats-url", natsURL, "--data-dir", dir, "--log-level", "warn")
		if err != nil {
			srv.stop(io.Discard)
			return nil, nil, "", "", "", err
		}
	}
	return srv, agent, base, natsURL, creds, nil
}

// stop sends SIGTERM, waits (SIGKILL after 30 s) and removes the data dir.
func (c *bvChild) stop(log io.Writer) {
	c.stopOnce.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			fmt.Fprintf(log, "bench: %s did not stop within 30s; killing it\n", c.name)
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if c.waitErr != nil {
			fmt.Fprintf(log, "bench: %s exited: %v\n", c.name, c.waitErr)
		}
		if c.dir != "" {
			_ = os.RemoveAll(c.dir)
		}
	})
}

func (c *bvChild) pid() int { return c.cmd.Process.Pid }

// bvTail keeps the last 64 KiB of the child's stderr.
type bvTail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *bvTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - 64<<10; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *bvTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// summary counts the JSON log lines kept, by level and message, most
// frequent first (at most 10).
func (t *bvTail) summary() []string {
	counts := map[string]int{}
	for line := range strings.SplitSeq(t.String(), "\n") {
		var l struct{ Level, Msg, Err string }
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg == "" {
			continue
		}
		k := l.Level + " " + l.Msg
		if l.Err != "" {
			k += ": " + l.Err
		}
		counts[k]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return counts[b] - counts[a] })
	out := make([]string, 0, min(len(keys), 10))
	for _, k := range keys[:min(len(keys), 10)] {
		out = append(out, fmt.Sprintf("%d× %s", counts[k], k))
	}
	return out
}

// bvGen is the client side: one pion API for all peers, their sessions and
// the sender goroutines.
type bvGen struct {
	o      benchVoiceOptions
	base   string
	frames [][]byte
	index  map[string]int // payload → place in frames
	http   *http.Client
	api    *webrtc.API
	mux    ice.UDPMux // nil with --client-sockets peer
	win    bvWindow

	sessions []*bvSession
	shards   []*bvShard
	quit     chan struct{}
	senders  sync.WaitGroup

	lateTicks, skippedTicks atomic.Uint64
	maxLate                 atomic.Int64
}

func newBVGen(o benchVoiceOptions, base string, frames [][]byte, index map[string]int) (*bvGen, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("bench: --url: %w", err)
	}
	g := &bvGen{o: o, base: strings.TrimSuffix(base, "/"), frames: frames, index: index, quit: make(chan struct{}),
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType: bvOpusPT,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled) // no mDNS socket per peer
	loopback := bvIsLoopback(u.Hostname())
	if loopback {
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	std, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	nw := bvBufferedNet{Net: std}
	se.SetNet(nw)
	if o.Sockets == "mux" {
		ip := net.IPv4(127, 0, 0, 1)
		if !loopback {
			ip = net.IPv4zero
		}
		conn, err := nw.ListenUDP("udp4", &net.UDPAddr{IP: ip})
		if err != nil {
			return nil, fmt.Errorf("bench: client UDP socket: %w", err)
		}
		g.mux = ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn, Net: nw})
		se.SetICEUDPMux(g.mux)
	}
	// No interceptors: the generator only writes and counts RTP.
	g.api = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	for range o.Senders {
		g.shards = append(g.shards, &bvShard{})
	}
	return g, nil
}

func bvIsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// bvBufferedNet gives every UDP socket pion opens large buffers: a few
// hundred peers' packets arrive in bursts on each tick.
type bvBufferedNet struct{ *stdnet.Net }

// ListenUDP implements transport.Net.
func (n bvBufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil {
		_ = c.SetReadBuffer(bvSocketBuffer) // capped at net.core.rmem_max
		_ = c.SetWriteBuffer(bvSocketBuffer)
	}
	return c, err
}

func (g *bvGen) close() {
	g.stopSenders()
	if g.mux != nil {
		_ = g.mux.Close()
	}
	g.http.CloseIdleConnections()
}

// bvShard is the sessions one sender goroutine writes for.
type bvShard struct {
	mu       sync.Mutex
	sessions []*bvSession // append-only
}

func (sh *bvShard) add(s *bvSession) {
	sh.mu.Lock()
	sh.sessions = append(sh.sessions, s)
	sh.mu.Unlock()
}

// startSenders starts the sender goroutines, their ticks spread over the
// 20 ms period.
func (g *bvGen) startSenders() {
	epoch := time.Now()
	for i, sh := range g.shards {
		offset := time.Duration(i) * bvFrame / time.Duration(len(g.shards))
		g.senders.Go(func() { g.runSender(sh, epoch.Add(offset)) })
	}
}

func (g *bvGen) stopSenders() {
	select {
	case <-g.quit:
	default:
		close(g.quit)
	}
	g.senders.Wait()
}

// runSender writes one frame for each of its sessions every 20 ms on an
// absolute schedule. When it falls more than 100 ms behind (the machine is
// saturated) it skips ticks rather than bursting, and counts them.
func (g *bvGen) runSender(sh *bvShard, next time.Time) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: bvOpusPT}}
	for {
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-g.quit:
				return
			case <-timer.C:
			}
		} else {
			select {
			case <-g.quit:
				return
			default:
			}
		}
		late := time.Since(next)
		if late > 10*time.Millisecond {
			g.lateTicks.Add(1)
		}
		for cur := g.maxLate.Load(); int64(late) > cur && !g.maxLate.CompareAndSwap(cur, int64(late)); cur = g.maxLate.Load() {
		}
		sh.mu.Lock()
		list := sh.sessions
		sh.mu.Unlock()
		inWin := g.win.contains(next)
		for _, s := range list {
			s.sendFrame(&pkt, inWin)
		}
		next = next.Add(bvFrame)
		if behind := time.Since(next); behind > 100*time.Millisecond {
			n := behind / bvFrame
			next = next.Add(n * bvFrame)
			g.skippedTicks.Add(uint64(n))
		}
	}
}

// ramp creates the sessions at o.Ramp per second and returns when each has
// connected or failed.
func (g *bvGen) ramp(ctx context.Context, tap *bvTap) {
	interval := time.Duration(float64(time.Second) / g.o.Ramp)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range g.o.Sessions {
		s := &bvSession{g: g, n: i, seq0: uint16(rand.Uint32()), connected: make(chan struct{}), failed: make(chan struct{})}
		g.sessions = append(g.sessions, s)
		if err := bvSleepUntil(ctx, start.Add(time.Duration(i)*interval)); err != nil {
			s.err = err
			continue
		}
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, g.o.ConnectTimeout)
			defer cancel()
			if g.o.Transport == "livekit" {
				s.err = s.setupLiveKit(sctx, tap)
			} else {
				s.err = s.setup(sctx, tap)
			}
		})
	}
	wg.Wait()
}

// bvSession is one visitor: a session, a peer and its counters.
type bvSession struct {
	g                  *bvGen
	n                  int
	id, cid, token     string
	leg                string // Location of the voice leg
	pc                 *webrtc.PeerConnection
	track              *webrtc.TrackLocalStaticRTP
	lk                 *bvLKPeer // --transport livekit: instead of pc and track
	err                error     // setup result; read after ramp
	offerAt, answerAt  time.Time
	connectedAt        atomic.Int64 // unix nanos
	connected, failed  chan struct{}
	connOnce, failOnce sync.Once

	// Owned by the sender goroutine; read after it stopped.
	sending    atomic.Bool
	seq0       uint16
	idx        uint32 // next frame: RTP seq seq0+idx, timestamp idx*960
	i0, i1     uint32 // frames [i0, i1) were sent in the window
	inWin      bool
	writeErrs  uint64
	sentWindow uint64

	// Owned by the NATS tap (under tap.mu).
	firstNATS  time.Time
	natsFrames uint64
	got        []uint64 // bit i: frame i was published
	lastSeq    uint64
	seqGaps    uint64 // frames skipped by Parley-Seq, in the window

	// sentAt[k] is when frame k of the loop was last written (unix nanos),
	// sentIdx[k] as which frame of the session.
	sentAt  [bvLoopFrames]atomic.Int64
	sentIdx [bvLoopFrames]atomic.Uint32

	// Owned by the echo reader; read after it stopped.
	echoWindow, echoGaps uint64
	echoRTT              []float32 // ms, echoes received in the window
	echoUnknown          uint64    // echoed payloads not from the loop

	mu      sync.Mutex // guards closed and the Add of readers
	closed  bool
	readers sync.WaitGroup
}

// setup: resolve, create a session, offer, apply the answer, start sending
// and wait for ICE+DTLS.
func (s *bvSession) setup(ctx context.Context, tap *bvTap) error {
	g := s.g
	var res struct {
		Challenge string `json:"challenge"`
	}
	if err := g.postJSON(ctx, "/v1/widget/resolve", map[string]string{"widget_key": bvWidgetKey}, &res); err != nil {
		return err
	}
	var cr struct {
		SessionID      string `json:"session_id"`
		ConversationID string `json:"conversation_id"`
		SessionToken   string `json:"session_token"`
		VoicePath      string `json:"voice_path"`
	}
	if err := g.postJSON(ctx, "/v1/sessions", map[string]string{"widget_key": bvWidgetKey,
		"challenge": res.Challenge, "mode": "voice"}, &cr); err != nil {
		return err
	}
	s.id, s.cid, s.token = cr.SessionID, cr.ConversationID, cr.SessionToken
	if cr.VoicePath == "" {
		return errors.New("the server offers no voice (no voice_path)")
	}
	tap.register(s)

	pc, err := g.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return fmt.Errorf("new peer: %w", err)
	}
	s.mu.Lock()
	s.pc = pc
	s.mu.Unlock()
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connOnce.Do(func() {
				s.connectedAt.Store(time.Now().UnixNano())
				close(s.connected)
			})
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			s.failOnce.Do(func() { close(s.failed) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed {
			s.readers.Go(func() { s.readEcho(tr) })
		}
	})
	s.track, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2},
		"mic", fmt.Sprintf("bench-%d", s.n))
	if err != nil {
		return err
	}
	if _, err := pc.AddTransceiverFromTrack(s.track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
		return err
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
	s.offerAt = time.Now()
	answer, loc, err := g.postOffer(ctx, cr.VoicePath, s.token, pc.LocalDescription().SDP)
	if err != nil {
		return err
	}
	s.answerAt, s.leg = time.Now(), loc
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("apply answer: %w", err)
	}
	s.sending.Store(true)
	g.shards[s.n%len(g.shards)].add(s)
	select {
	case <-s.connected:
		return nil
	case <-s.failed:
		return errors.New("ICE/DTLS failed")
	case <-ctx.Done():
		return fmt.Errorf("not connected within %v", g.o.ConnectTimeout)
	}
}

// sendFrame writes the session's next frame (sender goroutine only).
func (s *bvSession) sendFrame(p *rtp.Packet, inWindow bool) {
	if !s.sending.Load() {
		return
	}
	i := s.idx
	s.idx++
	p.SequenceNumber = s.seq0 + uint16(i)
	p.Timestamp = i * bvFrameSamples
	p.Marker = i == 0
	k := int(i) % len(s.g.frames)
	p.Payload = s.g.frames[k]
	s.sentIdx[k].Store(i)
	s.sentAt[k].Store(time.Now().UnixNano())
	var err error
	if s.lk != nil {
		err = s.lk.write(p.Payload)
	} else {
		err = s.track.WriteRTP(p)
	}
	if err != nil {
		s.writeErrs++
		return
	}
	if inWindow {
		if !s.inWin {
			s.inWin, s.i0 = true, i
		}
		s.i1 = i + 1
		s.sentWindow++
	}
}

// readEcho counts the echoed RTP that arrives in the window, the gaps in
// its sequence numbers, and each echo's round trip: from when its payload
// was last sent (the loop is 5 s long) to now.
func (s *bvSession) readEcho(tr *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	var last uint16
	started := false
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		var h rtp.Header
		hl, err := h.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		seq := h.SequenceNumber
		if now := time.Now(); s.g.win.contains(now) {
			s.echoWindow++
			if d := seq - last; started && d > 1 && d < 1<<15 {
				s.echoGaps += uint64(d - 1)
			}
			payload := buf[hl:n]
			if h.Padding && len(payload) > 0 {
				payload = payload[:max(0, len(payload)-int(payload[len(payload)-1]))]
			}
			if k, ok := s.g.index[string(payload)]; ok {
				s.echoRTT = append(s.echoRTT, float32(now.UnixNano()-s.sentAt[k].Load())/1e6)
			} else {
				s.echoUnknown++
			}
		}
		if !started || int16(seq-last) > 0 {
			last, started = seq, true
		}
	}
}

// end hangs up: DELETE the leg and the session, close the peer, wait for
// its readers.
func (s *bvSession) end(ctx context.Context) {
	s.sending.Store(false)
	if s.leg != "" {
		_ = s.g.do(ctx, http.MethodDelete, s.leg, s.token)
	}
	if s.id != "" {
		_ = s.g.do(ctx, http.MethodDelete, "/v1/sessions/"+s.id, s.token)
	}
	s.mu.Lock()
	s.closed = true
	pc, lk := s.pc, s.lk
	s.mu.Unlock()
	if pc != nil {
		_ = pc.Close()
	}
	if lk != nil {
		lk.room.Disconnect()
	}
	s.readers.Wait()
}

// teardown ends every session, 32 at a time, and returns cause.
func (g *bvGen) teardown(tap *bvTap, cause error) error {
	g.stopSenders()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, s := range g.sessions {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s.end(ctx)
		})
	}
	wg.Wait()
	tap.close()
	return cause
}

func (g *bvGen) postJSON(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", bvOrigin)
	raw, _, err := g.send(req, http.StatusOK, http.StatusCreated)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// postOffer posts an SDP offer and returns the answer and the leg URL.
func (g *bvGen) postOffer(ctx context.Context, path, token, offer string) (string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+path, strings.NewReader(offer))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Origin", bvOrigin)
	raw, h, err := g.send(req, http.StatusCreated)
	if err != nil {
		return "", "", err
	}
	return string(raw), h.Get("Location"), nil
}

func (g *bvGen) do(ctx context.Context, method, path, token string) error {
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Origin", bvOrigin)
	_, _, err = g.send(req, http.StatusNoContent, http.StatusOK)
	return err
}

// send does req and fails unless the status is one of ok; errors name the
// route and the server's error code, so failures group well.
func (g *bvGen) send(req *http.Request, ok ...int) ([]byte, http.Header, error) {
	route := req.Method + " " + bvRoute(req.URL.Path)
	res, err := g.http.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil, fmt.Errorf("%s: timeout", route)
		}
		return nil, nil, fmt.Errorf("%s: %w", route, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading the body: %w", route, err)
	}
	if !slices.Contains(ok, res.StatusCode) {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		return nil, nil, fmt.Errorf("%s: %d %s", route, res.StatusCode, e.Error.Code)
	}
	return raw, res.Header, nil
}

// bvRoute replaces ids in a path by placeholders.
func bvRoute(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, "ses_") || strings.HasPrefix(s, "leg_") {
			parts[i] = "{" + s[:3] + "}"
		}
	}
	return strings.Join(parts, "/")
}

// bvTap is the agent subscriber: one NATS connection subscribed to every
// conversation's in.audio.
type bvTap struct {
	nc     *nats.Conn
	win    *bvWindow
	closed chan struct{}
	once   sync.Once

	slowConsumer atomic.Uint64
	frames       atomic.Uint64 // every frame received

	mu       sync.Mutex
	sessions map[string]*bvSession // by conversation id
	latUS    []int32               // RTP arrival → here, frames captured in the window
	e2eUS    []int32               // client write → here, frames written in the window
	unknown  uint64
	bad      uint64
}

func bvTapNATS(natsURL, creds, prefix string, win *bvWindow) (*bvTap, error) {
	t := &bvTap{win: win, closed: make(chan struct{}), sessions: map[string]*bvSession{}}
	var auth []nats.Option
	if creds != "" {
		auth = append(auth, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(natsURL, append(auth, nats.Name("parley-bench-voice"),
		nats.ClosedHandler(func(*nats.Conn) { close(t.closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				t.slowConsumer.Add(1)
			}
		}))...)
	if err != nil {
		return nil, fmt.Errorf("bench: NATS %s: %w", natsURL, err)
	}
	t.nc = nc
	// Every agent's visitor audio: <prefix>.agents.<agent>.conv.<cid>.in.audio.
	sub, err := nc.Subscribe(agentbridge.NewSubjects(prefix).InAudio("*", "*"), t.onFrame)
	if err == nil {
		err = sub.SetPendingLimits(1<<20, 1<<30)
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		t.close()
		return nil, fmt.Errorf("bench: NATS subscribe: %w", err)
	}
	return t, nil
}

func (t *bvTap) register(s *bvSession) {
	t.mu.Lock()
	t.sessions[s.cid] = s
	t.mu.Unlock()
}

// onFrame records one published mic frame (the subscription's goroutine).
func (t *bvTap) onFrame(m *nats.Msg) {
	now := time.Now()
	t.frames.Add(1)
	f, err := agentbridge.ParseAudioFrame(m)
	var cid string
	if tok := strings.Split(m.Subject, "."); len(tok) >= 3 {
		cid = tok[len(tok)-3]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.bad++
		return
	}
	s := t.sessions[cid]
	if s == nil {
		t.unknown++
		return
	}
	if s.firstNATS.IsZero() {
		s.firstNATS = now
	}
	s.natsFrames++
	i := uint32(f.Timestamp) / bvFrameSamples // our frame index (timestamp = index × 960)
	// The payload names the frame of the loop, hence when it was written
	// (and, through LiveKit, which rewrites timestamps, its index).
	if k, ok := s.g.index[string(f.Payload)]; ok {
		if s.lk != nil {
			i = s.sentIdx[k].Load()
		}
		if at := time.Unix(0, s.sentAt[k].Load()); t.win.contains(at) {
			t.e2eUS = append(t.e2eUS, int32(min(now.Sub(at).Microseconds(), math.MaxInt32)))
		}
	} else if s.lk != nil {
		return // not a frame of ours (nothing else is sent)
	}
	if w := int(i / 64); w < 1<<20 {
		if w >= len(s.got) {
			s.got = append(s.got, make([]uint64, w+1-len(s.got)+64)...)
		}
		s.got[w] |= 1 << (i % 64)
	}
	inWin := t.win.contains(f.CapturedAt)
	if inWin && s.lastSeq != 0 && f.Seq > s.lastSeq+1 {
		s.seqGaps += f.Seq - s.lastSeq - 1
	}
	s.lastSeq = max(s.lastSeq, f.Seq)
	if inWin {
		t.latUS = append(t.latUS, int32(min(now.Sub(f.CapturedAt).Microseconds(), math.MaxInt32)))
	}
}

// settle waits, after the senders stopped, until no frame has come for
// bvSettle (at most bvSettleMax): under overload frames reach NATS
// seconds late, and they count.
func (t *bvTap) settle(ctx context.Context) {
	deadline := time.Now().Add(bvSettleMax)
	last, quiet := t.frames.Load(), 0
	for time.Now().Before(deadline) && quiet < int(bvSettle/(50*time.Millisecond)) {
		if bvSleepUntil(ctx, time.Now().Add(50*time.Millisecond)) != nil {
			return
		}
		if n := t.frames.Load(); n != last {
			last, quiet = n, 0
		} else {
			quiet++
		}
	}
}

// checkAudio fails connected sessions that have published nothing yet.
func (t *bvTap) checkAudio(sessions []*bvSession) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range sessions {
		if s.err == nil && s.firstNATS.IsZero() {
			s.err = errors.New("connected, but no audio on NATS before the window")
		}
	}
}

func (t *bvTap) close() {
	t.once.Do(func() {
		if t.nc == nil {
			return
		}
		if err := t.nc.Drain(); err != nil {
			t.nc.Close()
		}
		select {
		case <-t.closed:
		case <-time.After(10 * time.Second):
			t.nc.Close()
		}
	})
}

// bvPublished counts the frames of [i0, i1) found on NATS.
func bvPublished(got []uint64, i0, i1 uint32) uint64 {
	var n uint64
	for i := i0; i < i1; {
		w := int(i / 64)
		if w >= len(got) {
			break
		}
		word := got[w] >> (i % 64)
		take := min(64-i%64, i1-i)
		if take < 64 {
			word &= 1<<take - 1
		}
		n += uint64(bits.OnesCount64(word))
		i += take
	}
	return n
}

// voiceReport is the result of a run; every count is over the steady window
// and the sessions that connected.
type voiceReport struct {
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
	LatencyUS bvDist `json:"latency_us"`  // RTP arrival at the broker → agent subscriber
	E2EUS     bvDist `json:"e2e_us"`      // client writes a frame → agent subscriber
	EchoRTTMS bvDist `json:"echo_rtt_ms"` // client writes a frame → its echo is back at the client
	// The echo round trip's median in the window's first and last second:
	// a rise means frames pile up somewhere (e.g. the playout queue).
	EchoRTTFirstSecMS float64 `json:"echo_rtt_first_second_p50_ms"`
	EchoRTTLastSecMS  float64 `json:"echo_rtt_last_second_p50_ms"`
	ConnectMS         struct {
		OfferAnswer     bvDist `json:"offer_answer"`      // HTTP POST of the offer → answer
		OfferConnected  bvDist `json:"offer_connected"`   // → ICE+DTLS connected at the client
		OfferFirstFrame bvDist `json:"offer_first_frame"` // → first frame of the conversation on NATS
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
	LiveKit struct { // --transport livekit: the livekit-server
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

// bvDist summarises samples (nearest rank).
type bvDist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

func bvDistOf(xs []float64) bvDist {
	if len(xs) == 0 {
		return bvDist{}
	}
	slices.Sort(xs)
	at := func(q float64) float64 { return xs[min(int(math.Ceil(q*float64(len(xs))))-1, len(xs)-1)] }
	return bvDist{N: len(xs), P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999), Max: xs[len(xs)-1]}
}

// fill computes the frame counts, latencies and connect times. The senders
// have stopped; the tap and the echo readers are still running but count
// only inside the window, which is over.
func (r *voiceReport) fill(g *bvGen, tap *bvTap) {
	var answer, conn, first, rtt, rttFirst, rttLast []float64
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for _, s := range g.sessions {
		if s.err != nil {
			r.Failures[bvErrClass(s.err)]++
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
		pub := bvPublished(s.got, s.i0, s.i1)
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
	r.LatencyUS = bvDistOf(lat)
	e2e := make([]float64, len(tap.e2eUS))
	for i, v := range tap.e2eUS {
		e2e[i] = float64(v)
	}
	r.E2EUS = bvDistOf(e2e)
	r.EchoRTTMS = bvDistOf(rtt)
	r.EchoRTTFirstSecMS = bvDistOf(rttFirst).P50
	r.EchoRTTLastSecMS = bvDistOf(rttLast).P50
	r.ConnectMS.OfferAnswer = bvDistOf(answer)
	r.ConnectMS.OfferConnected = bvDistOf(conn)
	r.ConnectMS.OfferFirstFrame = bvDistOf(first)
	r.Generator.LateTicks = g.lateTicks.Load()
	r.Generator.SkippedTicks = g.skippedTicks.Load()
	r.Generator.MaxTickLateMS = ms(time.Duration(g.maxLate.Load()))
}

// bvErrClass is an error without what differs between sessions.
func bvErrClass(err error) string {
	return bvVarying.ReplaceAllString(err.Error(), "…")
}

// bvVarying matches ids and ports in error texts.
var bvVarying = regexp.MustCompile(`(ses|leg|conv)_[A-Za-z0-9_-]+|127\.0\.0\.1:\d+`)

func (r *voiceReport) fillCPU(c0, c1 bvCPU, server bool) {
	wall := c1.at.Sub(c0.at).Seconds()
	if wall <= 0 {
		return
	}
	if server {
		r.Server.CPUPct = 100 * (c1.server - c0.server).Seconds() / wall
	}
	r.Generator.CPUPct = 100 * (c1.self - c0.self).Seconds() / wall
	r.Agent.CPUPct = 100 * (c1.agent - c0.agent).Seconds() / wall
	if c1.sysTotal > c0.sysTotal {
		r.MachineCPUPct = 100 * float64(c1.sysBusy-c0.sysBusy) / float64(c1.sysTotal-c0.sysTotal)
	}
	r.Cores = c1.cores
	r.OtherCPUPct = max(0, r.MachineCPUPct*float64(r.Cores)-r.Server.CPUPct-r.Agent.CPUPct-r.Generator.CPUPct)
}

func (r *voiceReport) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	server := "a running server"
	if r.ChildServer {
		server = "a child `parley serve`"
	}
	fmt.Fprintf(tw, "parley bench voice\t%d sessions, ramp %.0f/s, %s window after %s warm-up, %s, client sockets: %s, transport: %s\n",
		r.Sessions, r.Ramp, bvSecs(r.WindowS), bvSecs(r.WarmupS), server, r.ClientSockets, cmp.Or(r.Transport, "direct"))
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
	if r.ServerPID > 0 {
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
	if r.OtherCPUPct > 10 && r.ServerPID > 0 {
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

func bvSecs(s float64) string { return (time.Duration(s * float64(time.Second))).String() }

func bvMiB(b uint64) float64 { return float64(b) / (1 << 20) }

// bvCPU is one sample of CPU time: the server's, the bench's own and the
// machine's.
type bvCPU struct {
	at                time.Time
	server, agent     time.Duration
	self              time.Duration
	sysBusy, sysTotal uint64
	cores             int
}

// bvClockTick is USER_HZ, 100 on every Linux architecture Go supports.
const bvClockTick = 10 * time.Millisecond

// bvProcCPU is the CPU time (user + system) pid has used.
func bvProcCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after "(comm)": state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) <= 12 {
		return 0
	}
	var ut, st uint64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * bvClockTick
}

func bvSampleCPU(server, agent int) bvCPU {
	c := bvCPU{at: time.Now(), server: bvProcCPU(server), agent: bvProcCPU(agent)}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 5 && f[0] == "cpu" {
				for i, v := range f[1:] {
					var n uint64
					fmt.Sscan(v, &n)
					if i < 8 { // guest time is already in user
						c.sysTotal += n
					}
					if i != 3 && i != 4 && i < 8 { // idle, iowait
						c.sysBusy += n
					}
				}
			}
			if len(f) > 0 && strings.HasPrefix(f[0], "cpu") && f[0] != "cpu" {
				c.cores++
			}
		}
	}
	return c
}

// bvRSS is the process's resident set in bytes (VmRSS).
func bvRSS(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb uint64
			fmt.Sscan(rest, &kb)
			return kb << 10
		}
	}
	return 0
}

func bvCountFDs(pid int) int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(es)
}

// bvUDPDrops returns the kernel's drop counter (receive buffer full) of each
// UDP socket of pid, by inode.
func bvUDPDrops(pid int) map[uint64]uint64 {
	if pid <= 0 {
		return nil
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	es, _ := os.ReadDir(dir)
	mine := make(map[uint64]bool, len(es))
	for _, e := range es {
		l, err := os.Readlink(dir + "/" + e.Name())
		var ino uint64
		if err == nil && strings.HasPrefix(l, "socket:[") {
			fmt.Sscan(strings.Trim(l[7:], "[]"), &ino)
			mine[ino] = true
		}
	}
	drops := map[uint64]uint64{}
	for _, file := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 13 {
				continue
			}
			var ino, d uint64
			fmt.Sscan(f[9], &ino)
			fmt.Sscan(f[12], &d)
			if mine[ino] {
				drops[ino] = d
			}
		}
	}
	return drops
}

// bvDropsSince is the drops of the sockets in now since before.
func bvDropsSince(before, now map[uint64]uint64) uint64 {
	var n uint64
	for ino, d := range now {
		n += d - min(before[ino], d)
	}
	return n
}
