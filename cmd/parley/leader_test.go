package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// leaderKill configures one run of the leader-loss scenario.
type leaderKill struct {
	conversations int
	interval      time.Duration // between a visitor's messages
	before        time.Duration // traffic before the kill
	after         time.Duration // traffic after the kill
	// kill9 runs the cluster as nats-server processes and kills the
	// leader's with SIGKILL; otherwise the nodes are in-process and the
	// leader's is shut down.
	kill9 bool
}

// leaderNode is a NATS node the scenario can kill.
type leaderNode struct {
	name    string
	kill    func()
	clients func() []string // names of Parley's clients connected to it
}

// leaderMsg is one visitor message of the scenario and what became of it.
type leaderMsg struct {
	conv, idx int
	text      string
	sent      time.Time // first sent
	acked     time.Time // first ack
	seq       uint64    // log position from the ack
	done      time.Time // first done frame of its reply
	replies   map[string]int
	resent    int
}

// leaderConv is one conversation's visitor: a WebSocket that posts every
// interval and records acks and replies.
type leaderConv struct {
	idx  int
	s    session
	conn *websocket.Conn

	mu      sync.Mutex
	msgs    []*leaderMsg
	byText  map[string]*leaderMsg
	byID    map[string]*leaderMsg // client_message_id
	doneSeq []*leaderMsg          // messages in the order their replies arrived
	replyAt []time.Time           // arrival of every first done frame
	errs    []string
}

// leaderResult is what one run measured.
type leaderResult struct {
	killed, connectedTo string
	kill                time.Time
	election            time.Duration // kill → a new stream leader
	stall               time.Duration // longest gap without a reply, any conversation
	ackGap              time.Duration // longest gap without an ack, any conversation
	ackToReply          time.Duration // max ack → reply for messages acked after the kill
	postToReply         []time.Duration
	postToAck           []time.Duration
	messages, resent    int
}

func (r leaderResult) String() string {
	pct := agenttest.Percentile[time.Duration]
	return fmt.Sprintf("killed %s (broker on %s): election %v, reply stall %v, ack gap %v, max ack→reply %v, "+
		"post→reply p50 %v p99 %v max %v, post→ack p50 %v p99 %v, %d messages after the kill (%d resent)",
		r.killed, r.connectedTo, r.election.Round(time.Millisecond), r.stall.Round(time.Millisecond),
		r.ackGap.Round(time.Millisecond), r.ackToReply.Round(time.Millisecond),
		pct(r.postToReply, 0.5).Round(time.Millisecond), pct(r.postToReply, 0.99).Round(time.Millisecond),
		pct(r.postToReply, 1).Round(time.Millisecond),
		pct(r.postToAck, 0.5).Round(time.Millisecond), pct(r.postToAck, 0.99).Round(time.Millisecond),
		r.messages, r.resent)
}

