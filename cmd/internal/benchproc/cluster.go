package benchproc

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/parley-rtc/parley/cmd/internal/livekitserver"
	"github.com/parley-rtc/parley/cmd/internal/natscluster"
)

// Cluster is what a bench runs against in cluster mode: a NATS cluster
// with JetStream whose nodes are each a `parley bench nats-node` process,
// brokers (`parley serve` with nats.url on that cluster, so they share
// its streams: streams and buckets of 3 replicas with 3 nodes), and one
// `parley agent echo` process connected to the cluster. Every process is
// its own, so the bench measures each one's CPU and memory.
type Cluster struct {
	Nodes   []*Proc
	Brokers []*Proc
	Agent   *Proc
	Bases   []string // the brokers' HTTP base URLs, in Brokers' order
	NATSURL string   // every node's client URL, comma-separated
	dir     string
}

// StartCluster starts nodes NATS nodes, waits until they place a stream
// of min(nodes, 3) replicas, then brokers brokers with env added to their
// environment (as StartServe's), then the echo agent with agentArgs, and
// returns once every broker is ready with a live worker for every agent.
// On error, what was started is stopped.
func StartCluster(ctx context.Context, bin string, nodes, brokers int, env []string, log io.Writer, agentArgs ...string) (c *Cluster, err error) {
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: finding the parley binary: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "parley-bench-cluster-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{dir: dir}
	defer func() {
		if err != nil {
			c.Stop(log)
		}
	}()
	plan, err := natscluster.Plan(nodes, dir)
	if err != nil {
		return c, err
	}
	for _, n := range plan {
		p, err := Start("nats node "+n.Name, bin, "", nil, append([]string{"bench", "nats-node"}, n.Args()...)...)
		if err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, p)
	}
	c.NATSURL = natscluster.URLs(plan)
	wctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if err := natscluster.WaitJetStream(wctx, c.NATSURL, min(nodes, 3)); err != nil {
		return c, err
	}
	env = append([]string{"PARLEY_MEDIA_INCLUDE_LOOPBACK=true",
		"PARLEY_LIMITS_RESOLVE_PER_IP=0", "PARLEY_LIMITS_RESOLVE_PER_WIDGET=0",
		"PARLEY_LIMITS_SESSIONS_PER_IP=0", "PARLEY_LIMITS_SESSIONS_PER_WIDGET=0"}, env...)
	for i := range brokers {
		port, err := livekitserver.FreePort("tcp")
		if err != nil {
			return c, fmt.Errorf("bench: free port: %w", err)
		}
		bdir := filepath.Join(dir, "broker"+strconv.Itoa(i+1))
		p, err := Start("parley serve "+strconv.Itoa(i+1), bin, "", env, "serve", "--data-dir", bdir,
			"--listen", "127.0.0.1:"+strconv.Itoa(port), "--nats-url", c.NATSURL,
			"--log-level", "warn", "--echo-agent=false", "--speech=false")
		if err != nil {
			return c, err
		}
		c.Brokers = append(c.Brokers, p)
		c.Bases = append(c.Bases, "http://127.0.0.1:"+strconv.Itoa(port))
		if err := WaitReady(ctx, c.Bases[i], false, p); err != nil {
			return c, err
		}
	}
	// The cluster has no authentication: the agent connects without
	// credentials (no --data-dir).
	if c.Agent, err = Start("parley agent echo", bin, "", nil,
		append([]string{"agent", "echo", "--nats-url", c.NATSURL, "--log-level", "warn"}, agentArgs...)...); err != nil {
		return c, err
	}
	for i, base := range c.Bases {
		if err := WaitReady(ctx, base, true, c.Brokers[i], c.Agent); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Stop stops the agent, then the brokers, then the NATS nodes, and
// removes their directories.
func (c *Cluster) Stop(log io.Writer) {
	if c.Agent != nil {
		c.Agent.Stop(log)
	}
	for _, p := range c.Brokers {
		p.Stop(log)
	}
	for _, p := range c.Nodes {
		p.Stop(log)
	}
	_ = os.RemoveAll(c.dir)
}

// PIDs are the process ids of ps.
func PIDs(ps []*Proc) []int {
	pids := make([]int, len(ps))
	for i, p := range ps {
		pids[i] = p.PID()
	}
	return pids
}
