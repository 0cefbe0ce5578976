package benchvoice

import (
	"bytes"
	"context"
	"os"
	"testing"
)

// testCredsEnv stands for the binary's credentials variable; the tests
// clear it, so that --nats-creds has no default.
const testCredsEnv = "PARLEY_NATS_CREDENTIALS_FILE"

// TestCommandFlags: bad flags are refused (exit 2) before anything starts.
func TestCommandFlags(t *testing.T) {
	t.Setenv(testCredsEnv, "")
	for _, args := range [][]string{
		{"--sessions", "0"},
		{"--url", "http://127.0.0.1:1"},
		{"--client-sockets", "tcp"},
		{"--duration", "10ms"},
		{"--transport", "sip"},
		{"--transport", "livekit", "--url", "http://127.0.0.1:1", "--nats-url", "nats://127.0.0.1:1"},
		{"--agent", "remote"},
		{"--agent", "process", "--url", "http://127.0.0.1:1", "--nats-url", "nats://127.0.0.1:1"},
		{"--senders", "0"},
		{"--ramp", "0"},
		{"--warmup", "-1s"},
		{"--no-such-flag"},
	} {
		var out, errb bytes.Buffer
		if code := Command(context.Background(), args, testCredsEnv, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
		if out.Len() != 0 {
			t.Errorf("%v: stdout %q, want nothing", args, out.String())
		}
	}
}

// TestCommandUsage: -h prints every flag with its help exactly as before
// the command moved into this package (testdata/usage.golden).
func TestCommandUsage(t *testing.T) {
	t.Setenv(testCredsEnv, "")
	var out, errb bytes.Buffer
	if code := Command(context.Background(), []string{"-h"}, testCredsEnv, &out, &errb); code != 0 {
		t.Fatalf("-h: exit %d, want 0", code)
	}
	want, err := os.ReadFile("testdata/usage.golden")
	if err != nil {
		t.Fatal(err)
	}
	if errb.String() != string(want) {
		t.Errorf("-h differs from testdata/usage.golden:\n%s", lineDiff(string(want), errb.String()))
	}
}