// runLeaderKill runs Parley (one broker, its echo worker) on a 3-node
// cluster with an R3 conversation stream, keeps several visitors posting,
// shuts down the node that leads the conversation stream, and measures
// what the visitors saw. It fails the test when a message is lost,
// answered twice or out of order.
func runLeaderKill(t testing.TB, o leaderKill) (leaderResult, *env) {
	t.Helper()
	var nodes []leaderNode
	var urls string
	if o.kill9 {
		nodes, urls = natsProcCluster(t)
	} else {
		var cluster []*clusterNode
		urls, cluster = natsClusterNodes(t)
		for _, c := range cluster {
			n := c.srv
			nodes = append(nodes, leaderNode{name: n.Name(), kill: n.Shutdown, clients: func() []string { return clientsOf(n) }})
		}
	}
	e := startEnv(t, func(c *configs.Config) {
		c.NATS.URL = urls
		c.NATS.Replicas = 3
		c.Chat.ReplyTimeout = 60 * time.Second
	})
	mon, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mon.Close)
	js, err := jetstream.New(mon)
	if err != nil {
		t.Fatal(err)
	}
	stream := agentbridge.NewSubjects(e.cfg.NATS.Prefix).StreamName()

	convs := make([]*leaderConv, o.conversations)
	for i := range convs {
		s := e.NewSession(nil)
		ws := e.MustDialWS(s)
		convs[i] = &leaderConv{idx: i, s: s, conn: ws.Conn, byText: map[string]*leaderMsg{}, byID: map[string]*leaderMsg{}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range convs {
		wg.Add(1)
		go func() { defer wg.Done(); c.read(ctx) }()
	}
	// Warm up: one answered turn each, so the worker holds every
	// conversation and the broker has a live feed for each.
	for _, c := range convs {
		c.post(ctx, -1)
	}
	agenttest.Poll(t, 30*time.Second, "the warm-up replies", func() bool {
		for _, c := range convs {
			if c.replied() < 1 {
				return false
			}
		}
		return true
	})

	stopSend := make(chan struct{})
	var senders sync.WaitGroup
	for _, c := range convs {
		senders.Add(1)
		go func() {
			defer senders.Done()
			tick := time.NewTicker(o.interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				c.post(ctx, i)
				select {
				case <-stopSend:
					return
				case <-tick.C:
				}
			}
		}()
	}
	before := time.NewTimer(o.before)
	<-before.C

	// Kill the stream leader.
	ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := js.Stream(ictx, stream)
	icancel()
	if err != nil || info.CachedInfo().Cluster == nil {
		t.Fatalf("stream info: %v", err)
	}
	leader := info.CachedInfo().Cluster.Leader
	var victim *leaderNode
	var on []string
	for i, n := range nodes {
		if n.name == leader {
			victim = &nodes[i]
		}
		for _, c := range n.clients() {
			on = append(on, c+"@"+n.name)
		}
	}
	if victim == nil {
		t.Fatalf("no node named %q leads %s", leader, stream)
	}
	slices.Sort(on)
	res := leaderResult{killed: leader, connectedTo: strings.Join(on, " ")}
	res.kill = time.Now()
	victim.kill()
	t.Logf("%s killed in %v", leader, time.Since(res.kill).Round(time.Millisecond))
	agenttest.Poll(t, 60*time.Second, "a new stream leader", func() bool {
		ictx, icancel := context.WithTimeout(ctx, time.Second)
		defer icancel()
		info, err := js.Stream(ictx, stream)
		if err != nil || info.CachedInfo().Cluster == nil {
			return false
		}
		l := info.CachedInfo().Cluster.Leader
		return l != "" && l != leader
	})
	res.election = time.Since(res.kill)
	if rest := o.after - time.Since(res.kill); rest > 0 {
		after := time.NewTimer(rest)
		<-after.C
	}
	close(stopSend)
	senders.Wait()
	agenttest.Poll(t, 60*time.Second, "every message answered", func() bool {
		for _, c := range convs {
			if c.replied() < c.sent() {
				return false
			}
		}
		return true
	})
	// Late duplicates would arrive within a moment; the history check
	// below reads the log, which has them all.
	cancel()
	wg.Wait()

	for _, c := range convs {
		c.check(t, e)
		c.measure(&res)
	}
	return res, e
}

// clientsOf names the Parley NATS clients connected to an in-process node.
func clientsOf(n *server.Server) []string {
	cz, err := n.Connz(&server.ConnzOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, c := range cz.Conns {
		if strings.HasPrefix(c.Name, "parley-") {
			out = append(out, c.Name)
		}
	}
	return out
}

// natsServerBinary builds nats-server (the version in go.mod) once.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	return natsServerBin.get(t, "github.com/nats-io/nats-server/v2", "nats-server")
}

// natsProcCluster runs a 3-node JetStream cluster of nats-server processes
// on loopback, so a node can be killed with SIGKILL.
func natsProcCluster(t testing.TB) ([]leaderNode, string) {
	t.Helper()
	bin := natsServerBinary(t)
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	var clientPorts, routePorts []int
	var routes []string
	for range 3 {
		clientPorts, routePorts = append(clientPorts, free()), append(routePorts, free())
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[len(routePorts)-1]))
	}
	var nodes []leaderNode
	var urls []string
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		cmd := exec.Command(bin, "-n", name, "-a", "127.0.0.1", "-p", fmt.Sprint(clientPorts[i]),
			"-js", "-sd", t.TempDir(), "--cluster_name", "parley-test",
			"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]), "--routes", strings.Join(routes, ","))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		kill := func() { _ = cmd.Process.Signal(syscall.SIGKILL); <-exited }
		t.Cleanup(kill)
		nodes = append(nodes, leaderNode{name: name, kill: kill, clients: func() []string { return nil }})
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
	}
	all := strings.Join(urls, ",")
	waitClusterJetStream(t, all) // it also waits for the processes to accept connections
	return nodes, all
}

