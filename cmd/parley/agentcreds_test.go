package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// confinedTo checks, against the env's running NATS, that credsFile
// connects (with agent's inbox prefix), may publish agent's heartbeat and
// answer a request on its inbox, and is refused another agent's dispatch
// and the conversation log by NATS.
func confinedTo(t *testing.T, e *env, credsFile, agent string) {
	t.Helper()
	s := e.app.broker.Subjects()
	var mu sync.Mutex
	var errs []string
	nc, err := nats.Connect(e.app.broker.NATSClientURL(), nats.UserCredentials(credsFile), nats.CustomInboxPrefix(s.Inbox(agent)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			errs = append(errs, err.Error())
			mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("connect with %s: %v", credsFile, err)
	}
	defer nc.Close()
	op := e.natsConn()
	hb, err := op.SubscribeSync(s.Heartbeat(agent))
	if err != nil || op.Flush() != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync(s.Dispatch("someone-else")); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync(s.Prefix + ".conv.>"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(s.Heartbeat(agent), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := hb.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("the agent's own heartbeat: %v", err)
	}
	want := []string{`Subscription to "` + s.Dispatch("someone-else") + `"`, `Subscription to "` + s.Prefix + `.conv.>"`}
	agenttest.Poll(t, 5*time.Second, "NATS refusing "+strings.Join(want, " and "), func() bool {
		mu.Lock()
		defer mu.Unlock()
		all := strings.Join(errs, "\n")
		return strings.Contains(all, want[0]) && strings.Contains(all, want[1])
	})
}

// TestAgentsCredentialsCLI: `parley agents credentials` on the data
// directory of a running serve issues credentials that work at once (no
// restart), prints them or writes them with mode 0600, says how to use
// them, and gives the same ones again; its mistakes are clear and name
// the path; -h exits 0.
func TestAgentsCredentialsCLI(t *testing.T) {
	e := startEnv(t, noEcho)
	dir := e.cfg.DataDir
	out := filepath.Join(t.TempDir(), "crm.creds")
	// An existing file others may read is replaced by a 0600 one.
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	var so, se bytes.Buffer
	if code := agentsCmd([]string{"credentials", "--agent", "crm", "--data-dir", dir, "--out", out}, &so, &se); code != 0 {
		t.Fatalf("exit %d: %s", code, se.String())
	}
	if so.Len() != 0 {
		t.Errorf("--out printed to stdout: %q", so.String())
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: mode %v, %v; want 0600", out, fi.Mode().Perm(), err)
	}
	for _, want := range []string{out, broker.CredsPath(dir, broker.AgentRole("crm")), "parley.agents.crm.inbox", "--inbox-prefix", "CustomInboxPrefix", "no restart"} {
		if !strings.Contains(se.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, se.String())
		}
	}
	written, _ := os.ReadFile(out)
	if _, err := jwt.ParseDecoratedJWT(written); err != nil {
		t.Fatalf("%s holds no credentials: %v", out, err)
	}
	confinedTo(t, e, out, "crm")

	// On stdout: the same credentials.
	so.Reset()
	se.Reset()
	if code := agentsCmd([]string{"credentials", "--agent", "crm", "--data-dir", dir}, &so, &se); code != 0 {
		t.Fatalf("exit %d: %s", code, se.String())
	}
	if so.String() != string(written) {
		t.Error("credentials on stdout differ from the ones written before")
	}
	if kp, err := jwt.ParseDecoratedNKey(written); err != nil {
		t.Fatal(err)
	} else if seed, _ := kp.Seed(); strings.Contains(se.String(), string(seed)) || strings.Contains(se.String(), "NKEY SEED") {
		t.Error("the seed went to stderr")
	}

	// The permission block for an external NATS.
	so.Reset()
	if code := agentsCmd([]string{"permissions", "--agent", "crm", "--prefix", "acme"}, &so, &se); code != 0 {
		t.Fatalf("permissions: exit %d", code)
	}
	for _, want := range []string{`"acme.agents.crm.heartbeat"`, `"acme.agents.crm.inbox.>"`, "allow_responses: { max: 1, expires: \"1m0s\" }"} {
		if !strings.Contains(so.String(), want) {
			t.Errorf("permission block lacks %s:\n%s", want, so.String())
		}
	}
	so.Reset()
	if code := agentsCmd([]string{"credentials", "--agent", "crm", "--permissions", "--prefix", "acme"}, &so, &se); code != 0 || !strings.Contains(so.String(), "permissions: {") {
		t.Fatalf("credentials --permissions: exit %d: %s", code, so.String())
	}
	so.Reset()
	var pj broker.AgentNATSPermissions
	if code := agentsCmd([]string{"permissions", "--agent", "crm", "--json"}, &so, &se); code != 0 || json.Unmarshal(so.Bytes(), &pj) != nil ||
		pj.Namespace != "parley.agents.crm.>" || len(pj.Publish) != 6 || len(pj.Subscribe) != 4 {
		t.Fatalf("permissions --json: exit %d: %s", code, so.String())
	}

	// Mistakes.
	empty := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"credentials", "--agent", "crm", "--data-dir", empty}, 1, []string{broker.AuthDir(empty), "parley serve", "permissions: {"}},
		{[]string{"credentials", "--agent", "crm", "--data-dir", dir, "--out", t.TempDir()}, 1, []string{"is a directory"}},
		{[]string{"credentials", "--agent", "crm", "--data-dir", dir, "--out", filepath.Join(empty, "no", "such", "dir", "x.creds")}, 1, []string{filepath.Join(empty, "no", "such", "dir", "x.creds")}},
		{[]string{"credentials", "--agent", "a.b", "--data-dir", dir}, 2, []string{`"a.b" is not a valid agent name`}},
		{[]string{"credentials", "--data-dir", dir}, 2, []string{"--agent NAME is required"}},
		{[]string{"credentials", "--agent", "crm", "--config", filepath.Join(empty, "missing.yaml")}, 1, []string{filepath.Join(empty, "missing.yaml")}},
		{[]string{"bogus"}, 2, []string{"unknown subcommand"}},
		{nil, 2, []string{"parley agents credentials --agent NAME"}},
	} {
		so.Reset()
		se.Reset()
		if code := agentsCmd(c.args, &so, &se); code != c.code {
			t.Errorf("parley agents %v: exit %d, want %d: %s", c.args, code, c.code, se.String())
		}
		for _, want := range c.want {
			if !strings.Contains(se.String(), want) {
				t.Errorf("parley agents %v: stderr lacks %q:\n%s", c.args, want, se.String())
			}
		}
	}
	if _, err := os.Stat(broker.AuthDir(empty)); err == nil {
		t.Error("the CLI created an auth directory where no serve ran")
	}

	// An external NATS in the configuration: the block, not credentials.
	cfgFile := filepath.Join(t.TempDir(), "parley.yaml")
	if err := os.WriteFile(cfgFile, []byte("nats:\n  url: nats://user:secret-pw@10.0.0.5:4222\n  prefix: acme\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	se.Reset()
	if code := agentsCmd([]string{"credentials", "--agent", "crm", "--config", cfgFile}, &so, &se); code != 1 ||
		!strings.Contains(se.String(), "external NATS") || !strings.Contains(se.String(), `"acme.agents.crm.dispatch"`) ||
		strings.Contains(se.String(), "secret-pw") {
		t.Fatalf("external NATS: exit %d: %s", code, se.String())
	}

	// Help.
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"credentials", "-h"}, {"permissions", "--help"}} {
		so.Reset()
		se.Reset()
		if code := run(append([]string{"agents"}, args...), &so, &se); code != 0 {
			t.Errorf("parley agents %v: exit %d", args, code)
		}
		for _, want := range []string{"parley agents credentials --agent NAME", "no restart", "-out", "POST /v1/admin/agents/NAME/credentials"} {
			if !strings.Contains(se.String(), want) {
				t.Errorf("parley agents %v: usage lacks %q", args, want)
			}
		}
	}
}

