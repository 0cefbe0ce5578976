package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// parleyReplicas returns the replicas of every Parley stream (conversation
// log, KV buckets, object store) on the NATS at url.
func parleyReplicas(t *testing.T, url string) map[string]int {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]int{}
	// One stream at a time: a cluster's stream list can leave out a stream
	// whose peers are changing.
	names := []string{"PARLEY_CONV", "OBJ_parley_uploads"}
	for _, b := range []string{"sessions", "conversations", "resume", "nonces", "secrets", "widgets", "keys", "leads", "rooms", "ratelimits"} {
		names = append(names, "KV_parley_"+b)
	}
	for _, n := range names {
		st, err := js.Stream(ctx, n)
		if err != nil {
			t.Fatalf("stream %s: %v", n, err)
		}
		out[n] = st.CachedInfo().Config.Replicas
	}
	return out
}

func allReplicas(m map[string]int, want int) bool {
	for _, r := range m {
		if r != want {
			return false
		}
	}
	return true
}

// TestReplicasOnCluster: on a real 3-node JetStream cluster an explicit
// replicas 1 is kept but warned about; auto then makes every stream and
// bucket R3, raising the existing R1 ones and saying so; and a deployment
// on the cluster keeps serving.
func TestReplicasOnCluster(t *testing.T) {
	url := natsCluster(t)
	r1 := startEnv(t, func(c *configs.Config) { c.NATS.URL = url; c.NATS.Replicas = 1 })
	got := parleyReplicas(t, url)
	t.Logf("replicas: 1 → %v", got)
	if !allReplicas(got, 1) {
		t.Fatalf("explicit replicas 1: %v", got)
	}
	if !strings.Contains(r1.logs.String(), "1 replica on a NATS cluster") {
		t.Fatalf("no WARN about R1 on a cluster; logs:\n%s", tail(r1.logs.String(), 3000))
	}
	r1.stop()

	auto := startEnv(t, func(c *configs.Config) { c.NATS.URL = url })
	got = parleyReplicas(t, url)
	t.Logf("replicas: auto → %v", got)
	if !allReplicas(got, 3) {
		t.Fatalf("auto on a 3-node cluster: %v, want all 3", got)
	}
	logs := auto.logs.String()
	if n := strings.Count(logs, "JetStream raised them"); n != 13 {
		t.Errorf("%d streams reported as raised from R1, want 13; logs:\n%s", n, tail(logs, 3000))
	}
	if strings.Contains(logs, "1 replica on a NATS cluster") {
		t.Errorf("auto warned about R1")
	}
	s := auto.NewSession(nil)
	if r := auto.Post(s, "hello R3", "c1", true); r.Status != 200 {
		t.Fatalf("post on R3: %d %s", r.Status, r.Raw)
	}

	// More replicas than the cluster has servers: refused at once, clearly.
	err := startRefused(t, url, 5, "replicas 5 on a 3-node cluster")
	if !errors.Is(err, broker.ErrPlacement) || !strings.Contains(err.Error(), "cannot place 5 replicas") {
		t.Fatalf("err = %v, want ErrPlacement naming 5 replicas", err)
	}
}

// startRefused starts Parley on the NATS at url with nats.replicas set to
// replicas, which must fail (what names the case), and returns the error.
func startRefused(t *testing.T, url string, replicas configs.Replicas, what string) error {
	t.Helper()
	cfg := testConfig(t)
	cfg.NATS.URL, cfg.NATS.Replicas = url, replicas
	a := newApp(cfg, discardLogger())
	start := time.Now()
	err := a.Start(t.Context())
	t.Logf("%s: %s: %v", what, time.Since(start).Round(time.Millisecond), err)
	if err == nil {
		_ = a.Stop(context.Background())
		t.Fatalf("%s started", what)
	}
	return err
}

// TestReplicasSingleServer: auto on one external server is R1 without a
// cluster warning; an explicit replicas 3 there fails at once, naming the
// setting.
func TestReplicasSingleServer(t *testing.T) {
	url := natsServer(t)
	e := startEnv(t, func(c *configs.Config) { c.NATS.URL = url })
	if got := parleyReplicas(t, url); !allReplicas(got, 1) {
		t.Fatalf("auto on a single server: %v", got)
	}
	if strings.Contains(e.logs.String(), "1 replica on a NATS cluster") {
		t.Errorf("single server warned as a cluster")
	}

	err := startRefused(t, natsServer(t), 3, "explicit replicas 3 on a single server")
	if !strings.Contains(err.Error(), "nats.replicas is 3") || !strings.Contains(err.Error(), "not clustered") {
		t.Fatalf("err = %v, want one naming nats.replicas and the single server", err)
	}
}

// TestStartDuringClusterRecovery: a broker started while only one node of
// a 3-node cluster runs (JetStream has no meta leader, so every JetStream
// request times out or answers "temporarily unavailable") retries, logging
// each retry at WARN, and starts with R3 once the other nodes are back.
func TestStartDuringClusterRecovery(t *testing.T) {
	nodes := newClusterNodes(t)
	first := nodes[0].start(t)
	cfg := testConfig(t)
	cfg.NATS.URL = first
	cfg.NATS.StartTimeout = 2 * time.Minute
	logs := &syncBuffer{}
	a := newApp(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- a.Start(t.Context()) }()
	agenttest.Poll(t, 60*time.Second, "a start-up retry", func() bool { return strings.Contains(logs.String(), "retrying start-up") })
	nodes[1].start(t)
	nodes[2].start(t)
	recovered := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("start: %v\n%s", err, tail(logs.String(), 3000))
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Start did not return after the cluster recovered")
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "retrying start-up") {
			t.Log(l)
		}
	}
	t.Logf("started %s after the first node, %s after the other two, %d retries logged", time.Since(began).Round(time.Millisecond),
		time.Since(recovered).Round(time.Millisecond),
		strings.Count(logs.String(), "retrying start-up"))
	if got := parleyReplicas(t, first); !allReplicas(got, 3) {
		t.Fatalf("replicas after recovery: %v, want all 3", got)
	}
}

// TestServeReportsUnusableDataDir: `parley serve` with a data directory it
// cannot create exits 1 at once and prints the operating system's error,
// instead of hanging 30 s and blaming nats-server.
func TestServeReportsUnusableDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1", "--data-dir", filepath.Join(file, "data"))
	began := time.Now()
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("parley serve did not exit")
	}
	stderr := p.stderr.String()
	t.Logf("exited after %s: %v; stderr tail: %s", time.Since(began).Round(time.Millisecond), p.err, tail(stderr, 300))
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1", p.err)
	}
	if !strings.Contains(stderr, "parley: start failed: broker: data dir") || !strings.Contains(stderr, "not a directory") {
		t.Fatalf("stderr lacks the real cause:\n%s", stderr)
	}
}
