package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// runBench runs one of `parley bench`'s load generators in-process (run,
// given 2 min in all and a buffer for its progress log, shown if it
// fails), logs its table and returns the report and the table.
func runBench[R interface{ PrintTable(io.Writer) }](t *testing.T, run func(ctx context.Context, log io.Writer) (R, error)) (R, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log bytes.Buffer
	rep, err := run(ctx, &log)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, log.String())
	}
	var table bytes.Buffer
	rep.PrintTable(&table)
	t.Logf("\n%s", table.String())
	return rep, table.String()
}

// TestBenchFlags: `parley bench` wants a target, and `parley bench chat`
// and `parley bench voice` reach their packages' flags (their cases are in
// those packages): a bad flag is refused before anything starts, -h prints
// them.
func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		help []string // what -h must print
	}{
		{args: []string{"bench"}, code: 2},
		{args: []string{"bench", "chat", "--conversations", "0"}, code: 2},
		{args: []string{"bench", "chat", "-h"}, code: 0, help: []string{"-conversations"}},
		{args: []string{"bench", "voice", "--sessions", "0"}, code: 2},
		{args: []string{"bench", "voice", "-h"}, code: 0, help: []string{"-nats-creds", credsEnv, "-server-profile", "-server-env"}},
		{args: []string{"bench", "voice", "--server-env", "GOGC"}, code: 2},
		{args: []string{"bench", "voice", "--url", "http://127.0.0.1:1", "--nats-url", "nats://127.0.0.1:1", "--server-profile", "/tmp/p"}, code: 2},
		{args: []string{"bench", "chat", "--brokers", "3"}, code: 2},
		{args: []string{"bench", "chat", "-h"}, code: 0, help: []string{"-nats-nodes", "-brokers"}},
		{args: []string{"bench", "nats-node", "--name", "n1"}, code: 1},
		{args: []string{"bench", "voice", "--brokers", "2"}, code: 2},
		{args: []string{"bench", "voice", "--nats-nodes", "3", "--brokers", "3"}, code: 2}, // the agent must be a process
		{args: []string{"bench", "voice", "-h"}, code: 0, help: []string{"-nats-nodes", "-brokers", "-server-interfaces"}},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errb.String())
		}
		for _, h := range tc.help {
			if !strings.Contains(errb.String(), h) {
				t.Errorf("%v: no %s in\n%s", tc.args, h, errb.String())
			}
		}
	}
}
