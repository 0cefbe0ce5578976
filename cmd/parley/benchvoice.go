package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/parley-rtc/parley/cmd/internal/benchvoice"
)

// benchCmd is `parley bench voice`; the load generator is package
// benchvoice.
func benchCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "voice" {
		fmt.Fprint(stderr, "Usage: parley bench voice [flags]\n\nRun \"parley bench voice -h\" for the flags.\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return benchvoice.Command(ctx, args[1:], credsEnv, stdout, stderr)
}
