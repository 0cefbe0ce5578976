package benchvoice

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// Command is `parley bench voice`: it parses args, runs (both transports
// with --transport both) and prints the report as a table or JSON on
// stdout, progress on stderr. It returns the exit code: 0, 1 when the run
// failed or a session did not connect, 2 for bad flags. credsEnv names the
// environment variable that gives --nats-creds its default, the one every
// operator tool of the binary reads. ctx ends the run (the binary cancels
// it on SIGINT and SIGTERM).
func Command(ctx context.Context, args []string, credsEnv string, stdout, stderr io.Writer) int {
	o := Options{}
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
	fs.StringVar(&o.ProfileDir, "server-profile", "", "write the child broker's heap profiles (every session connected; end of the window) and its CPU profile over the window to this directory (go tool pprof)")
	fs.Func("server-env", "KEY=VALUE for the child broker's environment, e.g. GOGC=50 or PARLEY_MEDIA_UDP_PORT=0 (repeatable)", func(kv string) error {
		o.ServerEnv = append(o.ServerEnv, kv)
		return nil
	})
	fs.StringVar(&o.Interfaces, "server-interfaces", "lo", "network interfaces the child broker gathers ICE candidates on (media.interfaces), comma-separated: the bench runs on loopback, so lo (two candidates, 127.0.0.1 and ::1, as a broker with one network interface has); empty: every interface")
	fs.IntVar(&o.NATSNodes, "nats-nodes", 0, "0: the child broker's embedded NATS; N: a NATS JetStream cluster of N node processes with --brokers brokers on it (sessions spread round robin)")
	fs.IntVar(&o.Brokers, "brokers", 1, "brokers on the --nats-nodes cluster")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of the table")
	fs.StringVar(&o.Transport, "transport", "direct", `voice transport: "direct" (Parley's WebRTC), "livekit" (through a child livekit-server --dev and Parley's bridge) or "both" (direct, then livekit, and their ratios)`)
	fs.StringVar(&o.LiveKitServer, "livekit-server", "", "livekit-server binary for --transport livekit (default $PARLEY_LIVEKIT_SERVER, else .cache/bin/livekit-server of the module, built by `make livekit`)")
	if code, ok := benchproc.ParseFlags(fs, args, func() error { return o.Validate() }, stderr); !ok {
		return code
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
	if o.Transport == "livekit" || o.Transport == "both" {
		quietLiveKitSDK()
	}
	if o.Transport == "both" {
		return runBoth(ctx, o, asJSON, stdout, stderr)
	}
	rep, err := Run(ctx, o, stderr)
	return benchproc.Finish(stdout, stderr, fs.Name(), rep, asJSON, err, func(rep *Report) string {
		if rep.Failed > 0 {
			return fmt.Sprintf("%d of %d sessions failed: %v", rep.Failed, rep.Sessions, rep.Failures)
		}
		return ""
	})
}

// runBoth is --transport both: the direct run, then the LiveKit
// run with the same options, each table, and the comparison.
func runBoth(ctx context.Context, o Options, asJSON bool, stdout, stderr io.Writer) int {
	var res comparison
	code := 0
	for _, tr := range []string{"direct", "livekit"} {
		o.Transport = tr
		fmt.Fprintf(stderr, "bench: == transport %s ==\n", tr)
		rep, err := Run(ctx, o, stderr)
		if rep != nil && !asJSON {
			rep.PrintTable(stdout)
			fmt.Fprintln(stdout)
		}
		switch {
		case err != nil:
			fmt.Fprintf(stderr, "parley bench voice: %s: %v\n", tr, err)
			code = 1
		case rep.Failed > 0:
			fmt.Fprintf(stderr, "parley bench voice: %s: %d of %d sessions failed: %v\n", tr, rep.Failed, rep.Sessions, rep.Failures)
			code = 1
		}
		if tr == "direct" {
			res.Direct = rep
		} else {
			res.LiveKit = rep
		}
		if ctx.Err() != nil {
			break
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else if res.Direct != nil && res.LiveKit != nil {
		PrintComparison(stdout, res.Direct, res.LiveKit)
	}
	return code
}
