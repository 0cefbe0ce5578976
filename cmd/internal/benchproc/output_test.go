package benchproc

import (
	"testing"
	"time"
)

// TestPace: a time ahead is waited for, a time past is not; a closed quit
// ends either with false.
func TestPace(t *testing.T) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	open, closed := make(chan struct{}), make(chan struct{})
	close(closed)
	start := time.Now()
	if !Pace(timer, start.Add(30*time.Millisecond), open) || time.Since(start) < 30*time.Millisecond {
		t.Errorf("a time ahead: back after %v, want true after 30 ms", time.Since(start))
	}
	start = time.Now()
	if !Pace(timer, start.Add(-time.Second), open) || time.Since(start) > time.Second {
		t.Errorf("a time past: back after %v, want true at once", time.Since(start))
	}
	if Pace(timer, time.Now().Add(time.Hour), closed) {
		t.Error("quit closed, a time ahead: true")
	}
	if Pace(timer, time.Now().Add(-time.Second), closed) {
		t.Error("quit closed, a time past: true")
	}
}
