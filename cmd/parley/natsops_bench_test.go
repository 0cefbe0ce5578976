package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// postRaw posts one chat message (wait=false: answered once stored) and
// returns the status, without failing the test from a goroutine.
func postRaw(c *http.Client, e *env, s session, body, cid string) (int, error) {
	data := fmt.Appendf(nil, `{"body":%q,"client_message_id":%q}`, body, cid)
	req, err := http.NewRequest("POST", e.base+"/v1/sessions/"+s.ID+"/messages", bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// BenchmarkChatSync measures what nats.sync costs: chat messages posted
// over HTTP (answered once JetStream stored them, then echoed by the
// in-process agent, whose three chunks and done are stored too), closed
// loop: each of conns clients posts its next message when the previous one
// is acknowledged, for 5 s. Reports acknowledged msgs/s and post → ack
// latency, with the default sync every 2 minutes and with sync always.
func BenchmarkChatSync(b *testing.B) {
	for _, sync := range []string{configs.SyncInterval, configs.SyncAlways} {
		for _, conns := range []int{1, 16} {
			b.Run(fmt.Sprintf("sync=%s/conns=%d", sync, conns), func(b *testing.B) {
				chatClosedLoop(b, conns, func(c *configs.Config) { c.NATS.Sync = sync; c.EchoAgent.Workers = 2 })
			})
		}
	}
}

func chatClosedLoop(b *testing.B, conns int, opt func(*configs.Config)) {
	const duration = 5 * time.Second
	for b.Loop() {
		e := startEnv(b, opt)
		sessions := make([]session, conns)
		for i := range sessions {
			sessions[i] = e.NewSession(nil)
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}}
		var (
			mu   sync.Mutex
			lats []time.Duration
			errs int
			wg   sync.WaitGroup
		)
		stop := time.Now().Add(duration)
		start := time.Now()
		for i, s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for n := 0; time.Now().Before(stop); n++ {
					t0 := time.Now()
					st, err := postRaw(client, e, s, "sync benchmark", fmt.Sprintf("c%d-%d", i, n))
					if err != nil || st != http.StatusAccepted && st != http.StatusOK {
						mu.Lock()
						errs++
						mu.Unlock()
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lats = append(lats, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		if errs > 0 {
			b.Errorf("%d posts failed", errs)
		}
		b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "msgs/s")
		percentiles(b, lats, "ack-")
	}
}

// BenchmarkDedupMemory posts 200 chat messages/s (20 conversations at
// 10/s each, echoed by the in-process agent: five Nats-Msg-Ids per turn)
// for PARLEY_BENCH_MEMORY (e.g. 4m; skipped when unset) and samples the
// process's Go heap after a GC every 10 s (the embedded nats-server runs in
// the same process, so its duplicate-window maps are in this heap), with the
// old 20-minute duplicate window and the new default of 2 minutes.
func BenchmarkDedupMemory(b *testing.B) {
	d, err := time.ParseDuration(os.Getenv("PARLEY_BENCH_MEMORY"))
	if err != nil {
		b.Skip("set PARLEY_BENCH_MEMORY to a duration such as 4m to run")
	}
	for _, w := range []time.Duration{20 * time.Minute, 2 * time.Minute} {
		b.Run("dedup_window="+w.String(), func(b *testing.B) {
			for b.Loop() {
				dedupMemoryRun(b, d, w)
			}
		})
	}
}

func dedupMemoryRun(b *testing.B, d, window time.Duration) {
	const (
		convs   = 20
		perConv = 10 // msgs/s
		sample  = 10 * time.Second
	)
	e := startEnv(b, func(c *configs.Config) { c.NATS.DedupWindow = window; c.EchoAgent.Workers = 2 })
	sessions := make([]session, convs)
	for i := range sessions {
		sessions[i] = e.NewSession(nil)
	}
	heap := func() float64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc) / (1 << 20)
	}
	base := heap()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: convs}}
	var (
		mu         sync.Mutex
		sent, errs int
		wg         sync.WaitGroup
	)
	done := make(chan struct{})
	start := time.Now()
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			onTicks(time.Second/perConv, done, func(n int) {
				st, err := postRaw(client, e, s, "memory benchmark", fmt.Sprintf("m%d-%d", i, n))
				mu.Lock()
				if err != nil || st != http.StatusAccepted {
					errs++
				} else {
					sent++
				}
				mu.Unlock()
			})
		}()
	}
	type point struct {
		at   time.Duration
		heap float64
	}
	var points []point
	tick := time.NewTicker(sample)
	for time.Since(start) < d {
		<-tick.C
		p := point{time.Since(start).Round(time.Second), heap()}
		points = append(points, p)
		if dir := os.Getenv("PARLEY_BENCH_HEAPPROFILE"); dir != "" && (len(points) == 12 || time.Since(start) >= d) {
			writeHeapProfile(b, fmt.Sprintf("%s/heap-%s-%s.pprof", dir, window, p.at))
		}
		b.Logf("window %s: t=%s heap %.1f MiB (start %.1f)", window, p.at, p.heap, base)
	}
	tick.Stop()
	close(done)
	wg.Wait()
	elapsed := time.Since(start)
	if errs > 0 {
		b.Errorf("%d posts failed", errs)
	}
	last := points[len(points)-1]
	// Least-squares slope of the heap from minute 2 on: a window of two
	// minutes is full by then, so only a longer window still grows.
	var n, sx, sy, sxx, sxy float64
	for _, p := range points {
		if p.at < 2*time.Minute {
			continue
		}
		x := p.at.Minutes()
		n, sx, sy, sxx, sxy = n+1, sx+x, sy+p.heap, sxx+x*x, sxy+x*p.heap
	}
	slope := 0.0
	if n >= 2 {
		slope = (n*sxy - sx*sy) / (n*sxx - sx*sx)
	}
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(last.heap, "heap-end-MiB")
	b.ReportMetric(last.heap-base, "heap-growth-MiB")
	b.ReportMetric(slope, "heap-MiB/min-after-2m")
}

