package benchchat

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// runner is one run's shared state.
type runner struct {
	o       Options
	bases   []string // brokers' HTTP base URLs (visitor.base)
	client  *http.Client
	stats   stats
	readers sync.WaitGroup // one reader per open WebSocket
}

// stats counts what the visitors saw; the window's figures only for
// messages sent inside it.
type stats struct {
	mu                            sync.Mutex
	acks, firsts                  []time.Duration
	sent, acked, answeredN, lostN int
	errors                        map[string]int
}

func (s *stats) ack(d time.Duration, inWindow bool) {
	if inWindow {
		s.mu.Lock()
		s.acked++
		s.acks = append(s.acks, d)
		s.mu.Unlock()
	}
}

func (s *stats) firstChunk(d time.Duration, inWindow bool) {
	if inWindow {
		s.mu.Lock()
		s.firsts = append(s.firsts, d)
		s.mu.Unlock()
	}
}

func (s *stats) answered(inWindow bool) {
	if inWindow {
		s.mu.Lock()
		s.answeredN++
		s.mu.Unlock()
	}
}

func (s *stats) lost(inWindow bool) {
	if inWindow {
		s.mu.Lock()
		s.lostN++
		s.mu.Unlock()
	}
}

func (s *stats) errorFrame(code string, inWindow bool) {
	s.mu.Lock()
	if s.errors == nil {
		s.errors = map[string]int{}
	}
	s.errors[code]++
	s.mu.Unlock()
}

