package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// violations collects the asynchronous errors NATS reports to a client
// ("Permissions Violation for Publish to …"), so a test can wait for the
// one naming a subject.
type violations struct {
	mu    sync.Mutex
	errs  []string
	added chan struct{} // closed (and replaced) when an error arrives
}

func (v *violations) handler() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.errs = append(v.errs, err.Error())
		if v.added != nil {
			close(v.added)
			v.added = nil
		}
	})
}

// wait fails the test unless NATS refuses op ("Publish" or
// "Subscription") on subject within a few seconds.
func (v *violations) wait(t *testing.T, op, subject string) {
	t.Helper()
	want := `permissions violation for ` + strings.ToLower(op) + ` to "` + strings.ToLower(subject) + `"`
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		v.mu.Lock()
		found := slices.ContainsFunc(v.errs, func(e string) bool { return strings.Contains(strings.ToLower(e), want) })
		if v.added == nil {
			v.added = make(chan struct{})
		}
		added := v.added
		v.mu.Unlock()
		if found {
			return
		}
		select {
		case <-added:
		case <-deadline.C:
			t.Errorf("NATS did not refuse %s to %q", op, subject)
			return
		}
	}
}

// count is the number of violations seen so far.
func (v *violations) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.errs)
}

// token marks the test's own publishes: the broker's traffic on the same
// subjects ($JS.API.INFO, status) is not the agent's.
const token = "alpha-was-here"

// recorder is a full-permission subscription on ">": every subject on
// which a message carrying token reached the server's routing.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *recorder) has(subject string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.seen, subject)
}

