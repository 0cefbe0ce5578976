package mediatest

import (
	"errors"
	"net/http"
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

// TestRun starts a real livekit-server, which answers HTTP on its URL, and
// stops it by its id.
func TestRun(t *testing.T) {
	s := Run(t, Options{})
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
