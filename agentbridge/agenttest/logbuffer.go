package agenttest

import (
	"bytes"
	"sync"
)

// LogBuffer collects what a logger writes, for a test to check; writes
// may come from any goroutine of the code under test. The zero value is
// ready to use: slog.New(slog.NewTextHandler(&buf, nil)).
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