// TestAgentCredsConfinedByNATS: credentials issued for agent "alpha" while
// the server runs (no restart) connect, and NATS itself — not Parley —
// confines them to alpha's namespace (V2.md, "Agent A's NATS permissions"):
// alpha cannot subscribe to beta's dispatch, conversation events, audio or
// inbox, publish into beta's namespace, forge dispatches or stored events
// of its own, touch the conversation log (P.conv.>), read or write any KV
// bucket or call the JetStream API; it can use every subject of its own,
// answer the broker's dispatch request once, and receive replies to its
// requests on its inbox prefix.
func TestAgentCredsConfinedByNATS(t *testing.T) {
	b := startBroker(t)
	s := b.Subjects()
	const cid = "conv_isolation1"

	// Issued by a tool on the data directory after the server started.
	path, err := EnsureAgentCreds(b.cfg.DataDir, b.cfg.NATS.Prefix, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	// And through the broker, as the admin API does.
	betaCreds, err := b.AgentCredentials("beta")
	if err != nil {
		t.Fatal(err)
	}
	var v violations
	alpha, err := nats.Connect(b.NATSClientURL(), nats.UserCredentials(path), nats.CustomInboxPrefix(s.Inbox("alpha")), v.handler())
	if err != nil {
		t.Fatalf("alpha's credentials, issued while the server runs: %v", err)
	}
	t.Cleanup(alpha.Close)
	bo, err := credsBytesOption(betaCreds)
	if err != nil {
		t.Fatal(err)
	}
	beta, err := nats.Connect(b.NATSClientURL(), bo, nats.CustomInboxPrefix(s.Inbox("beta")))
	if err != nil {
		t.Fatalf("beta's credentials: %v", err)
	}
	t.Cleanup(beta.Close)

	// A full-permission observer of everything routed.
	op := connectAs(t, b, RoleBroker)
	var rec recorder
	if _, err := op.Subscribe(">", func(m *nats.Msg) {
		if !strings.Contains(string(m.Data), token) {
			return
		}
		rec.mu.Lock()
		rec.seen = append(rec.seen, m.Subject)
		rec.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := op.Flush(); err != nil {
		t.Fatal(err)
	}

	t.Run("refused subscriptions", func(t *testing.T) {
		refused := []string{
			s.Dispatch("beta"), s.ConvEvent("beta", cid), s.ConvEvent("beta", "*"), s.InAudio("beta", cid),
			s.Inbox("beta") + ".>", s.Heartbeat("alpha"), s.Append("alpha"), s.Dispatch("alpha") + ".x",
			s.Prefix + ".agents.>", s.Prefix + ".agents.*.dispatch", s.AnyConvEvent(cid),
			s.Prefix + ".conv.>", s.Events(cid), s.OutEvent(cid), s.Status(cid),
			"$KV.>", "$KV." + s.Bucket("sessions") + ".>", "$KV." + s.Bucket("secrets") + ".>",
			"$JS.API.>", "_INBOX.>", ">",
		}
		var subs []*nats.Subscription
		for _, subj := range refused {
			sub, err := alpha.SubscribeSync(subj)
			if err != nil {
				t.Fatalf("subscribe %s: %v", subj, err)
			}
			subs = append(subs, sub)
		}
		for _, subj := range refused {
			v.wait(t, "Subscription", subj)
		}
		// Nothing published there reaches alpha: publish to each, then a
		// marker on alpha's own inbox (same publisher, so in order).
		for _, subj := range []string{s.Dispatch("beta"), s.ConvEvent("beta", cid), s.InAudio("beta", cid),
			s.Inbox("beta") + ".x", s.OutEvent(cid), "_INBOX.x"} {
			if err := op.Publish(subj, []byte("secret")); err != nil {
				t.Fatal(err)
			}
		}
		marker, err := alpha.SubscribeSync(s.Inbox("alpha") + ".marker")
		if err != nil || alpha.Flush() != nil {
			t.Fatal(err)
		}
		if err := op.Publish(s.Inbox("alpha")+".marker", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := marker.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("alpha's own inbox: %v", err)
		}
		for i, sub := range subs {
			if n, _, _ := sub.Pending(); n != 0 {
				t.Errorf("alpha received %d message(s) on %s", n, refused[i])
			}
			_ = sub.Unsubscribe()
		}
		_ = marker.Unsubscribe()
	})

	t.Run("refused publishes", func(t *testing.T) {
		refused := []string{
			// beta's namespace
			s.Heartbeat("beta"), s.Append("beta"), s.AppendTo("beta", "brk_x"), s.Read("beta"), s.Upload("beta"),
			s.OutAudio("beta", cid), s.Dispatch("beta"), s.Inbox("beta") + ".x",
			// forgeries inside its own namespace
			s.Dispatch("alpha"), s.ConvEvent("alpha", cid), s.InAudio("alpha", cid), s.Inbox("alpha") + ".x",
			// the log and the brokers' subjects
			s.OutEvent(cid), s.InEvent(cid), s.Status(cid), s.Room(cid),
			// KV buckets and the JetStream API
			"$KV." + s.Bucket("keys") + ".forged", "$KV." + s.Bucket("sessions") + ".x",
			"$JS.API.INFO", "$JS.API.STREAM.INFO." + s.StreamName(), "$JS.API.STREAM.LIST",
			"$JS.API.CONSUMER.CREATE." + s.StreamName(), "$JS.API.CONSUMER.CREATE." + s.StreamName() + ".c1." + s.OutEvent(cid),
			"$JS.API.DIRECT.GET.KV_" + s.Bucket("sessions"), "$JS.API.DIRECT.GET.KV_" + s.Bucket("secrets"),
			"$JS.API.STREAM.MSG.GET.KV_" + s.Bucket("sessions"), "$JS.API.STREAM.PURGE." + s.StreamName(),
			// replies outside its inbox, unless answering a request
			"_INBOX.x",
		}
		for _, subj := range refused {
			if err := alpha.PublishRequest(subj, s.Inbox("alpha")+".r", []byte(token)); err != nil {
				t.Fatalf("publish %s: %v", subj, err)
			}
		}
		for _, subj := range refused {
			v.wait(t, "Publish", subj)
		}
		// A marker on an allowed subject: once the observer has it,
		// anything NATS had routed before it is recorded.
		if err := alpha.Publish(s.Heartbeat("alpha"), []byte(token)); err != nil {
			t.Fatal(err)
		}
		agenttest.Poll(t, 5*time.Second, "the marker", func() bool { return rec.has(s.Heartbeat("alpha")) })
		for _, subj := range refused {
			if rec.has(subj) {
				t.Errorf("NATS routed alpha's publish to %s", subj)
			}
		}
		// What a JetStream client sees: the API does not answer.
		js, err := jetstream.New(alpha)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := js.AccountInfo(ctx); err == nil {
			t.Error("alpha reached the JetStream API")
		}
		if _, err := js.KeyValue(ctx, s.Bucket("sessions")); err == nil {
			t.Error("alpha opened the sessions bucket")
		}
	})

	t.Run("own subjects", func(t *testing.T) {
		before := v.count()
		// Subscriptions: what the broker publishes to alpha arrives.
		own := map[string]string{
			s.Dispatch("alpha"):           s.Dispatch("alpha"),
			s.ConvEvent("alpha", "*"):     s.ConvEvent("alpha", cid),
			s.InAudio("alpha", "*"):       s.InAudio("alpha", cid),
			s.Inbox("alpha") + ".>":       s.Inbox("alpha") + ".abc.1",
			s.ConvEvent("alpha", "conv2"): s.ConvEvent("alpha", "conv2"),
		}
		subs := map[string]*nats.Subscription{}
		for filter := range own {
			sub, err := alpha.SubscribeSync(filter)
			if err != nil {
				t.Fatal(err)
			}
			subs[filter] = sub
		}
		qsub, err := alpha.QueueSubscribeSync(s.Dispatch("alpha"), "alpha")
		if err != nil {
			t.Fatal(err)
		}
		if err := alpha.Flush(); err != nil {
			t.Fatal(err)
		}
		for filter, subj := range own {
			if err := op.Publish(subj, []byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := subs[filter].NextMsg(5 * time.Second); err != nil {
				t.Errorf("alpha did not receive %s on %s: %v", subj, filter, err)
			}
		}
		// Publishes: each reaches the broker's side.
		mine := []string{s.Heartbeat("alpha"), s.Append("alpha"), s.AppendTo("alpha", "brk_x"), s.Read("alpha"), s.Upload("alpha"), s.OutAudio("alpha", cid)}
		for _, subj := range mine {
			if err := alpha.Publish(subj, []byte(token)); err != nil {
				t.Fatal(err)
			}
		}
		for _, subj := range mine {
			agenttest.Poll(t, 5*time.Second, subj, func() bool { return rec.has(subj) })
		}

		_ = qsub.Unsubscribe()
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}

		// Answering the broker's dispatch request (allow_responses), once.
		reqs := make(chan *nats.Msg, 1)
		dsub, err := alpha.ChanSubscribe(s.Dispatch("alpha"), reqs)
		if err != nil || alpha.Flush() != nil {
			t.Fatal(err)
		}
		defer dsub.Unsubscribe()
		type reply struct {
			m   *nats.Msg
			err error
		}
		got := make(chan reply, 1)
		go func() {
			m, err := op.Request(s.Dispatch("alpha"), []byte(`{"v":2}`), 5*time.Second)
			got <- reply{m, err}
		}()
		var req *nats.Msg
		for req == nil || req.Reply == "" {
			select {
			case req = <-reqs:
			case <-time.After(5 * time.Second):
				t.Fatal("the dispatch request did not arrive")
			}
		}
		if !strings.HasPrefix(req.Reply, nats.InboxPrefix) {
			t.Fatalf("the broker's reply subject %q is not under _INBOX.", req.Reply)
		}
		if err := req.Respond([]byte(`{"v":2,"accepted":true}`)); err != nil {
			t.Fatal(err)
		}
		r := <-got
		if r.err != nil || string(r.m.Data) != `{"v":2,"accepted":true}` {
			t.Fatalf("dispatch reply: %v %v", r.m, r.err)
		}
		// allow_responses max 1: a second answer is refused.
		if err := req.Respond([]byte("again")); err != nil {
			t.Fatal(err)
		}
		v.wait(t, "Publish", req.Reply)

		// Requests: the broker's reply comes back on alpha's inbox.
		rsub, err := op.Subscribe(s.AppendTo("alpha", "brk_test"), func(m *nats.Msg) {
			if !strings.HasPrefix(m.Reply, s.Inbox("alpha")+".") {
				_ = m.Respond([]byte("wrong inbox " + m.Reply))
				return
			}
			_ = m.Respond([]byte(`{"seq":1}`))
		})
		if err != nil || op.Flush() != nil {
			t.Fatal(err)
		}
		defer rsub.Unsubscribe()
		m, err := alpha.Request(s.AppendTo("alpha", "brk_test"), []byte(`{"v":2}`), 5*time.Second)
		if err != nil || string(m.Data) != `{"seq":1}` {
			t.Fatalf("append request: %v %v", m, err)
		}
		// Only the second dispatch answer was refused.
		v.mu.Lock()
		extra := slices.Clone(v.errs[before:])
		v.mu.Unlock()
		for _, e := range extra {
			if !strings.Contains(e, req.Reply) {
				t.Errorf("NATS refused alpha's own traffic: %s", e)
			}
		}
	})
}

// TestAgentCredsReissued: an agent's credentials carrying other
// permissions (an older protocol's, another prefix's) are issued again
// with protocol v2's; current ones are kept; a name that is not one
// subject token is refused.
func TestAgentCredsReissued(t *testing.T) {
	dir := t.TempDir()
	b := startBrokerOn(t, dir)
	defer b.Close()
	p := CredsPath(dir, AgentRole("gamma"))
	var v1 jwt.Permissions
	v1.Pub.Allow.Add("parley.>", "_INBOX.>", "$JS.API.INFO")
	v1.Sub.Allow.Add("parley.>", "_INBOX.>")
	old, err := b.auth.issueUser("parley-agent-gamma", v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeSecretOnce(p, old, false); err != nil {
		t.Fatal(err)
	}
	got, err := EnsureAgentCreds(dir, "parley", "gamma")
	if err != nil || got != p {
		t.Fatalf("EnsureAgentCreds = %q, %v", got, err)
	}
	now, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(now) == string(old) || !b.auth.current(now, agentPermissions("parley", "gamma")) {
		t.Fatal("credentials with protocol v1's permissions were kept")
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("re-issued file: %v %v", fi.Mode(), err)
	}
	// Current ones are kept, by the CLI's path and by the broker's.
	if _, err := EnsureAgentCreds(dir, "parley", "gamma"); err != nil {
		t.Fatal(err)
	}
	viaBroker, err := b.AgentCredentials("gamma")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(p)
	if string(again) != string(now) || string(viaBroker) != string(now) {
		t.Fatal("current credentials were issued again")
	}
	// Another prefix: other permissions, issued again.
	if _, err := EnsureAgentCreds(dir, "acme", "gamma"); err != nil {
		t.Fatal(err)
	}
	other, _ := os.ReadFile(p)
	if !b.auth.current(other, agentPermissions("acme", "gamma")) {
		t.Fatal("credentials of another prefix were kept")
	}

	for _, bad := range []string{"", "a.b", "*", ">", "a b", "a/../b", strings.Repeat("x", 129)} {
		if _, err := EnsureAgentCreds(dir, "parley", bad); !errors.Is(err, ErrValidation) {
			t.Errorf("EnsureAgentCreds(%q): %v, want ErrValidation", bad, err)
		}
		if _, err := b.AgentCredentials(bad); !errors.Is(err, ErrValidation) {
			t.Errorf("AgentCredentials(%q): %v, want ErrValidation", bad, err)
		}
		if _, err := AgentPermissions("parley", bad); !errors.Is(err, ErrValidation) {
			t.Errorf("AgentPermissions(%q): %v, want ErrValidation", bad, err)
		}
	}
	ents, _ := os.ReadDir(AuthDir(dir))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "agent-") && e.Name() != "agent-gamma.creds" && e.Name() != "agent-echo.creds" {
			t.Errorf("a refused name left %s", e.Name())
		}
	}
}

// TestAgentClientOptionsInbox: an in-process agent (the echo agent, tests)
// connecting with ClientOptions gets the agent's inbox prefix, so its
// requests' replies reach it.
func TestAgentClientOptionsInbox(t *testing.T) {
	b := startBroker(t)
	nc := connectAs(t, b, AgentRole("delta"))
	if in := nc.NewRespInbox(); !strings.HasPrefix(in, b.Subjects().Inbox("delta")+".") {
		t.Fatalf("inbox %q, want under %s", in, b.Subjects().Inbox("delta"))
	}
	if _, err := b.ClientOptions(AgentRole("a.b")); !errors.Is(err, ErrValidation) {
		t.Fatalf("ClientOptions of a bad agent name: %v", err)
	}
}

// TestAgentPermissionsExact pins agent A's permission set to V2.md's list.
func TestAgentPermissionsExact(t *testing.T) {
	p, err := AgentPermissions("acme", "sales")
	if err != nil {
		t.Fatal(err)
	}
	wantPub := []string{"acme.agents.sales.heartbeat", "acme.agents.sales.append", "acme.agents.sales.append.*",
		"acme.agents.sales.read", "acme.agents.sales.upload", "acme.agents.sales.conv.*.out.audio"}
	wantSub := []string{"acme.agents.sales.dispatch", "acme.agents.sales.conv.*.event",
		"acme.agents.sales.conv.*.in.audio", "acme.agents.sales.inbox.>"}
	if !slices.Equal(p.Publish, wantPub) || !slices.Equal(p.Subscribe, wantSub) {
		t.Fatalf("permissions:\npub %v\nsub %v", p.Publish, p.Subscribe)
	}
	if p.AllowResponses.MaxMsgs != 1 || p.AllowResponses.Expires != "1m0s" ||
		p.Namespace != "acme.agents.sales.>" || p.InboxPrefix != "acme.agents.sales.inbox" {
		t.Fatalf("%+v", p)
	}
	jp := agentPermissions("acme", "sales")
	if len(jp.Pub.Deny) != 0 || len(jp.Sub.Deny) != 0 || jp.Resp == nil || jp.Resp.MaxMsgs != 1 || jp.Resp.Expires != AgentResponseExpiry {
		t.Fatalf("jwt permissions: %+v", jp)
	}
}

// TestAgentPermissionsServerConfig: the block printed for an external
// cluster is valid nats-server configuration that yields exactly the
// permissions Parley's own credentials carry, and a server configured with
// it confines the agent the same way.
func TestAgentPermissionsServerConfig(t *testing.T) {
	p, err := AgentPermissions("parley", "sales")
	if err != nil {
		t.Fatal(err)
	}
	conf := "listen: \"127.0.0.1:-1\"\nauthorization {\n  users = [\n    { user: \"sales\", password: \"pw\"\n" +
		indent(p.ServerConfig(), "      ") + "    }\n  ]\n}\n"
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the block: %v\n%s", err, conf)
	}
	if len(opts.Users) != 1 || opts.Users[0].Permissions == nil {
		t.Fatalf("users: %+v", opts.Users)
	}
	got := opts.Users[0].Permissions
	jp := agentPermissions("parley", "sales")
	if !slices.Equal(got.Publish.Allow, []string(jp.Pub.Allow)) || !slices.Equal(got.Subscribe.Allow, []string(jp.Sub.Allow)) ||
		got.Response == nil || got.Response.MaxMsgs != jp.Resp.MaxMsgs || got.Response.Expires != jp.Resp.Expires ||
		len(got.Publish.Deny) != 0 || len(got.Subscribe.Deny) != 0 {
		t.Fatalf("parsed permissions differ: pub %+v sub %+v resp %+v", got.Publish, got.Subscribe, got.Response)
	}

	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats did not start")
	}
	var v violations
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("sales", "pw"), nats.CustomInboxPrefix(p.InboxPrefix), v.handler())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.SubscribeSync("parley.agents.support.dispatch"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("$JS.API.INFO", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync("parley.agents.sales.dispatch"); err != nil || nc.Flush() != nil {
		t.Fatal(err)
	}
	v.wait(t, "Subscription", "parley.agents.support.dispatch")
	v.wait(t, "Publish", "$JS.API.INFO")
	if v.count() != 2 {
		t.Fatalf("violations: %v", v.errs)
	}
}

func indent(s, pre string) string {
	lines := strings.SplitAfter(strings.TrimSuffix(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pre + l
	}
	return strings.Join(lines, "") + "\n"
}