// TestAdminAgentCredentials: POST /v1/admin/agents/{agent}/credentials
// needs keys:write on all tenants, answers credentials confined to the
// agent (working at once on the running server) with Cache-Control
// no-store, never logs them, refuses bad names, and with an external NATS
// answers 409 EXTERNAL_NATS with the permission block.
func TestAdminAgentCredentials(t *testing.T) {
	e := startEnv(t, noEcho)
	ak, _ := e.newAdminKey("", broker.ScopeKeysWrite)
	readOnly, _ := e.newAdminKey("", broker.ScopeConfigRead, broker.ScopeConfigWrite, broker.ScopeOpsRead)
	tenant, _ := e.newAdminKey("acme", broker.ScopeKeysWrite)
	const path = "/v1/admin/agents/billing/credentials"

	signalingtest.ExpectErr(t, "no key", e.Do("POST", path, nil), 401, "INVALID_API_KEY")
	r := e.Do("POST", path, nil, "Authorization", "Bearer "+readOnly)
	signalingtest.ExpectErr(t, "missing scope", r, 403, "MISSING_SCOPE")
	if msg, _ := r.Body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, broker.ScopeKeysWrite) {
		t.Errorf("MISSING_SCOPE message %q does not name the scope", msg)
	}
	signalingtest.ExpectErr(t, "a tenant's key", e.Do("POST", path, nil, "Authorization", "Bearer "+tenant), 403, "MISSING_SCOPE")
	signalingtest.ExpectErr(t, "GET", e.Do("GET", path, nil, "Authorization", "Bearer "+ak), 405, "METHOD_NOT_ALLOWED")
	for _, bad := range []string{"a.b", "%2A", "%3E", "a%20b"} {
		signalingtest.ExpectErr(t, "agent "+bad, e.Do("POST", "/v1/admin/agents/"+bad+"/credentials", nil, "Authorization", "Bearer "+ak), 422, "VALIDATION_FAILED")
	}
	if _, err := os.Stat(broker.CredsPath(e.cfg.DataDir, broker.AgentRole("billing"))); err == nil {
		t.Fatal("a refused request issued credentials")
	}

	r = e.Do("POST", path, nil, "Authorization", "Bearer "+ak)
	if r.Status != 200 {
		t.Fatalf("credentials: %d %s", r.Status, r.Raw)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	if r.Str("agent") != "billing" || r.Str("subject_namespace") != "parley.agents.billing.>" || r.Str("inbox_prefix") != "parley.agents.billing.inbox" {
		t.Fatalf("answer: %s", r.Raw)
	}
	creds := r.Str("creds")
	tok, err := jwt.ParseDecoratedJWT([]byte(creds))
	if err != nil {
		t.Fatalf("creds: %v", err)
	}
	f := filepath.Join(t.TempDir(), "billing.creds")
	if err := os.WriteFile(f, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	confinedTo(t, e, f, "billing")
	if again := e.Do("POST", path, nil, "Authorization", "Bearer "+ak); again.Str("creds") != creds {
		t.Error("a second call gave other credentials")
	}
	kp, err := jwt.ParseDecoratedNKey([]byte(creds))
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	logs := e.logs.String()
	if strings.Contains(logs, string(seed)) || strings.Contains(logs, tok) {
		t.Fatal("the credentials appear in the logs")
	}
	if !strings.Contains(logs, "agent NATS credentials handed out") {
		t.Error("handing out credentials is not logged")
	}

	// External NATS: nothing to issue; the block to configure there.
	x := startEnv(t, noEcho, func(c *configs.Config) { c.NATS.URL = natsServer(t) })
	xk, _ := x.newAdminKey("", broker.ScopeKeysWrite)
	r = x.Do("POST", path, nil, "Authorization", "Bearer "+xk)
	signalingtest.ExpectErr(t, "external NATS", r, 409, "EXTERNAL_NATS")
	details, _ := r.Body["error"].(map[string]any)["details"].(map[string]any)
	block, _ := details["nats_server_config"].(string)
	if !strings.Contains(block, `"parley.agents.billing.append.*"`) || !strings.Contains(block, "allow_responses") {
		t.Fatalf("409 without the permission block: %s", r.Raw)
	}
	if p, _ := details["permissions"].(map[string]any); p["inbox_prefix"] != "parley.agents.billing.inbox" {
		t.Fatalf("409 without the permissions: %s", r.Raw)
	}
}

// TestNATSFlagsReissueStaleAgentCreds: the agent tools (parley agent echo)
// do not connect with an agent's credentials found in the data directory
// when they are not current (here: signed by another account, as a file
// left from a lost auth directory or an older protocol would be); they
// have them issued again. A credentials file copied without the account
// key is used as it is.
func TestNATSFlagsReissueStaleAgentCreds(t *testing.T) {
	e := startEnv(t, noEcho)
	p := broker.CredsPath(e.cfg.DataDir, broker.AgentRole("legacy"))
	stale := foreignCreds(t)
	if err := os.WriteFile(p, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	flagsFor := func(dir string) *natsFlags {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		nf := addNATSFlags(fs)
		if err := fs.Parse([]string{"--data-dir", dir, "--nats-creds", ""}); err != nil {
			t.Fatal(err)
		}
		nf.markSet(fs)
		return nf
	}
	nf := flagsFor(e.cfg.DataDir)
	got, err := nf.credsFile(broker.AgentRole("legacy"), "parley")
	if err != nil || got != p {
		t.Fatalf("credsFile = %q, %v", got, err)
	}
	if now, _ := os.ReadFile(p); bytes.Equal(now, stale) {
		t.Fatal("stale agent credentials were kept")
	}
	confinedTo(t, e, got, "legacy")
	if _, err := nf.credsFile(broker.AgentRole("a.b"), "parley"); err == nil {
		t.Error("an agent name that is not one subject token was accepted")
	}

	copied := t.TempDir()
	if err := os.MkdirAll(broker.AuthDir(copied), 0o700); err != nil {
		t.Fatal(err)
	}
	cp := broker.CredsPath(copied, broker.AgentRole("legacy"))
	if err := os.WriteFile(cp, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := flagsFor(copied).credsFile(broker.AgentRole("legacy"), "parley"); err != nil || got != cp {
		t.Fatalf("a copied credentials file: %q, %v", got, err)
	}
}

// foreignCreds is a well-formed .creds file of a user of an account the
// server does not know.
func foreignCreds(t *testing.T) []byte {
	t.Helper()
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	tok, err := jwt.NewUserClaims(upub).Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	b, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
