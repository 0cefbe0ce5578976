package natscluster

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestClusterForms: three planned nodes, served, form one JetStream
// cluster that places a stream of 3 replicas; Args round-trips a node.
func TestClusterForms(t *testing.T) {
	nodes, err := Plan(3, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseArgs(nodes[1].Args())
	if err != nil || back.Name != nodes[1].Name || back.Port != nodes[1].Port || back.ClusterPort != nodes[1].ClusterPort ||
		!slices.Equal(back.Routes, nodes[1].Routes) || back.StoreDir != nodes[1].StoreDir {
		t.Fatalf("ParseArgs(Args()) = %+v, %v; want %+v", back, err, nodes[1])
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		wg.Go(func() { errs <- Serve(ctx, n) })
	}
	defer func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	}()
	wctx, wcancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer wcancel()
	if err := WaitJetStream(wctx, URLs(nodes), 3); err != nil {
		t.Fatal(err)
	}
}