// Run runs one load test and reports it. Progress goes to log. The report
// is returned (possibly partial) together with any error.
func Run(ctx context.Context, o Options, log io.Writer) (*Report, error) {
	var err error
	workers := agentWorkers(o.Conversations)
	// The messages of every visitor come from 127.0.0.1; each conversation
	// must get a worker (one widget alone may use the agent's capacity).
	env := []string{"PARLEY_LIMITS_MESSAGES_PER_IP=0", "PARLEY_LIMITS_MESSAGES_PER_WIDGET=0",
		"PARLEY_ECHO_AGENT_WORKERS=" + strconv.Itoa(workers)}
	var prof *benchproc.Profiler
	if o.ProfileDir != "" {
		if prof, err = benchproc.NewProfiler(o.ProfileDir); err != nil {
			return nil, err
		}
		env = append(env, prof.Env()...)
	}
	t, err := startTarget(ctx, o, env, workers, log)
	if err != nil {
		return nil, err
	}
	defer t.stop(log)
	r := &runner{o: o, bases: t.bases, client: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: o.Workers, MaxConnsPerHost: 0}}}
	defer r.client.CloseIdleConnections()
	rep := &Report{Conversations: o.Conversations, RatePerS: o.Rate, WindowS: o.Duration.Seconds(), WarmupS: o.Warmup.Seconds(),
		Workers: o.Workers, AgentWorkers: workers, AgentMode: o.Agent, Brokers: len(t.brokers), NATSNodes: len(t.nodes),
		ServerPIDs: t.brokers, AgentPID: t.agent, Failures: map[string]int{}}
	rep.Server.RSSIdleMiB = mib(benchproc.RSSOf(t.brokers))
	rep.NATS.RSSIdleMiB = mib(benchproc.RSSOf(t.nodes))
	rep.Agent.RSSIdleMiB = mib(benchproc.RSS(t.agent))

	visitors := make([]*visitor, o.Conversations)
	for i := range visitors {
		visitors[i] = &visitor{r: r, n: i}
	}
	defer func() {
		each(visitors, o.Workers, func(v *visitor) error { v.close(); return nil })
		r.readers.Wait()
	}()

	// Sessions, timed.
	fmt.Fprintf(log, "bench: creating %d sessions with %d clients\n", o.Conversations, o.Workers)
	var createMS []float64
	var cmu sync.Mutex
	start := time.Now()
	failed := each(visitors, o.Workers, func(v *visitor) error {
		t0 := time.Now()
		err := v.create(ctx)
		cmu.Lock()
		createMS = append(createMS, ms(time.Since(t0)))
		cmu.Unlock()
		return err
	})
	took := time.Since(start)
	rep.Sessions.PerS = float64(o.Conversations-len(failed)) / took.Seconds()
	rep.Sessions.MS = benchproc.DistOf(createMS)
	addFailures(rep.Failures, "create", failed)
	if len(failed) == o.Conversations {
		return rep, fmt.Errorf("bench: no session could be created: %v", failed[0])
	}

	// WebSockets, then one message each: every conversation live.
	fmt.Fprintf(log, "bench: %d sessions in %v (%.0f/s); opening their WebSockets\n", o.Conversations-len(failed), took.Round(time.Millisecond), rep.Sessions.PerS)
	live := visitors[:0:0]
	for _, v := range visitors {
		if v.id != "" {
			live = append(live, v)
		}
	}
	failed = each(live, o.Workers, func(v *visitor) error { return v.dial(ctx) })
	addFailures(rep.Failures, "websocket", failed)
	open := live[:0:0]
	for _, v := range live {
		if v.conn != nil {
			open = append(open, v)
		}
	}
	fmt.Fprintf(log, "bench: %d WebSockets open; one message in each conversation\n", len(open))
	start = time.Now()
	failed = each(open, o.Workers, func(v *visitor) error {
		p, _, err := v.send(ctx, false)
		if err != nil {
			return err
		}
		t := time.NewTimer(firstAnswerMax)
		defer t.Stop()
		select {
		case <-p.done:
			if !p.chunked {
				return fmt.Errorf("first message not answered")
			}
			return nil
		case <-t.C:
			return fmt.Errorf("first message not answered within %v", firstAnswerMax)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	addFailures(rep.Failures, "first message", failed)
	rep.Live = len(open) - len(failed)
	fmt.Fprintf(log, "bench: %d conversations live (first messages answered in %v)\n", rep.Live, time.Since(start).Round(time.Millisecond))
	if rep.Live == 0 {
		return rep, fmt.Errorf("bench: no conversation got an answer")
	}

	// Idle memory: let the first replies' garbage go.
	if err := benchproc.SleepUntil(ctx, time.Now().Add(2*time.Second)); err != nil {
		return rep, err
	}
	rep.Server.RSSLiveIdleMiB = mib(benchproc.RSSOf(t.brokers))
	rep.NATS.RSSLiveIdleMiB = mib(benchproc.RSSOf(t.nodes))
	rep.Agent.RSSLiveIdleMiB = mib(benchproc.RSS(t.agent))
	for _, f := range []*ProcFigures{&rep.Server, &rep.NATS, &rep.Agent} {
		f.KiBPerIdleConversation = (f.RSSLiveIdleMiB - f.RSSIdleMiB) * 1024 / float64(rep.Live)
	}
	rep.Server.FDs = benchproc.FDsOf(t.brokers)
	if rep.JetStreamConsumers, err = consumers(ctx, t.natsURL, t.creds); err != nil {
		fmt.Fprintf(log, "bench: counting JetStream consumers: %v\n", err)
	}
	prof.Heap(ctx, "broker-heap-live-idle.pb.gz", log)
	prof.State(ctx, "broker-live-idle", log)

	// The load: warm-up, then the window.
	fmt.Fprintf(log, "bench: %.0f messages/s: warm-up %v, then measuring %v\n", o.Rate, o.Warmup, o.Duration)
	t0 := time.Now().Add(o.Warmup)
	t1 := t0.Add(o.Duration)
	var c0, c1 benchproc.CPUSample
	var nats0, nats1 time.Duration
	var busy atomic.Int64
	sendErr := r.send(ctx, open, t1, func(now time.Time) bool { return !now.Before(t0) }, &busy, func() {
		c0, nats0 = benchproc.SampleCPUOf(t.brokers, t.agent), benchproc.CPUOf(t.nodes)
		prof.StartCPU(ctx, o.Duration, "broker-cpu-window.pb.gz", log)
	})
	c1, nats1 = benchproc.SampleCPUOf(t.brokers, t.agent), benchproc.CPUOf(t.nodes)
	prof.WaitCPU()
	prof.Heap(ctx, "broker-heap-loaded.pb.gz", log)
	rep.Server.RSSSteadyMiB = mib(benchproc.RSSOf(t.brokers))
	rep.NATS.RSSSteadyMiB = mib(benchproc.RSSOf(t.nodes))
	rep.Agent.RSSSteadyMiB = mib(benchproc.RSS(t.agent))
	if n, err := consumers(ctx, t.natsURL, t.creds); err == nil {
		rep.JetStreamConsumersLoaded = n
	}
	// Let the window's last replies land.
	deadline := time.Now().Add(settleMax)
	for _, v := range open {
		v.mu.Lock()
		p := v.pending
		v.mu.Unlock()
		if p == nil {
			continue
		}
		select {
		case <-p.done:
		case <-time.After(time.Until(deadline)):
		case <-ctx.Done():
		}
	}
	rep.fill(&r.stats, c0, c1, busy.Load())
	if wall := c1.At.Sub(c0.At).Seconds(); wall > 0 && !c0.At.IsZero() {
		rep.NATS.CPUPct = 100 * (nats1 - nats0).Seconds() / wall
	}
	rep.ServerLog, rep.AgentLog = t.logs()
	return rep, sendErr
}

// send sends messages at the rate, round robin over vs, until end: a
// visitor with a message still in flight is skipped (counted in busy).
// inWindow says whether a message sent now is measured; atWindow is called
// once, when the first measured message is about to go.
func (r *runner) send(ctx context.Context, vs []*visitor, end time.Time, inWindow func(time.Time) bool, busy *atomic.Int64, atWindow func()) error {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	credit := 0.0
	next := 0
	started := false
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case now := <-t.C:
			if !now.Before(end) {
				return nil
			}
			credit += r.o.Rate * now.Sub(last).Seconds()
			last = now
			in := inWindow(now)
			if in && !started {
				started = true
				atWindow()
			}
			for ; credit >= 1; credit-- {
				sent := false
				for range len(vs) {
					v := vs[next]
					next = (next + 1) % len(vs)
					_, ok, err := v.send(ctx, in)
					if err != nil {
						r.stats.errorFrame("SEND_FAILED", in)
						continue
					}
					if ok {
						sent = true
						break
					}
					busy.Add(1)
				}
				if !sent {
					break // every visitor is waiting for a reply
				}
				if in {
					r.stats.mu.Lock()
					r.stats.sent++
					r.stats.mu.Unlock()
				}
			}
		}
	}
}

// each runs fn for every visitor with n concurrent goroutines (waited for)
// and returns the errors, with the visitor's number.
func each(vs []*visitor, n int, fn func(*visitor) error) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range min(n, len(vs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(vs) {
					return
				}
				if err := fn(vs[i]); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("visitor %d: %w", i, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// consumers counts the JetStream consumers of the server's account.
func consumers(ctx context.Context, natsURL, creds string) (int, error) {
	opts := []nats.Option{nats.Name("parley bench chat")}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(natsURL, opts...)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := js.AccountInfo(ctx)
	if err != nil {
		return 0, err
	}
	return info.Consumers, nil
}

// addFailures counts errs under what.
func addFailures(m map[string]int, what string, errs []error) {
	if len(errs) > 0 {
		m[what+": "+errs[0].Error()] += len(errs)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
