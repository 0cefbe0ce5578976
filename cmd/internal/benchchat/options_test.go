package benchchat

import (
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	ok := Options{Conversations: 10, Rate: 10, Duration: time.Second, Workers: 1, Agent: "process", Brokers: 1}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	cluster := ok
	cluster.NATSNodes, cluster.Brokers = 3, 3
	if err := cluster.Validate(); err != nil {
		t.Fatalf("valid cluster options: %v", err)
	}
	for name, change := range map[string]func(*Options){
		"no conversations":          func(o *Options) { o.Conversations = 0 },
		"no rate":                   func(o *Options) { o.Rate = 0 },
		"short window":              func(o *Options) { o.Duration = time.Millisecond },
		"negative warm-up":          func(o *Options) { o.Warmup = -time.Second },
		"no workers":                func(o *Options) { o.Workers = 0 },
		"unknown agent":             func(o *Options) { o.Agent = "remote" },
		"brokers, no cluster":       func(o *Options) { o.Brokers = 3 },
		"cluster, no broker":        func(o *Options) { o.NATSNodes, o.Brokers = 3, 0 },
		"cluster, in-process agent": func(o *Options) { o.NATSNodes, o.Brokers, o.Agent = 3, 3, "in-process" },
		"cluster, profile":          func(o *Options) { o.NATSNodes, o.Brokers, o.ProfileDir = 3, 3, "/tmp/p" },
		"negative nodes":            func(o *Options) { o.NATSNodes = -1 },
	} {
		o := ok
		change(&o)
		if o.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestAgentWorkers: enough SDK workers (1,000 conversations each) for
// every conversation.
func TestAgentWorkers(t *testing.T) {
	for n, want := range map[int]int{1: 1, 1000: 1, 1001: 2, 10000: 10, 10001: 11} {
		if got := agentWorkers(n); got != want {
			t.Errorf("agentWorkers(%d) = %d, want %d", n, got, want)
		}
	}
}
