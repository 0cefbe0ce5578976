package benchchat

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// target is what a run loads: one `parley serve` with its embedded NATS
// (and, with --agent process, a separate echo agent), or a cluster of
// --nats-nodes NATS processes, --brokers brokers and one echo agent.
type target struct {
	bases   []string // brokers' HTTP base URLs
	brokers []int    // their pids
	nodes   []int    // pids of the NATS nodes; none with the embedded server
	agent   int      // the agent process's pid; 0 in-process
	natsURL string
	creds   string // operator credentials; "" on the bench cluster (no authentication)
	stop    func(io.Writer)
	logs    func() (servers, agent []string)
}

// startTarget starts what o asks for, with env in the brokers'
// environment and workers echo workers.
func startTarget(ctx context.Context, o Options, env []string, workers int, log io.Writer) (*target, error) {
	agentArgs := []string{"--workers", strconv.Itoa(workers), "--prefix", o.Prefix}
	if o.NATSNodes > 0 {
		c, err := benchproc.StartCluster(ctx, o.Binary, o.NATSNodes, o.Brokers, env, log, agentArgs...)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "bench: started a %d-node NATS cluster (pids %v) at %s, %d brokers (pids %v), parley agent echo (pid %d, %d workers)\n",
			o.NATSNodes, benchproc.PIDs(c.Nodes), c.NATSURL, o.Brokers, benchproc.PIDs(c.Brokers), c.Agent.PID(), workers)
		return &target{bases: c.Bases, brokers: benchproc.PIDs(c.Brokers), nodes: benchproc.PIDs(c.Nodes),
			agent: c.Agent.PID(), natsURL: c.NATSURL, stop: c.Stop,
			logs: func() (servers, agent []string) {
				for _, b := range c.Brokers {
					servers = append(servers, b.LogSummary()...)
				}
				return servers, c.Agent.LogSummary()
			}}, nil
	}
	srv, agent, base, natsURL, creds, err := benchproc.StartServe(ctx, o.Binary, o.Agent == "process", "", env, agentArgs...)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "bench: started parley serve (pid %d) at %s, %s\n", srv.PID(), base, natsURL)
	t := &target{bases: []string{base}, brokers: []int{srv.PID()}, natsURL: natsURL, creds: creds}
	t.stop = func(log io.Writer) {
		if agent != nil {
			agent.Stop(log) // the agent leaves before the server
		}
		srv.Stop(log)
	}
	t.logs = func() (servers, agentLog []string) {
		if agent != nil {
			agentLog = agent.LogSummary()
		}
		return srv.LogSummary(), agentLog
	}
	if agent != nil {
		t.agent = agent.PID()
		fmt.Fprintf(log, "bench: started parley agent echo (pid %d, %d workers)\n", t.agent, workers)
	}
	return t, nil
}
