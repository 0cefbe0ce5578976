package speech

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind (an
// HTTP connection not closed, a child process not waited for).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// requireLocal returns the offline engines, or skips the test when they are
// not installed (make speech-tools); with PARLEY_REQUIRE_SPEECH=1 (CI) a
// missing engine fails the test instead.
func requireLocal(t testing.TB) (*Pocketsphinx, *Flite) {
	t.Helper()
	ps, err := NewPocketsphinx(PocketsphinxConfig{TempDir: t.TempDir()})
	if err == nil {
		var f *Flite
		if f, err = NewFlite(LocalTTSConfig{TempDir: t.TempDir()}); err == nil {
			return ps, f
		}
	}
	if os.Getenv("PARLEY_REQUIRE_SPEECH") == "1" {
		t.Fatalf("speech engines missing (PARLEY_REQUIRE_SPEECH=1): %v", err)
	}
	t.Skipf("SKIPPING: speech engines missing (run make speech-tools): %v", err)
	return nil, nil
}
