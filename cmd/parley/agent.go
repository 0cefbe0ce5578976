package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

func agentCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "echo" {
		fmt.Fprintln(stderr, "Usage: parley agent echo [--nats-url URL] [--data-dir DIR | --nats-creds FILE] [--workers N] [--agent NAME] [--prefix PREFIX]")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help") {
			return 0
		}
		return 2
	}
	fs := flag.NewFlagSet("parley agent echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nf := addNATSFlags(fs)
	fs.StringVar(&nf.creds, "creds", nf.creds, "same as --nats-creds")
	workers := fs.Int("workers", 1, "number of workers in this process")
	agent := fs.String("agent", configs.DefaultAgent, "agent name to register as")
	prefix := fs.String("prefix", agentbridge.DefaultPrefix, "subject prefix")
	level := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args[1:]); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	nf.markSet(fs)
	log := newLogger(stderr, *level, "auto")
	creds, err := nf.credsFile(broker.AgentRole(*agent), *prefix)
	if err != nil {
		log.Error("credentials", "err", err)
		return 1
	}
	// Replies to the workers' requests must come back inside the agent's
	// namespace: its credentials allow no other inbox.
	opts := append([]nats.Option{nats.Name("parley-echo-agent"), nats.MaxReconnects(-1)},
		agentbridge.ConnectOptions(*prefix, *agent)...)
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(nf.url, opts...)
	if err != nil {
		log.Error("connect failed", "err", nf.connErr(err, creds))
		return 1
	}
	defer nc.Close()
	ws, err := startEchoWorkers(nc, *prefix, *agent, *workers, log)
	if err != nil {
		log.Error("start failed", "err", err)
		for _, w := range ws {
			w.Close()
		}
		return 1
	}
	fmt.Fprintf(stdout, "echo agent: %d worker(s) serving %q on %s\n", len(ws), *agent, nc.ConnectedUrlRedacted())
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