// post sends message idx (-1: the warm-up) as a new message.
func (c *leaderConv) post(ctx context.Context, idx int) {
	m := &leaderMsg{conv: c.idx, idx: idx, text: fmt.Sprintf("c%d-m%d", c.idx, idx), replies: map[string]int{}}
	cid := fmt.Sprintf("cm-%d-%d", c.idx, idx)
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.byText[m.text] = m
	c.byID[cid] = m
	m.sent = time.Now()
	c.mu.Unlock()
	c.write(ctx, m.text, cid)
}

func (c *leaderConv) write(ctx context.Context, text, cid string) {
	data, _ := json.Marshal(map[string]any{"type": "message", "body": text, "client_message_id": cid})
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.conn.Write(wctx, websocket.MessageText, data); err != nil && ctx.Err() == nil {
		c.mu.Lock()
		c.errs = append(c.errs, "write: "+err.Error())
		c.mu.Unlock()
	}
}

// read records acks and replies until ctx is done. A message the broker
// could not store is sent again with the same client_message_id, as the
// widget does.
func (c *leaderConv) read(ctx context.Context) {
	for {
		_, data, err := c.conn.Read(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.mu.Lock()
				c.errs = append(c.errs, "read: "+err.Error())
				c.mu.Unlock()
			}
			return
		}
		now := time.Now()
		var f struct {
			Type            string `json:"type"`
			ClientMessageID string `json:"client_message_id"`
			MessageID       string `json:"message_id"`
			Seq             uint64 `json:"seq"`
			Body            string `json:"body"`
			Code            string `json:"code"`
		}
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		c.mu.Lock()
		var resend *leaderMsg
		switch f.Type {
		case "ack":
			if m := c.byID[f.ClientMessageID]; m != nil && m.acked.IsZero() {
				m.acked, m.seq = now, f.Seq
			}
		case "done":
			if m := c.byText[strings.TrimPrefix(f.Body, "echo: ")]; m != nil {
				m.replies[f.MessageID]++
				if m.done.IsZero() {
					m.done = now
					c.doneSeq = append(c.doneSeq, m)
					c.replyAt = append(c.replyAt, now)
				}
			}
		case "error":
			if m := c.byID[f.ClientMessageID]; m != nil && f.Code != "AGENT_UNAVAILABLE" && m.acked.IsZero() {
				m.resent++
				resend = m
			}
		}
		c.mu.Unlock()
		if resend != nil {
			c.write(ctx, resend.text, f.ClientMessageID)
		}
	}
}

func (c *leaderConv) sent() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *leaderConv) replied() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.doneSeq)
}

