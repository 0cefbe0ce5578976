package benchproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/parley-rtc/parley/cmd/internal/livekitserver"
)

// Profiler fetches the child broker's Go profiles from its metrics
// listener (ops.metrics_listen with ops.pprof) into a directory. A nil
// Profiler does nothing.
type Profiler struct {
	dir  string
	addr string
	cpu  sync.WaitGroup // the CPU profile being taken
}

// NewProfiler makes dir and chooses the child's metrics address; pass Env
// to the child's environment.
func NewProfiler(dir string) (*Profiler, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: --server-profile: %w", err)
	}
	port, err := livekitserver.FreePort("tcp")
	if err != nil {
		return nil, fmt.Errorf("bench: free port: %w", err)
	}
	return &Profiler{dir: dir, addr: "127.0.0.1:" + strconv.Itoa(port)}, nil
}

// Env turns the child's profiles on.
func (p *Profiler) Env() []string {
	return []string{"PARLEY_OPS_METRICS_LISTEN=" + p.addr, "PARLEY_OPS_PPROF=true"}
}

// Heap writes a heap profile (after a GC) to name.
func (p *Profiler) Heap(ctx context.Context, name string, log io.Writer) {
	if p != nil {
		p.fetch(ctx, "/debug/pprof/heap?gc=1", name, log)
	}
}

// State writes, as text, the child's goroutines grouped by stack
// (name-goroutines.txt) and its heap with the runtime's memory statistics
// at the end (name-memstats.txt: stacks in use, heap in use and idle).
func (p *Profiler) State(ctx context.Context, name string, log io.Writer) {
	if p != nil {
		p.fetch(ctx, "/debug/pprof/goroutine?debug=1", name+"-goroutines.txt", log)
		p.fetch(ctx, "/debug/pprof/heap?debug=1", name+"-memstats.txt", log)
	}
}

// StartCPU starts a CPU profile of d, written to name; WaitCPU waits for
// it.
func (p *Profiler) StartCPU(ctx context.Context, d time.Duration, name string, log io.Writer) {
	if p == nil {
		return
	}
	p.cpu.Go(func() {
		p.fetch(ctx, "/debug/pprof/profile?seconds="+strconv.Itoa(max(1, int(d.Seconds()))), name, log)
	})
}

func (p *Profiler) WaitCPU() {
	if p != nil {
		p.cpu.Wait()
	}
}

func (p *Profiler) fetch(ctx context.Context, path, name string, log io.Writer) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+path, nil)
	if err != nil {
		return
	}
	res, err := http.DefaultClient.Do(req)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, res.Status)
	}
	if err != nil {
		fmt.Fprintf(log, "bench: profile %s: %v\n", name, err)
		return
	}
	defer res.Body.Close()
	out := filepath.Join(p.dir, name)
	f, err := os.Create(out)
	if err == nil {
		_, err = io.Copy(f, res.Body)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		fmt.Fprintf(log, "bench: profile %s: %v\n", name, err)
		return
	}
	fmt.Fprintf(log, "bench: wrote %s\n", out)
}
