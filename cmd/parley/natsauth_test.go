package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
)

// TestCLIFindsCredentialsInDefaultDataDir: the README's commands with no
// set-up: `parley serve` in a directory creates ./parley-data/auth, and
// `parley rooms` and `parley agent echo` run in the same directory find the
// credentials with no flag but the NATS URL; run elsewhere, rooms is
// refused by NATS and says which flag fixes it.
func TestCLIFindsCredentialsInDefaultDataDir(t *testing.T) {
	work := t.TempDir()
	srv := startProcIn(t, work, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1", "--echo-agent=false")
	m := srv.line(readyLine)
	natsURL := m[2]
	creds := srv.line(regexp.MustCompile(`^NATS credentials are in (\S+) `))
	if want := filepath.Join("parley-data", "auth"); creds[1] != want {
		t.Errorf("credentials reported in %q, want %q", creds[1], want)
	}
	e := envAt(t, strings.Replace(m[1], "localhost", "127.0.0.1", 1))

	agent := startProcIn(t, work, "agent", "echo", "--nats-url", natsURL)
	agent.line(regexp.MustCompile(`^echo agent: 1 worker\(s\) serving "echo"`))
	s := e.NewSession(nil)
	if r := e.Post(s, "no set-up", "", true); r.Status != 200 || r.Body["reply"].(map[string]any)["body"] != "echo: no set-up" {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}

	// Rooms are published every ops.room_update_interval.
	var out []byte
	agenttest.Poll(t, 10*time.Second, "the room in parley rooms", func() bool {
		cmd := exec.Command(parleyBinary(t), "rooms", "--json", "--nats-url", natsURL)
		cmd.Dir, cmd.Env = work, cleanEnv()
		var err error
		out, err = cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("rooms in the serve's directory: %v\n%s", err, out)
		}
		return strings.Contains(string(out), s.ConversationID)
	})

	cmd := exec.Command(parleyBinary(t), "rooms", "--nats-url", natsURL)
	cmd.Dir, cmd.Env = t.TempDir(), cleanEnv()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("rooms without credentials: %v after %s: %s", err, time.Since(start).Round(time.Millisecond), out)
	if err == nil || !strings.Contains(string(out), "Authorization Violation") || !strings.Contains(string(out), "--data-dir") {
		t.Fatalf("rooms without credentials: %v\n%s", err, out)
	}
}

// natsSeeds returns every nkey seed under dataDir/auth: the operator's,
// the accounts' and each .creds file's user seed, by file name.
func natsSeeds(t testing.TB, dataDir string) map[string]string {
	t.Helper()
	dir := broker.AuthDir(dataDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		switch filepath.Ext(ent.Name()) {
		case ".nk":
			out[ent.Name()] = strings.TrimSpace(string(b))
		case ".creds":
			kp, err := jwt.ParseDecoratedNKey(b)
			if err != nil {
				t.Fatalf("%s: %v", ent.Name(), err)
			}
			seed, err := kp.Seed()
			if err != nil {
				t.Fatal(err)
			}
			out[ent.Name()] = string(seed)
		}
	}
	if len(out) < 5 {
		t.Fatalf("found %d seeds in %s, want the operator's, two accounts' and the users'", len(out), dir)
	}
	return out
}

// TestNATSSecretsNotLoggedFullRun runs `parley serve` at debug level
// against external NATS servers that want a password, then a token in the
// URL, and on its embedded server, and looks for each password, token and
// seed in everything it printed.
func TestNATSSecretsNotLoggedFullRun(t *testing.T) {
	const password, token = "pw-DO-NOT-LOG-4711", "tok-DO-NOT-LOG-0815"
	run := func(dataDir string, vars ...string) string {
		t.Helper()
		p := startProcEnv(t, vars, "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1",
			"--log-level", "debug", "--log-format", "json")
		m := p.line(readyLine)
		e := envAt(t, strings.Replace(m[1], "localhost", "127.0.0.1", 1))
		s := e.NewSession(nil)
		if r := e.Post(s, "hello", "", true); r.Status != 200 {
			t.Fatalf("post: %d %s", r.Status, r.Raw)
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(); code != 0 {
			t.Fatalf("exit %d", code)
		}
		logs := p.stderr.String()
		if !strings.Contains(logs, `"level":"DEBUG"`) || !strings.Contains(logs, "starting parley") {
			t.Fatal("no debug logs: the check would prove nothing")
		}
		return logs
	}
	userSrv := natsServerWith(t, func(o *server.Options) { o.Username, o.Password = "parley", password })
	tokenSrv := natsServerWith(t, func(o *server.Options) { o.Authorization = token })
	host := strings.TrimPrefix(tokenSrv, "nats://")
	logs := run(t.TempDir(), "PARLEY_NATS_URL="+userSrv, "PARLEY_NATS_USER=parley", "PARLEY_NATS_PASSWORD="+password) +
		run(t.TempDir(), "PARLEY_NATS_URL=nats://"+token+"@"+host) +
		run(t.TempDir(), "PARLEY_NATS_URL="+tokenSrv, "PARLEY_NATS_TOKEN="+token)
	dir := t.TempDir()
	logs += run(dir)
	secrets := map[string]string{"password": password, "token": token}
	for name, seed := range natsSeeds(t, dir) {
		secrets["seed "+name] = seed
	}
	for name, s := range secrets {
		if i := strings.Index(logs, s); i >= 0 {
			t.Errorf("the %s appears in the logs: …%s…", name, logs[max(0, i-300):min(len(logs), i+100)])
		}
	}
}

// natsServerWith starts a JetStream nats-server on an ephemeral loopback
// port, changed by tune, and returns its URL.
func natsServerWith(t testing.TB, tune func(*server.Options)) string {
	t.Helper()
	return agenttest.RunNATS(t, tune).ClientURL()
}
