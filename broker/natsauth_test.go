package broker

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/configs"
)

// startBrokerOn starts a broker with the embedded server on dataDir.
func startBrokerOn(t *testing.T, dataDir string) *Broker {
	t.Helper()
	cfg := configs.Default()
	cfg.DataDir = dataDir
	cfg.NATS.Listen = "127.0.0.1:-1"
	b := New(cfg, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEmbeddedNATSRefusesAnonymous: the embedded server refuses a client
// without credentials or with a user of an operator it does not trust; the broker's, the operator
// tools' and the echo agent's credentials work over TCP.
func TestEmbeddedNATSRefusesAnonymous(t *testing.T) {
	b := startBroker(t)
	for name, opts := range map[string][]nats.Option{
		"no credentials":             nil,
		"a user of another operator": {nats.UserCredentials(otherCreds(t))},
	} {
		start := time.Now()
		nc, err := nats.Connect(b.NATSClientURL(), append(opts, nats.MaxReconnects(0))...)
		t.Logf("%s: refused in %s: %v", name, time.Since(start).Round(time.Millisecond), err)
		if err == nil {
			nc.Close()
			t.Fatalf("%s: anonymous connection accepted", name)
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Fatalf("%s: %v, want an authorization violation", name, err)
		}
	}
	for _, role := range []string{RoleBroker, RoleOperator, AgentRole("echo")} {
		p, err := b.CredsFile(role)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(b.NATSClientURL(), nats.UserCredentials(p))
		if err != nil {
			t.Fatalf("%s credentials: %v", role, err)
		}
		subj := b.Subjects().Prefix + ".x"
		if role == AgentRole("echo") { // an agent may publish only in its namespace
			subj = b.Subjects().Heartbeat("echo")
		}
		if err := nc.Publish(subj, nil); err != nil || nc.Flush() != nil {
			t.Fatalf("%s: publish: %v", role, err)
		}
		nc.Close()
	}
}

// otherCreds is a valid .creds file of an operator the server does not
// trust.
func otherCreds(t *testing.T) string {
	t.Helper()
	a, err := loadNATSAuth(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.ensureCreds(RoleBroker, "parley")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentCredsCannotWriteKV: NATS refuses an agent's writes into a KV
// bucket (the forged admin key of the security review), reads of the
// signing key, a purge of the log and, under protocol v2 (an agent needs
// no JetStream at all), even a consumer on the conversation stream.
func TestAgentCredsCannotWriteKV(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the request timeouts of refused JetStream calls (~8 s)")
	}
	b := startBroker(t)
	agent := connectAs(t, b, AgentRole("echo"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	js, err := jetstream.New(agent)
	if err != nil {
		t.Fatal(err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("the agent could %s", what)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err = js.Publish(ctx, "$KV."+b.subj.Bucket(bucketKeys)+".forged", []byte(`{"kind":"admin"}`))
	refused("write a KV record", err)
	ctx2, cancel2 := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel2()
	_, err = js.KeyValue(ctx2, b.subj.Bucket(bucketSecrets))
	refused("open the secrets bucket", err)
	_, err = agent.Request("$JS.API.DIRECT.GET.KV_"+b.subj.Bucket(bucketSecrets), []byte(`{"last_by_subj":"$KV.`+b.subj.Bucket(bucketSecrets)+`.>"}`), time.Second)
	refused("read the signing key directly", err)
	_, err = agent.Request("$JS.API.STREAM.PURGE."+b.subj.StreamName(), nil, time.Second)
	refused("purge the conversation stream", err)
	// Protocol v1 let an agent have its own consumer on the conversation
	// stream; v2 does not (TestAgentCredsConfinedByNATS has the rest).
	ctx3, cancel3 := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel3()
	_, err = js.CreateOrUpdateConsumer(ctx3, b.subj.StreamName(), jetstream.ConsumerConfig{
		Name: "agent-test", AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute})
	refused("create a consumer on the conversation stream", err)
	op := connectAs(t, b, RoleOperator)
	ojs, _ := jetstream.New(op)
	okv, err := ojs.KeyValue(t.Context(), b.subj.Bucket(bucketKeys))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := okv.Get(t.Context(), "forged"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the forged record: %v, want not found", err)
	}
}

// TestNATSCredsPersistAcrossRestart: the second start on the same data
// directory reuses the operator, accounts and credentials; credentials
// issued before the restart still connect; the directory is 0700 and
// every file in it 0600.
func TestNATSCredsPersistAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b1 := startBrokerOn(t, dir)
	issued, err := b1.CredsFile(AgentRole("support"))
	if err != nil {
		t.Fatal(err)
	}
	before := readAuthDir(t, dir)
	b1.Close()

	b2 := startBrokerOn(t, dir)
	defer b2.Close()
	after := readAuthDir(t, dir)
	for name, data := range before {
		if !bytes.Equal(after[name], data) {
			t.Errorf("%s changed across the restart", name)
		}
	}
	for _, want := range []string{"operator.nk", "sys-account.nk", "account.nk", "broker.creds", "operator.creds", "agent-echo.creds", "agent-support.creds"} {
		if _, ok := after[want]; !ok {
			t.Errorf("auth dir lacks %s (has %v)", want, keys(after))
		}
	}
	nc, err := nats.Connect(b2.NATSClientURL(), nats.UserCredentials(issued))
	if err != nil {
		t.Fatalf("credentials issued before the restart: %v", err)
	}
	nc.Close()

	fi, err := os.Stat(AuthDir(dir))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("auth dir mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	err = filepath.WalkDir(AuthDir(dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", d.Name(), fi.Mode().Perm())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readAuthDir(t *testing.T, dataDir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(AuthDir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(AuthDir(dataDir), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestUpgradeKeepsStoreFromBeforeAuth: a data directory written by a
// Parley without NATS authentication (the store of the global account)
// keeps its data when the authenticated broker starts on it.
func TestUpgradeKeepsStoreFromBeforeAuth(t *testing.T) {
	dir := t.TempDir()
	ns, err := EmbeddedNATS("127.0.0.1:-1", dir, EmbeddedSync{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "parley_widgets", Storage: jetstream.FileStorage, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "old", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()

	b := startBrokerOn(t, dir)
	defer b.Close()
	e, err := b.widgets.Get(t.Context(), "old")
	if err != nil || string(e.Value()) != "kept" {
		t.Fatalf("record from before authentication: %v %q", err, e)
	}
}

// TestCheckDataDirWithAuth: parley check opens an authenticated data
// directory (its store lives under the PARLEY account) and finds the data.
func TestCheckDataDirWithAuth(t *testing.T) {
	dir := t.TempDir()
	b := startBrokerOn(t, dir)
	startSession(t, b)
	b.Close()
	rep, err := CheckDataDir(t.Context(), dir, "parley", false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range rep.Streams {
		found = found || s.Name == b.subj.StreamName() && s.Msgs > 0
	}
	if !found || rep.Failed() {
		t.Fatalf("check found no conversation log, or failed: %+v", rep)
	}
}

// TestEnsureAgentCreds: a tool issues an agent's credentials from a data
// directory a broker created, and they connect; a directory no broker
// started on has none to give.
func TestEnsureAgentCreds(t *testing.T) {
	if _, err := EnsureAgentCreds(t.TempDir(), "parley", "sales"); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("empty data dir: %v, want ErrNoCredentials", err)
	}
	dir := t.TempDir()
	b := startBrokerOn(t, dir)
	defer b.Close()
	p, err := EnsureAgentCreds(dir, "parley", "sales")
	if err != nil || p != CredsPath(dir, AgentRole("sales")) {
		t.Fatalf("EnsureAgentCreds = %q, %v", p, err)
	}
	nc, err := nats.Connect(b.NATSClientURL(), nats.UserCredentials(p))
	if err != nil {
		t.Fatalf("issued by the tool: %v", err)
	}
	nc.Close()
}
