package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsCluster runs a 3-node NATS cluster with JetStream in the test
// process, on random ports, and returns the client URLs joined by commas.
func natsCluster(t testing.TB) string {
	t.Helper()
	// JetStream clustering needs every node's routes up front: take three
	// free ports (listen on :0, close) for the cluster listeners.
	ports := make([]int, 3)
	var routes []*url.URL
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])})
	}
	var nodes []*server.Server
	for i := range 3 {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "parley-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
			NoSigs:  true, NoLog: true,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats node %d did not start", i+1)
		}
		t.Cleanup(s.Shutdown)
		nodes = append(nodes, s)
	}
	urls := make([]string, len(nodes))
	for i, s := range nodes {
		urls[i] = s.ClientURL()
	}
	all := strings.Join(urls, ",")
	// Wait until JetStream can create a replicated stream.
	nc, err := nats.Connect(all)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	waitFor(t, 60*time.Second, "the JetStream cluster to elect a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe.>"}, Replicas: 3})
		return err == nil
	})
	_ = js.DeleteStream(context.Background(), "PROBE")
	return all
}
