package signalingtest

import (
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
