package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/parley-rtc/parley/cmd/internal/benchchat"
	"github.com/parley-rtc/parley/cmd/internal/benchvoice"
)

// benchCmd is `parley bench voice` and `parley bench chat`; the load
// generators are packages benchvoice and benchchat.
func benchCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "voice" && args[0] != "chat") {
		fmt.Fprint(stderr, "Usage: parley bench voice|chat [flags]\n\nRun \"parley bench voice -h\" or \"parley bench chat -h\" for the flags.\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if args[0] == "chat" {
		return benchchat.Command(ctx, args[1:], stdout, stderr)
	}
	return benchvoice.Command(ctx, args[1:], credsEnv, stdout, stderr)
}
