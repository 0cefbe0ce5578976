package mediatest

import (
	"errors"
	"os"
	"testing"
	"time"
)

// Run starts a livekit-server for t (see Start), in t.TempDir(), and stops
// it when the test ends, logging its log's tail if the test failed.
// Without the binary it skips the test loudly, or fails it under
// PARLEY_REQUIRE_LIVEKIT=1.
func Run(t testing.TB, opts Options) *Server {
	t.Helper()
	opts.Binary = Binary(t, opts.Binary)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Log(err)
		}
		if t.Failed() {
			t.Logf("livekit-server log (tail):\n%s", s.LogTail(60))
		}
	})
	t.Logf("livekit-server up on %s (udp %d, tcp %d) in %s", s.URL, s.UDPPort, s.TCPPort, s.Started.Round(time.Millisecond))
	return s
}

// Binary is FindServer(path) for a test: without the binary it skips the
// test loudly, or fails it under PARLEY_REQUIRE_LIVEKIT=1.
func Binary(t testing.TB, path string) string {
	t.Helper()
	path, err := FindServer(path)
	if err == nil {
		return path
	}
	if !errors.Is(err, ErrNoServer) {
		t.Fatal(err)
	}
	msg := "\n################################################################\n" +
		"## " + err.Error() + "\n" +
		"################################################################"
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s\n## %s=1: the LiveKit tests must run.", msg, EnvRequire)
	}
	t.Skipf("%s\n## SKIPPING the LiveKit test %s.", msg, t.Name())
	return ""
}
