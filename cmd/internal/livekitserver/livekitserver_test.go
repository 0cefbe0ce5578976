package livekitserver

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFindServerMissing: a binary that is not there is ErrNoServer, and
// the error says how to get one.
func TestFindServerMissing(t *testing.T) {
	_, err := FindServer(filepath.Join(t.TempDir(), "livekit-server"))
	if !errors.Is(err, ErrNoServer) {
		t.Fatalf("FindServer = %v, want ErrNoServer", err)
	}
}

// TestStart starts a real livekit-server, which answers HTTP on its URL,
// and stops it by its id. Without the binary it skips, or fails under
// PARLEY_REQUIRE_LIVEKIT=1.
func TestStart(t *testing.T) {
	if _, err := FindServer(""); errors.Is(err, ErrNoServer) {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%v\n%s=1: the LiveKit tests must run.", err, EnvRequire)
		}
		t.Skipf("SKIPPING: %v", err)
	}
	s, err := Start(t.Context(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Stop() // idempotent; the test checks the error of its own Stop
		if t.Failed() {
			t.Logf("livekit-server log (tail):\n%s", s.LogTail(60))
		}
	})
	client := &http.Client{}
	res, err := client.Get(s.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	client.CloseIdleConnections() // an idle connection holds its shutdown back
	if res.StatusCode != http.StatusOK || s.APIKey != DevKey || s.APISecret != DevSecret || s.Started <= 0 {
		t.Fatalf("status %d, key %q, secret %q, started in %s", res.StatusCode, s.APIKey, s.APISecret, s.Started)
	}
	stopping := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("stopped in %s", time.Since(stopping).Round(time.Millisecond))
	select {
	case <-s.Exited():
	default:
		t.Fatal("Stop returned before the process exited")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
