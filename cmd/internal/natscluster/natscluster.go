// Package natscluster runs a NATS cluster with JetStream on loopback for
// the load generators (parley bench … --brokers): one node per process
// (parley bench nats-node), so that each node's CPU and memory are
// measured apart from the brokers' and the generator's.
package natscluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Node is one node of a cluster: its client and route ports, every node's
// route (JetStream clustering needs them all up front) and its store.
type Node struct {
	Name        string
	Port        int
	ClusterPort int
	Routes      []string
	StoreDir    string
}

// Plan chooses n nodes' ports (free when chosen) and stores under dir.
func Plan(n int, dir string) ([]Node, error) {
	ports := make([]int, 2*n)
	for i := range ports {
		p, err := freePort(ports[:i])
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	routes := make([]string, n)
	for i := range n {
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(ports[n+i])
	}
	nodes := make([]Node, n)
	for i := range nodes {
		name := "n" + strconv.Itoa(i+1)
		nodes[i] = Node{Name: name, Port: ports[i], ClusterPort: ports[n+i], Routes: routes,
			StoreDir: filepath.Join(dir, name)}
	}
	return nodes, nil
}

// freePort is a free loopback TCP port below the kernel's ephemeral range
// (32768 and up on Linux), so that no outgoing connection of the run is
// given it between Plan and the node's start; taken lists ports already
// chosen.
func freePort(taken []int) (int, error) {
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if slices.Contains(taken, port) {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, errors.New("natscluster: no free port in 20000-31999")
}

// URL is the node's client URL.
func (n Node) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.Port) }

// URLs joins the nodes' client URLs, as nats.url takes them.
func URLs(nodes []Node) string {
	u := make([]string, len(nodes))
	for i, n := range nodes {
		u[i] = n.URL()
	}
	return strings.Join(u, ",")
}

// Options are the node's nats-server options: JetStream, clustered on
// loopback, no authentication (a bench cluster), no logging.
func (n Node) Options() (*server.Options, error) {
	var routes []*url.URL
	for _, r := range n.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("natscluster: route %q: %w", r, err)
		}
		routes = append(routes, u)
	}
	return &server.Options{
		ServerName: n.Name, Host: "127.0.0.1", Port: n.Port,
		JetStream: true, StoreDir: n.StoreDir,
		Cluster: server.ClusterOpts{Name: "parley-bench", Host: "127.0.0.1", Port: n.ClusterPort},
		Routes:  routes, NoSigs: true, NoLog: true,
	}, nil
}

// Args are the command-line arguments that ParseArgs turns back into n.
func (n Node) Args() []string {
	return []string{"--name", n.Name, "--port", strconv.Itoa(n.Port), "--cluster-port", strconv.Itoa(n.ClusterPort),
		"--routes", strings.Join(n.Routes, ","), "--store", n.StoreDir}
}

// ParseArgs reads a node from Args' arguments.
func ParseArgs(args []string) (Node, error) {
	var n Node
	var routes string
	fs := flag.NewFlagSet("nats-node", flag.ContinueOnError)
	fs.StringVar(&n.Name, "name", "", "server name")
	fs.IntVar(&n.Port, "port", 0, "client port (loopback)")
	fs.IntVar(&n.ClusterPort, "cluster-port", 0, "route port (loopback)")
	fs.StringVar(&routes, "routes", "", "every node's route URL, comma-separated")
	fs.StringVar(&n.StoreDir, "store", "", "JetStream store directory")
	if err := fs.Parse(args); err != nil {
		return n, err
	}
	if n.Name == "" || n.Port <= 0 || n.ClusterPort <= 0 || routes == "" || n.StoreDir == "" {
		return n, errors.New("natscluster: --name, --port, --cluster-port, --routes and --store are required")
	}
	n.Routes = strings.Split(routes, ",")
	return n, nil
}

// Serve runs the node until ctx ends. It returns once the server has shut
// down, or an error if it does not start within a minute.
func Serve(ctx context.Context, n Node) error {
	opts, err := n.Options()
	if err != nil {
		return err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("natscluster: %s: %w", n.Name, err)
	}
	go s.Start()
	if !s.ReadyForConnections(time.Minute) {
		s.Shutdown()
		return fmt.Errorf("natscluster: %s did not start on port %d", n.Name, n.Port)
	}
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// WaitJetStream waits until the cluster at urls can create a stream of
// the given replicas (its meta leader is elected and enough peers are
// current), or ctx ends.
func WaitJetStream(ctx context.Context, urls string, replicas int) error {
	nc, err := nats.Connect(urls, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("natscluster: connect %s: %w", urls, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateOrUpdateStream(actx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"natscluster.probe.>"}, Replicas: replicas})
		cancel()
		if err == nil {
			return js.DeleteStream(ctx, "PROBE")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natscluster: JetStream with %d replicas not ready: %w (last error: %v)", replicas, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
