package main

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain skips the whole package under -short: every test here is end to
// end (whole apps with embedded NATS, Chromium, child processes,
// livekit-server, NATS clusters), and `go test -short ./...` (make
// test-short) is the quick loop that runs the packages' own tests only.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("cmd/parley: end-to-end tests (apps, Chromium, child processes, LiveKit, clusters) skipped under -short; run make test")
		os.Exit(0)
	}
	os.Exit(m.Run())
}
