package benchchat

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// Command is `parley bench chat`: it parses args, runs and prints the
// report as a table or JSON on stdout, progress on stderr. It returns the
// exit code: 0, 1 when the run failed or a conversation did not go live,
// 2 for bad flags. ctx ends the run (the binary cancels it on SIGINT and
// SIGTERM).
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := Options{}
	var asJSON bool
	fs := flag.NewFlagSet("parley bench chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.Conversations, "conversations", 1000, "live conversations, each a visitor with a session and a WebSocket")
	fs.Float64Var(&o.Rate, "rate", 1000, "messages per second, spread over the conversations")
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "length of the measured steady window")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "sending at --rate before the window")
	fs.IntVar(&o.Workers, "workers", 32, "concurrent clients creating sessions and opening WebSockets")
	fs.StringVar(&o.Agent, "agent", "process", `echo agent: "process" (a separate `+"`parley agent echo`"+`, so the broker's CPU and memory are its own) or "in-process" (serve's own)`)
	fs.StringVar(&o.Prefix, "nats-prefix", "parley", "NATS subject prefix of the server")
	fs.StringVar(&o.ProfileDir, "server-profile", "", "write the broker's heap profiles (all conversations live and idle; end of the window) and its CPU profile over the window to this directory (go tool pprof)")
	fs.IntVar(&o.NATSNodes, "nats-nodes", 0, "0: the broker's embedded NATS; N: a NATS JetStream cluster of N node processes (3 for replicas 3) with --brokers brokers on it")
	fs.IntVar(&o.Brokers, "brokers", 1, "brokers on the --nats-nodes cluster; visitors are spread round robin over them")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of the table")
	if code, ok := benchproc.ParseFlags(fs, args, func() error { return o.Validate() }, stderr); !ok {
		return code
	}
	rep, err := Run(ctx, o, stderr)
	return benchproc.Finish(stdout, stderr, fs.Name(), rep, asJSON, err, func(rep *Report) string {
		if rep.Live < rep.Conversations {
			return fmt.Sprintf("%d of %d conversations did not go live: %v", rep.Conversations-rep.Live, rep.Conversations, rep.Failures)
		}
		return ""
	})
}
