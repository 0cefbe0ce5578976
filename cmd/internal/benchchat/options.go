package benchchat

import (
	"errors"
	"time"
)

const (
	origin    = "http://localhost"
	widgetKey = "pk_demo"
	// perWorker is how many conversations one SDK worker holds at most
	// (agentbridge's default MaxConversations): the agent runs enough
	// workers for every conversation.
	perWorker = 1000
	// settleMax bounds the wait for the replies of the last messages.
	settleMax = 30 * time.Second
	// firstAnswerMax bounds the wait for a conversation's first answer
	// (its dispatch included); one not answered by then counts as failed.
	firstAnswerMax = 2 * time.Minute
)

// Options configure a run; see Command for the flags.
type Options struct {
	Conversations int           // live conversations, one visitor (session + WebSocket) each
	Rate          float64       // messages per second, spread over the conversations
	Duration      time.Duration // the steady window that is measured
	Warmup        time.Duration // sending at Rate before the window
	Workers       int           // concurrent clients creating sessions and opening sockets
	Agent         string        // "process": `parley agent echo`; "in-process": serve's own
	Binary        string        // parley binary for the children; empty: os.Executable()
	Prefix        string        // NATS subject prefix
	ProfileDir    string        // write the broker's heap and CPU profiles here; empty: none
	NATSNodes     int           // a NATS cluster of this many node processes; 0: serve's embedded NATS
	Brokers       int           // brokers on that cluster (with NATSNodes)
}

// Validate refuses options that cannot run, before anything starts.
func (o Options) Validate() error {
	switch {
	case o.Conversations < 1:
		return errors.New("--conversations must be at least 1")
	case o.Rate <= 0:
		return errors.New("--rate must be positive")
	case o.Duration < time.Second:
		return errors.New("--duration must be at least 1s")
	case o.Warmup < 0:
		return errors.New("--warmup must not be negative")
	case o.Workers < 1:
		return errors.New("--workers must be at least 1")
	case o.Agent != "process" && o.Agent != "in-process":
		return errors.New(`--agent must be "process" or "in-process"`)
	case o.NATSNodes < 0 || o.NATSNodes > 9:
		return errors.New("--nats-nodes must be 0 (the embedded NATS) to 9")
	case o.NATSNodes == 0 && o.Brokers > 1:
		return errors.New("--brokers above 1 needs a NATS cluster (--nats-nodes 3)")
	case o.NATSNodes > 0 && (o.Brokers < 1 || o.Agent != "process" || o.ProfileDir != ""):
		return errors.New("--nats-nodes needs --brokers 1 or more and --agent process, and takes no --server-profile")
	}
	return nil
}

// agentWorkers is how many echo workers hold n conversations.
func agentWorkers(n int) int { return max(1, (n+perWorker-1)/perWorker) }
