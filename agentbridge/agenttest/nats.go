package agenttest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// natsStartLimit bounds how long an in-process server may take to accept
// connections; it is a safety net, not a timing assertion.
const natsStartLimit = 10 * time.Second

// RunNATS starts an in-process nats-server on a free loopback port (Port
// -1), with JetStream storing in t.TempDir(), its options first changed by
// tune (which may be nil, and may turn JetStream off or add users). It
// returns once the server accepts connections and shuts it down when the
// test ends; shutting it down earlier is fine.
func RunNATS(t testing.TB, tune func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true}
	if tune != nil {
		tune(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start() // owned by s: Shutdown stops it
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(natsStartLimit) {
		t.Fatalf("nats-server did not accept connections within %s", natsStartLimit)
	}
	return s
}
