package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// agentUsage heads parley agent -h.
const agentUsage = `Usage:
  parley agent echo      [--nats-url URL] [--data-dir DIR | --nats-creds FILE] [--workers N] [--agent NAME] [--prefix PREFIX]
  parley agent assistant --base-url URL [--model M] [--api-key-file FILE] [--system TEXT] [--max-history N] [--timeout D] [NATS flags as for echo]

echo answers "echo: <text>" and plays the visitor's voice back; assistant streams replies from
an OpenAI-compatible chat-completions endpoint (parley agent assistant -h).
`

func agentCmd(args []string, stdout, stderr io.Writer) int {
	sub := ""
	if len(args) > 0 {
		sub = args[0]
	}
	switch sub {
	case "echo":
		return echoCmd(args[1:], stdout, stderr)
	case "assistant":
		return assistantCmd(args[1:], stdout, stderr)
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stderr, agentUsage)
		return 0
	}
	fmt.Fprint(stderr, agentUsage)
	return 2
}

// echoCmd runs `parley agent echo`.
func echoCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley agent echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := addAgentFlags(fs)
	if code, done := af.parse(fs, args); done {
		return code
	}
	return af.serve("echo agent", echoAgent, stdout, af.logger(stderr))
}

// agentFlags are what every `parley agent` subcommand shares: how to reach
// and authenticate to NATS, how many workers to run, under which agent
// name and subject prefix, and the log level.
type agentFlags struct {
	nf      *natsFlags
	workers *int
	agent   *string
	prefix  *string
	level   *string
}

// addAgentFlags registers the shared flags on fs.
func addAgentFlags(fs *flag.FlagSet) *agentFlags {
	nf := addNATSFlags(fs)
	fs.StringVar(&nf.creds, "creds", nf.creds, "same as --nats-creds")
	return &agentFlags{
		nf:      nf,
		workers: fs.Int("workers", 1, "number of workers in this process"),
		agent:   fs.String("agent", configs.DefaultAgent, "agent name to register as"),
		prefix:  fs.String("prefix", agentbridge.DefaultPrefix, "subject prefix"),
		level:   fs.String("log-level", "info", "log level"),
	}
}

// parse parses args into fs; done says the command ends here with code
// (help, or a mistake already reported on fs's output).
func (f *agentFlags) parse(fs *flag.FlagSet, args []string) (code int, done bool) {
	if code, done := parseExit(fs.Parse(args)); done {
		return code, true
	}
	f.nf.markSet(fs)
	return 0, false
}

// logger is the subcommand's logger at --log-level.
func (f *agentFlags) logger(w io.Writer) *slog.Logger { return newLogger(w, *f.level, "auto") }

// serve connects to NATS as the agent, runs the workers with h until
// SIGINT or SIGTERM, then drains them. name heads the start-up line
// ("echo agent: 1 worker(s) serving …").
func (f *agentFlags) serve(name string, h agentbridge.Handler, stdout io.Writer, log *slog.Logger) int {
	creds, err := f.nf.credsFile(broker.AgentRole(*f.agent), *f.prefix)
	if err != nil {
		log.Error("credentials", "err", err)
		return 1
	}
	// Replies to the workers' requests must come back inside the agent's
	// namespace: its credentials allow no other inbox.
	opts := append([]nats.Option{nats.Name("parley-" + strings.ReplaceAll(name, " ", "-")), nats.MaxReconnects(-1)},
		agentbridge.ConnectOptions(*f.prefix, *f.agent)...)
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(f.nf.url, opts...)
	if err != nil {
		log.Error("connect failed", "err", f.nf.connErr(err, creds))
		return 1
	}
	defer nc.Close()
	ws, err := startWorkers(nc, *f.prefix, *f.agent, *f.workers, log, h)
	if err != nil {
		log.Error("start failed", "err", fmt.Errorf("%s: %w", name, err))
		for _, w := range ws {
			w.Close()
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d worker(s) serving %q on %s\n", name, len(ws), *f.agent, nc.ConnectedUrlRedacted())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	stop()
	dctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	for _, w := range ws {
		_ = w.Drain(dctx)
	}
	return 0
}

// startWorkers starts n workers of agent on nc, each running h. On an
// error it returns the workers started so far, for the caller to close.
func startWorkers(nc *nats.Conn, prefix, agent string, n int, log *slog.Logger, h agentbridge.Handler) ([]*agentbridge.Worker, error) {
	workers := make([]*agentbridge.Worker, 0, n)
	for range n {
		w, err := agentbridge.NewWorker(nc, agentbridge.Options{Agent: agent, Prefix: prefix, Logger: log}, h)
		if err == nil {
			err = w.Start()
		}
		if err != nil {
			return workers, err
		}
		workers = append(workers, w)
	}
	return workers, nil
}
