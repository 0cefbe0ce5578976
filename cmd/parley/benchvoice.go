package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/parley-rtc/parley/cmd/internal/benchchat"
	"github.com/parley-rtc/parley/cmd/internal/benchvoice"
	"github.com/parley-rtc/parley/cmd/internal/natscluster"
)

// benchCmd is `parley bench voice` and `parley bench chat`; the load
// generators are packages benchvoice and benchchat. `parley bench
// nats-node` is one node of the NATS cluster their --brokers mode starts
// (package natscluster), not for people to run.
func benchCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "voice" && args[0] != "chat" && args[0] != "nats-node") {
		fmt.Fprint(stderr, "Usage: parley bench voice|chat [flags]\n\nRun \"parley bench voice -h\" or \"parley bench chat -h\" for the flags.\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "chat":
		return benchchat.Command(ctx, args[1:], stdout, stderr)
	case "nats-node":
		n, err := natscluster.ParseArgs(args[1:])
		if err == nil {
			err = natscluster.Serve(ctx, n)
		}
		if err != nil {
			fmt.Fprintf(stderr, "parley bench nats-node: %v\n", err)
			return 1
		}
		return 0
	}
	return benchvoice.Command(ctx, args[1:], credsEnv, stdout, stderr)
}
