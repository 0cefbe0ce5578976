package signalingtest

import (
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
)

// ConnectAs connects a client to b's NATS with the credentials of role
// (broker.RoleOperator, broker.AgentRole(name), …); the connection closes
// when the test ends.
func ConnectAs(t testing.TB, b *broker.Broker, role string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts, err := b.ClientOptions(role)
	if err != nil {
		t.Fatalf("nats credentials: %v", err)
	}
	nc, err := nats.Connect(b.NATSClientURL(), append(opts, extra...)...)
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ConnectAgent connects to b's NATS as a worker of agent: the agent's
// credentials and inbox prefix.
func ConnectAgent(t testing.TB, b *broker.Broker, agent string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts := append(agentbridge.ConnectOptions(b.Subjects().Prefix, agent), extra...)
	return ConnectAs(t, b, broker.AgentRole(agent), opts...)
}

// StartWorker starts a worker of agent on nc running h, with its logs
// discarded; it closes when the test ends.
func StartWorker(t testing.TB, nc *nats.Conn, agent string, h agentbridge.Handler) *agentbridge.Worker {
	t.Helper()
	w, err := agentbridge.NewWorker(nc, agentbridge.Options{Agent: agent, Logger: slog.New(slog.DiscardHandler)}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}
