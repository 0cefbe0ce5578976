package main

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// TestClusterLogReadsDoNotStall: on a 3-node cluster, a broker whose NATS
// node is not the conversation stream's leader reads a log many times in
// a row, and every read returns the whole log. Each read makes an ordered
// consumer on the leader; its first pull request can reach the broker's
// node before the node knows of the consumer, and be dropped. With nats.go's
// default heartbeat (5 s) about 2 % of the reads then waited 10 s for the
// consumer to start again, and failed with STORE_TIMEOUT after 5 s
// (TestContinuity's history read in CI); the read's 1 s heartbeat bounds
// that wait to 2 s.
func TestClusterLogReadsDoNotStall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node cluster")
	}
	_, nodes := natsClusterNodes(t)
	home := nodes[0]
	e := startEnv(t, func(c *configs.Config) {
		c.NATS.URL = home.srv.ClientURL()
		c.NATS.Replicas = 3
	})
	mon, err := nats.Connect(home.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	js, err := jetstream.New(mon)
	if err != nil {
		t.Fatal(err)
	}
	stream := agentbridge.NewSubjects(e.cfg.NATS.Prefix).StreamName()
	// The leader elsewhere: the consumer then lives on another node than
	// the broker's connection.
	agenttest.Poll(t, 30*time.Second, "the stream's leader on another node", func() bool {
		st, err := js.Stream(t.Context(), stream)
		if err != nil {
			return false
		}
		if st.CachedInfo().Cluster.Leader != home.srv.Name() {
			return true
		}
		_, _ = mon.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second)
		return false
	})

	s := e.NewSession(nil)
	for i := range 3 {
		if r := e.Post(s, "message "+strconv.Itoa(i), "m-"+strconv.Itoa(i), true); r.Status != http.StatusOK {
			t.Fatalf("post %d: %d %s", i, r.Status, r.Raw)
		}
	}
	want, err := e.app.broker.ReadLog(t.Context(), s.ConversationID, 0)
	if err != nil || len(want) == 0 {
		t.Fatalf("first read: %d events, %v", len(want), err)
	}
	const reads = 300
	var slow int
	var worst time.Duration
	for i := range reads {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		start := time.Now()
		got, err := e.app.broker.ReadLog(ctx, s.ConversationID, 0)
		d := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("read %d failed after %v: %v", i, d.Round(time.Millisecond), err)
		}
		if len(got) != len(want) {
			t.Fatalf("read %d: %d events, want %d", i, len(got), len(want))
		}
		if d > time.Second {
			slow++
		}
		worst = max(worst, d)
	}
	t.Logf("%d reads of %d events: %d took over 1 s, the slowest %v", reads, len(want), slow, worst.Round(time.Millisecond))
}
