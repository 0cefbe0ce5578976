package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// TestKeysHelpWithoutNATS: parley keys -h (and its variants) prints the
// usage and exits 0 without connecting to NATS; the default
// nats://127.0.0.1:4222 has no server in tests, so a connection attempt
// would end in a failure after the 30 s start timeout instead.
func TestKeysHelpWithoutNATS(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"create", "-h"}, {"list", "--help"}} {
		var out, errb bytes.Buffer
		if code := keysCmd(args, &out, &errb); code != 0 {
			t.Fatalf("parley keys %v: exit %d: %s", args, code, errb.String())
		}
		for _, want := range []string{"parley keys create --kind admin", "parley keys revoke KEY_ID", "-nats-url"} {
			if !strings.Contains(errb.String(), want) {
				t.Errorf("parley keys %v: usage lacks %q:\n%s", args, want, errb.String())
			}
		}
	}
	// parley agent echo -h likewise.
	for _, args := range [][]string{{"-h"}, {"echo", "-h"}} {
		var out, errb bytes.Buffer
		if code := agentCmd(args, &out, &errb); code != 0 || !strings.Contains(errb.String(), "parley agent echo") {
			t.Errorf("parley agent %v: exit %d: %s", args, code, errb.String())
		}
	}
	// Mistakes in the command line are refused before connecting too.
	for _, args := range [][]string{nil, {"bogus"}, {"revoke"}, {"create", "--kind", "root"}} {
		var out, errb bytes.Buffer
		if code := keysCmd(args, &out, &errb); code != 2 {
			t.Errorf("parley keys %v: exit %d, want 2: %s", args, code, errb.String())
		}
	}
}

// TestCLIConnectErrorNamesURL: when keys, rooms or agent echo cannot
// connect (here: refused credentials), the error names the NATS URL they
// tried, with the password in it redacted.
func TestCLIConnectErrorNamesURL(t *testing.T) {
	t.Setenv("PARLEY_DATA_DIR", t.TempDir()) // no credentials found there
	const password = "wrong-password-5b1f"
	srv := natsServerWith(t, func(o *server.Options) { o.Username, o.Password = "parley", "right-password" })
	host := strings.TrimPrefix(srv, "nats://")
	for tool, msg := range cliFailures(t, "nats://parley:"+password+"@"+host, "keys", "rooms", "agent") {
		if !strings.Contains(msg, "NATS at nats://[redacted]@"+host) || !strings.Contains(strings.ToLower(msg), "authorization") {
			t.Errorf("%s: the error does not name the URL tried:\n%s", tool, msg)
		}
		if strings.Contains(msg, password) {
			t.Errorf("%s: the password appears in the error:\n%s", tool, msg)
		}
	}
}

// TestCLINoServerFailsAtOnce: keys and rooms pointed at an address where
// no NATS listens fail on the first refusal, naming the URL, instead of
// retrying (and logging each retry) for the broker's start-up timeout.
func TestCLINoServerFailsAtOnce(t *testing.T) {
	t.Setenv("PARLEY_DATA_DIR", t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	for tool, msg := range cliFailures(t, url, "keys", "rooms") {
		if !strings.Contains(msg, "NATS at "+url) || !strings.Contains(msg, "no servers available") {
			t.Errorf("%s: the error does not name the URL tried and why:\n%s", tool, msg)
		}
		if strings.Contains(msg, "retrying start-up") {
			t.Errorf("%s: a one-shot tool retried the connection:\n%s", tool, msg)
		}
	}
}

// cliFailures runs each of the tools (keys list, rooms, agent echo) with
// --nats-url url, requires exit status 1 of each, and returns what each
// wrote to stderr.
func cliFailures(t *testing.T, url string, tools ...string) map[string]string {
	t.Helper()
	cmds := map[string]func(stdout, stderr *bytes.Buffer) int{
		"keys":  func(o, e *bytes.Buffer) int { return keysCmd([]string{"list", "--nats-url", url}, o, e) },
		"rooms": func(o, e *bytes.Buffer) int { return roomsCmd([]string{"--nats-url", url}, o, e) },
		"agent": func(o, e *bytes.Buffer) int { return agentCmd([]string{"echo", "--nats-url", url}, o, e) },
	}
	msgs := make(map[string]string, len(tools))
	for _, tool := range tools {
		var out, errb bytes.Buffer
		if code := cmds[tool](&out, &errb); code != 1 {
			t.Fatalf("%s: exit %d, want 1: %s", tool, code, errb.String())
		}
		msgs[tool] = errb.String()
	}
	return msgs
}
