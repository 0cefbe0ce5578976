package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/cmd/internal/natscluster"
	"github.com/parley-rtc/parley/configs"
)

// natsCluster runs a 3-node NATS cluster with JetStream in the test
// process, on random ports, and returns the client URLs joined by commas.
func natsCluster(t testing.TB) string {
	t.Helper()
	urls, _ := natsClusterNodes(t)
	return urls
}

// clusterNode is one node of a test NATS cluster. Its client port is fixed
// when the cluster is prepared, so a node can be stopped and started again
// on the same store and address.
type clusterNode struct {
	opts *server.Options
	srv  *server.Server
}

// newClusterNodes prepares a 3-node JetStream cluster on loopback without
// starting it (natscluster.Plan: JetStream clustering needs every node's
// routes up front, so the ports are chosen here, below the kernel's
// ephemeral range, and a stopped node can bind its own again).
func newClusterNodes(t testing.TB) []*clusterNode {
	t.Helper()
	plan, err := natscluster.Plan(3, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*clusterNode, len(plan))
	for i, n := range plan {
		opts, err := n.Options()
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = &clusterNode{opts: opts}
	}
	return nodes
}

// start starts (or restarts) the node and returns its client URL; it is
// shut down when the test ends.
func (n *clusterNode) start(t testing.TB) string {
	t.Helper()
	s, err := server.NewServer(n.opts)
	if err != nil {
		t.Fatal(err)
	}
	log := &nodeLog{}
	s.SetLoggerV2(log, false, false, false)
	go s.Start()
	// A restart recovers the node's streams before it accepts clients,
	// which takes a while under -race on a busy machine.
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		t.Fatalf("nats node %s did not start on port %d; its warnings and errors:\n%s", n.opts.ServerName, n.opts.Port, tail(log.String(), 3000))
	}
	t.Cleanup(s.Shutdown)
	n.srv = s
	return s.ClientURL()
}

// nodeLog keeps a test NATS node's warnings and errors, to say why it did
// not start.
type nodeLog struct{ syncBuffer }

func (l *nodeLog) Noticef(string, ...any) {}
func (l *nodeLog) Debugf(string, ...any)  {}
func (l *nodeLog) Tracef(string, ...any)  {}
func (l *nodeLog) Warnf(f string, v ...any) {
	fmt.Fprintf(&l.syncBuffer, "WARN "+f+"\n", v...)
}
func (l *nodeLog) Errorf(f string, v ...any) {
	fmt.Fprintf(&l.syncBuffer, "ERROR "+f+"\n", v...)
}
func (l *nodeLog) Fatalf(f string, v ...any) {
	fmt.Fprintf(&l.syncBuffer, "FATAL "+f+"\n", v...)
}

// natsClusterNodes is natsCluster that also returns the nodes, so a test
// can stop and start them.
func natsClusterNodes(t testing.TB) (string, []*clusterNode) {
	t.Helper()
	nodes := newClusterNodes(t)
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.start(t)
	}
	all := strings.Join(urls, ",")
	waitClusterJetStream(t, all)
	return all, nodes
}

// natsServer runs one NATS server with JetStream for brokers to share.
func natsServer(t testing.TB) string {
	t.Helper()
	return agenttest.RunNATS(t, nil).ClientURL()
}

// sharedNATS starts a NATS server for several brokers, and returns the
// config change that points a broker at it and then applies more.
func sharedNATS(t testing.TB, more ...func(*configs.Config)) func(*configs.Config) {
	t.Helper()
	url := natsServer(t)
	return func(c *configs.Config) {
		c.NATS.URL = url
		for _, m := range more {
			m(c)
		}
	}
}

// TestRateLimitsAcrossBrokers: two brokers on one NATS enforce one limit
// together, not one each.
func TestRateLimitsAcrossBrokers(t *testing.T) {
	shared := sharedNATS(t, func(c *configs.Config) {
		c.Limits.Resolve = configs.RateConfig{PerIP: "3/1m", PerWidget: "0"}
	})
	a, b := startEnv(t, shared), startEnv(t, shared)
	t.Logf("a %s b %s", a.app.broker.NATSClientURL(), b.app.broker.NATSClientURL())
	for i, e := range []*env{a, b, a} {
		r := e.ResolveWidget("pk_demo", testOrigin)
		if r.Status != 200 {
			t.Fatalf("resolve %d: %d %s", i+1, r.Status, r.Raw)
		}
		t.Logf("resolve %d: remaining %s", i+1, r.Header.Get("X-RateLimit-Remaining"))
	}
	r := b.ResolveWidget("pk_demo", testOrigin)
	if r.Status != 429 || r.ErrCode() != "RATE_LIMITED" || r.Header.Get("Retry-After") == "" || r.Header.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("4th resolve on the other broker: %d %v %s\nlogs: %s", r.Status, r.Header, r.Raw, tail(b.logs.String(), 2000))
	}
}

// TestRoomAcrossBrokers: a chat leg on one broker and a voice leg on
// another show as one room; when the chat leg closes, the room stays with
// its voice leg.
func TestRoomAcrossBrokers(t *testing.T) {
	shared := sharedNATS(t, voiceConfig, fastRooms)
	a, b := startEnv(t, shared), startEnv(t, shared, noEcho)
	ak, _ := a.newAdminKey("", broker.ScopeOpsRead)
	s := a.NewSession(nil)
	ws := a.MustDialWS(s)
	v := b.NewVoiceClient(s)
	v.WaitConnected()
	legs := func(e *env) []string {
		r := e.Do("GET", "/v1/ops/rooms/"+s.ConversationID, nil, "Authorization", "Bearer "+ak)
		if r.Status != 200 {
			return nil
		}
		var out []string
		for _, l := range r.Body["room"].(map[string]any)["legs"].([]any) {
			out = append(out, l.(map[string]any)["transport"].(string))
		}
		slices.Sort(out)
		return out
	}
	agenttest.Poll(t, 10*time.Second, "both legs in one room, seen from either broker", func() bool {
		return slices.Equal(legs(a), []string{"webrtc", "websocket"}) && slices.Equal(legs(b), []string{"webrtc", "websocket"})
	})
	ws.Conn.Close(websocket.StatusNormalClosure, "")
	agenttest.Poll(t, 10*time.Second, "the voice leg alone", func() bool { return slices.Equal(legs(a), []string{"webrtc"}) })
}

// waitClusterJetStream waits until the cluster at urls can place an R3
// stream (a meta leader elected, enough peers current).
func waitClusterJetStream(t testing.TB, urls string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := natscluster.WaitJetStream(ctx, urls, 3); err != nil {
		t.Fatal(err)
	}
}