// check: every message stored once and answered once, replies in log
// order, and the transcript holds each turn exactly once.
func (c *leaderConv) check(t testing.TB, e *env) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		t.Errorf("conversation %d: %s", c.idx, err)
	}
	for _, m := range c.msgs {
		if m.acked.IsZero() || m.done.IsZero() || len(m.replies) != 1 {
			t.Errorf("conversation %d: %s acked %v, replies %v", c.idx, m.text, !m.acked.IsZero(), m.replies)
		}
	}
	for i := 1; i < len(c.doneSeq); i++ {
		if c.doneSeq[i].seq < c.doneSeq[i-1].seq {
			t.Errorf("conversation %d: reply to %s (seq %d) came after the reply to %s (seq %d)", c.idx,
				c.doneSeq[i].text, c.doneSeq[i].seq, c.doneSeq[i-1].text, c.doneSeq[i-1].seq)
		}
	}
	// The log interleaves visitor messages and replies; each message is
	// there once, in ack order, and so is its reply, after it.
	byLog := slices.Clone(c.msgs)
	slices.SortFunc(byLog, func(a, b *leaderMsg) int { return int(a.seq) - int(b.seq) })
	var want []string
	for _, m := range byLog {
		want = append(want, m.text)
	}
	var visitor, agent []string
	for _, l := range signalingtest.Transcript(e.History(c.s)) {
		if text, ok := strings.CutPrefix(l, "visitor: "); ok {
			visitor = append(visitor, text)
		} else if text, ok := strings.CutPrefix(l, "agent: echo: "); ok {
			if !slices.Contains(visitor, text) {
				t.Errorf("conversation %d: reply to %s before it in the log", c.idx, text)
			}
			agent = append(agent, text)
		}
	}
	if !slices.Equal(visitor, want) || !slices.Equal(agent, want) {
		t.Errorf("conversation %d: the log has %d messages and %d replies, want %d each, once, in order\nmessages %q\nreplies  %q\nwant     %q",
			c.idx, len(visitor), len(agent), len(want), visitor, agent, want)
	}
}

// measure adds this conversation's figures for the time after the kill.
func (c *leaderConv) measure(r *leaderResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gap := func(ts []time.Time) time.Duration {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		var longest time.Duration
		prev := r.kill
		for _, t := range ts {
			if t.Before(r.kill) {
				prev = t // the last event before the kill starts the first gap
				continue
			}
			longest = max(longest, t.Sub(prev))
			prev = t
		}
		return longest
	}
	var acks []time.Time
	for _, m := range c.msgs {
		acks = append(acks, m.acked)
		if m.sent.Before(r.kill) && m.done.Before(r.kill) {
			continue
		}
		r.messages++
		r.resent += m.resent
		r.postToReply = append(r.postToReply, m.done.Sub(m.sent))
		r.postToAck = append(r.postToAck, m.acked.Sub(m.sent))
		if m.acked.After(r.kill) {
			r.ackToReply = max(r.ackToReply, m.done.Sub(m.acked))
		}
	}
	r.stall = max(r.stall, gap(slices.Clone(c.replyAt)))
	r.ackGap = max(r.ackGap, gap(acks))
}

// logFeedEvents summarises what Parley logged about the loss (feed stalls
// and recoveries, store retries, NATS reconnects, other warnings), grouped
// by message, with times relative to the kill. Benchmarks keep only a few
// log lines, hence the grouping.
func logFeedEvents(t testing.TB, e *env, kill time.Time) {
	t.Helper()
	type group struct {
		n                 int
		first, last       time.Duration
		stalled, recovery time.Duration
		attempts          int
		causes            map[string]bool
	}
	groups := map[string]*group{}
	var keys []string
	for _, l := range strings.Split(e.logs.String(), "\n") {
		var r struct {
			Time     time.Time `json:"time"`
			Level    string    `json:"level"`
			Msg      string    `json:"msg"`
			Feed     string    `json:"feed"`
			Err      string    `json:"err"`
			Cause    string    `json:"cause"`
			Stalled  int64     `json:"stalled_for"`
			Recovery int64     `json:"recovery"`
			Attempts int       `json:"attempts"`
		}
		if json.Unmarshal([]byte(l), &r) != nil || !(strings.HasPrefix(r.Msg, "live feed") || strings.HasPrefix(r.Msg, "nats ") ||
			strings.Contains(r.Msg, "stor") || r.Level == "WARN" || r.Level == "ERROR") {
			continue
		}
		k := fmt.Sprintf("%-5s %s %s", r.Level, r.Msg, r.Feed)
		g := groups[k]
		at := r.Time.Sub(kill)
		if g == nil {
			g = &group{first: at, causes: map[string]bool{}}
			groups[k] = g
			keys = append(keys, k)
		}
		g.n++
		g.last = at
		g.stalled = max(g.stalled, time.Duration(r.Stalled))
		g.recovery = max(g.recovery, time.Duration(r.Recovery))
		g.attempts = max(g.attempts, r.Attempts)
		if c := r.Err + r.Cause; c != "" {
			g.causes[c] = true
		}
	}
	for _, k := range keys {
		g := groups[k]
		causes := slices.Sorted(maps.Keys(g.causes))
		extra := ""
		if g.attempts > 0 {
			extra = fmt.Sprintf(" max stalled_for %v recovery %v attempts %d", g.stalled.Round(time.Millisecond),
				g.recovery.Round(time.Millisecond), g.attempts)
		}
		t.Logf("%+.3fs..%+.3fs ×%d %s%s %q", g.first.Seconds(), g.last.Seconds(), g.n, k, extra, causes)
	}
}