// writeHeapProfile writes the heap profile to path (PARLEY_BENCH_HEAPPROFILE
// asks for one at 2 minutes and at the end of a memory run).
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDedupBytesPerID measures what one Nats-Msg-Id costs while it is
// inside the duplicate window: 100 000 messages published to a file-store
// stream with a 20-minute window, with a unique id each, against the same
// without ids; the Go heap after a GC, difference over the count. Multiply
// by ids per second and the window for the steady state.
func BenchmarkDedupBytesPerID(b *testing.B) {
	const n = 100_000
	heapAfter := func(withIDs bool) float64 {
		s := agenttest.RunNATS(b, nil)
		defer s.Shutdown() // now, not when the benchmark ends: the next server's heap is measured alone
		nc, err := nats.Connect("", nats.InProcessServer(s))
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx := context.Background()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "D", Subjects: []string{"d.>"},
			Duplicates: 20 * time.Minute}); err != nil {
			b.Fatal(err)
		}
		heap := func() float64 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return float64(ms.HeapAlloc)
		}
		before := heap()
		for i := range n {
			var opts []jetstream.PublishOpt
			if withIDs {
				// Shaped like Parley's: "<conversation id>/<client message id>".
				opts = append(opts, jetstream.WithMsgID(fmt.Sprintf("conv_%020d/msg_%020d", i/10, i)))
			}
			if _, err := js.PublishAsync(fmt.Sprintf("d.%d", i%20), []byte("dedup benchmark payload"), opts...); err != nil {
				b.Fatal(err)
			}
			if i%1000 == 999 {
				<-js.PublishAsyncComplete()
			}
		}
		<-js.PublishAsyncComplete()
		return heap() - before
	}
	for b.Loop() {
		with, without := heapAfter(true), heapAfter(false)
		b.ReportMetric((with-without)/n, "bytes/id")
		b.ReportMetric(with/(1<<20), "heap-with-ids-MiB")
		b.ReportMetric(without/(1<<20), "heap-without-ids-MiB")
	}
}
