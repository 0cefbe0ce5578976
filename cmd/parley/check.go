package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// checkCmd: parley check --data-dir DIR checks a stopped Parley's embedded
// store. Exit 0: nothing lost; 1: data lost or inconsistent; 2: could not
// check.
func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "data directory of a stopped parley serve (required)")
	prefix := fs.String("prefix", configs.Default().NATS.Prefix, "subject prefix (nats.prefix)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	accept := fs.Bool("accept-loss", false, "record the store's present state as good: losses found earlier stop being reported")
	if code, done := parseExit(fs.Parse(args)); done {
		return code
	}
	if *dataDir == "" {
		fmt.Fprintln(stderr, "parley check: --data-dir is required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep, err := broker.CheckDataDir(ctx, *dataDir, *prefix, *accept, log)
	if err != nil {
		fmt.Fprintf(stderr, "parley check: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printCheck(stdout, rep)
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

func printCheck(w io.Writer, rep broker.CheckReport) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tMESSAGES\tBYTES\tFIRST SEQ\tLAST SEQ\tDELETED\tLOST MSGS\tLOST BYTES")
	for _, s := range rep.Streams {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", s.Name, s.Msgs, s.Bytes, s.FirstSeq, s.LastSeq, s.Deleted, s.LostMsgs, s.LostBytes)
	}
	_ = tw.Flush()
	for _, s := range rep.Streams {
		for _, p := range s.Problems {
			fmt.Fprintf(w, "PROBLEM %s: %s\n", s.Name, p)
		}
	}
	if !rep.MarksFound {
		fmt.Fprintln(w, "note: no marks from a previous parley serve; losses are found by checksums and nats-server alone")
	}
	if rep.Failed() {
		fmt.Fprintln(w, "RESULT: data lost or inconsistent (see PROBLEM lines); restore from a backup, or run with --accept-loss to continue with what is left")
	} else {
		fmt.Fprintln(w, "RESULT: ok")
	}
}