// TestStreamLeaderLoss: the NATS node leading the R3 conversation stream
// is shut down while visitors chat. Every message is answered exactly
// once and in order, and replies resume soon after JetStream has elected
// a new leader: the longest time without any reply stays under 8 s (it
// was ~17 s when the live feeds waited for missed idle heartbeats).
func TestStreamLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node cluster for ~20 s")
	}
	res, e := runLeaderKill(t, leaderKill{conversations: 6, interval: 200 * time.Millisecond,
		before: 2 * time.Second, after: 12 * time.Second})
	t.Logf("stream leader loss: %s", res)
	logFeedEvents(t, e, res.kill)
	if res.stall >= 8*time.Second {
		t.Errorf("no reply for %v after the stream leader was lost (election took %v)", res.stall, res.election)
	}
}

// BenchmarkStreamLeaderLoss reports, per run, how long visitors went
// without a reply after the stream leader's node was shut down, and how
// much of it was JetStream's election. Run with -benchtime=1x -count=5.
func BenchmarkStreamLeaderLoss(b *testing.B) {
	for range b.N {
		res, e := runLeaderKill(b, leaderKill{conversations: 6, interval: 200 * time.Millisecond,
			before: 2 * time.Second, after: 12 * time.Second})
		reportLeaderKill(b, res, e)
	}
}

// BenchmarkStreamLeaderKill9 is BenchmarkStreamLeaderLoss with the
// cluster as nats-server processes and the leader's killed with SIGKILL:
// the survivors then elect a new leader only after raft's election timeout
// (4–9 s in nats-server), which no client setting shortens.
func BenchmarkStreamLeaderKill9(b *testing.B) {
	if testing.Short() {
		b.Skip("builds nats-server and runs a 3-process cluster")
	}
	for range b.N {
		res, e := runLeaderKill(b, leaderKill{conversations: 6, interval: 200 * time.Millisecond,
			before: 2 * time.Second, after: 15 * time.Second, kill9: true})
		reportLeaderKill(b, res, e)
	}
}

// reportLeaderKill logs one leader-loss run and reports its figures.
func reportLeaderKill(b *testing.B, res leaderResult, e *env) {
	b.Logf("%s", res)
	logFeedEvents(b, e, res.kill)
	b.ReportMetric(res.stall.Seconds(), "stall_s")
	b.ReportMetric(res.election.Seconds(), "election_s")
	b.ReportMetric(res.ackGap.Seconds(), "ack_gap_s")
	b.ReportMetric(res.ackToReply.Seconds(), "max_ack_to_reply_s")
	b.ReportMetric(agenttest.Percentile(res.postToReply, 0.5).Seconds(), "p50_reply_s")
	b.ReportMetric(agenttest.Percentile(res.postToReply, 0.99).Seconds(), "p99_reply_s")
}
