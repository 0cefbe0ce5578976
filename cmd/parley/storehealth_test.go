package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// These tests corrupt a copy of a real data directory: a real `parley
// serve` writes it and stops cleanly, the test damages its files, and a new
// `parley serve` (and `parley check`) must say so loudly.

// storeTrial is a data directory with conversations in it, its server
// stopped.
type storeTrial struct {
	dir      string
	sessions []session
	// want is each session's transcript before the damage.
	want [][]string
}

// fillStore runs parley serve on a fresh data dir, holds n conversations of
// turns messages each, and stops it with SIGTERM.
func fillStore(t *testing.T, n, turns int) storeTrial {
	t.Helper()
	tr := storeTrial{dir: t.TempDir()}
	p, e, _ := serveProc(t, tr.dir)
	for range n {
		tr.sessions = append(tr.sessions, e.NewSession(nil))
	}
	// Interleave the conversations, as real traffic does.
	for i := range turns {
		for j, s := range tr.sessions {
			text := fmt.Sprintf("conversation %d message %d %s", j, i, strings.Repeat("x", 200))
			if r := e.Post(s, text, fmt.Sprintf("k-%d-%d", j, i), true); r.Status != 200 {
				t.Fatalf("post: %d %s", r.Status, r.Raw)
			}
		}
	}
	for _, s := range tr.sessions {
		tr.want = append(tr.want, signalingtest.Transcript(e.History(s)))
	}
	stopProc(t, p)
	return tr
}

func stopProc(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// largestBlock returns the biggest message block of a stream.
func largestBlock(t *testing.T, dir, stream string) string {
	t.Helper()
	// The store is under the PARLEY account's public key (docs/DEPLOYMENT.md,
	// "NATS authentication").
	blks, _ := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams", stream, "msgs", "*.blk"))
	if len(blks) == 0 {
		t.Fatalf("no blocks of %s in %s", stream, dir)
	}
	size := func(p string) int64 { fi, _ := os.Stat(p); return fi.Size() }
	slices.SortFunc(blks, func(a, b string) int { return int(size(b) - size(a)) })
	return blks[0]
}

// xorMiddle flips 256 bytes in the middle of a file.
func xorMiddle(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mid := len(data) / 2
	for i := mid; i < min(mid+256, len(data)); i++ {
		data[i] ^= 0xA5
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// truncateTo keeps pct % of a file.
func truncateTo(t *testing.T, path string, pct int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()*pct/100); err != nil {
		t.Fatal(err)
	}
}

// getBounded is a GET that gives up after 20 s instead of hanging.
func getBounded(t *testing.T, url, token string) (response, time.Duration) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 20 * time.Second}
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v (after %s)", url, err, time.Since(start).Round(time.Millisecond))
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r, time.Since(start)
}

// storeLost returns the lost_messages /readyz reports for a store.
func storeLost(r response, store string) float64 {
	st, _ := r.Body["store"].(map[string]any)
	lost, _ := st["lost"].([]any)
	for _, l := range lost {
		m := l.(map[string]any)
		if m["store"] == store {
			n, _ := m["lost_messages"].(float64)
			return n
		}
	}
	return 0
}

// storeMetric reads one sample of /metrics ("name{labels}") through the
// bounded GET, not signalingtest.Client.Scrape: a sick store may hang it.
// key is an admin key with ops:read, or "" for the --metrics-listen
// address (metricsBase).
func storeMetric(t *testing.T, base, key, sample string) (float64, bool) {
	t.Helper()
	r, _ := getBounded(t, base+"/metrics", key)
	for _, l := range strings.Split(r.Raw, "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// runCheck runs `parley check` and returns its exit code and output.
func runCheck(t *testing.T, dir string) (int, string) {
	t.Helper()
	cmd := exec.Command(parleyBinary(t), "check", "--data-dir", dir)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("parley check: %v\n%s", err, out)
	}
	return 0, string(out)
}

var storeReadLine = regexp.MustCompile(`"level":"ERROR","msg":"store read timed out[^\n]*"stream":"PARLEY_CONV"`)

var storeLostLine = regexp.MustCompile(`"level":"ERROR","msg":"store lost data[^\n]*"store":"PARLEY_CONV"`)

// TestCorruptConversationBlock: 256 bytes XOR-ed in the middle of a block of
// the conversation stream. Before, history hung until the client gave up and
// at most one WARN was logged. Now every history answers quickly (the full
// transcript or STORE_TIMEOUT), the loss shows in /readyz, /metrics and an
// ERROR line, and `parley check` exits non-zero naming the stream.
func TestCorruptConversationBlock(t *testing.T) {
	tr := fillStore(t, 4, 12)
	if code, out := runCheck(t, tr.dir); code != 0 {
		t.Fatalf("parley check on the healthy store: exit %d\n%s", code, out)
	}
	xorMiddle(t, largestBlock(t, tr.dir, "PARLEY_CONV"))

	p, e, _ := serveProc(t, tr.dir, "--metrics-listen", "127.0.0.1:0")
	metrics := metricsBase(t, p)
	failed := 0
	for i, s := range tr.sessions {
		r, took := getBounded(t, e.base+"/v1/sessions/"+s.ID+"/history?message_limit=500", s.Token)
		t.Logf("history of conversation %d after corruption: %d %s in %s", i, r.Status, r.ErrCode(), took.Round(time.Millisecond))
		switch {
		case r.Status == 503 && r.ErrCode() == "STORE_TIMEOUT":
			failed++
		case r.Status == 200:
			var msgs []map[string]any
			for _, m := range r.Body["messages"].([]any) {
				msgs = append(msgs, m.(map[string]any))
			}
			if got := signalingtest.Transcript(msgs); !slices.Equal(got, tr.want[i]) {
				t.Errorf("conversation %d: history answered 200 with %d of %d messages and no error", i, len(got), len(tr.want[i]))
			}
		default:
			t.Errorf("conversation %d: history %d %s", i, r.Status, r.Raw)
		}
	}
	if failed == 0 {
		t.Errorf("no history failed after corrupting the log's block")
	}
	r, _ := getBounded(t, e.base+"/readyz", "")
	if r.Status != 200 || r.Str("status") != "degraded" || storeLost(r, "PARLEY_CONV") == 0 {
		t.Errorf("/readyz after corruption: %d %s", r.Status, r.Raw)
	}
	if v, ok := storeMetric(t, metrics, "", `parley_store_lost_messages{store="PARLEY_CONV"}`); !ok || v == 0 {
		t.Errorf("parley_store_lost_messages{store=PARLEY_CONV} = %v (present %v)", v, ok)
	}
	if v, _ := storeMetric(t, metrics, "", "parley_store_read_timeouts_total"); v < float64(failed) {
		t.Errorf("parley_store_read_timeouts_total = %v, want >= %d", v, failed)
	}
	if logs := p.stderr.String(); !storeReadLine.MatchString(logs) {
		t.Errorf("no ERROR line for the failed read; stderr:\n%s", tail(logs, 3000))
	}
	stopProc(t, p)
	code, out := runCheck(t, tr.dir)
	t.Logf("parley check:\n%s", out)
	if code != 1 || !regexp.MustCompile(`PROBLEM PARLEY_CONV: `).MatchString(out) {
		t.Fatalf("parley check after corruption: exit %d, want 1 and a PROBLEM line for PARLEY_CONV\n%s", code, out)
	}
}

// TestTruncatedConversationBlock: a block of the log cut to 60 %. Before,
// 40 % of acknowledged messages vanished without a word. Now /readyz, the
// metric, an ERROR line and `parley check` report how many.
func TestTruncatedConversationBlock(t *testing.T) {
	tr := fillStore(t, 4, 12)
	blk := largestBlock(t, tr.dir, "PARLEY_CONV")
	truncateTo(t, blk, 60)

	p, e, _ := serveProc(t, tr.dir, "--metrics-listen", "127.0.0.1:0")
	metrics := metricsBase(t, p)
	r, _ := getBounded(t, e.base+"/readyz", "")
	lost := storeLost(r, "PARLEY_CONV")
	t.Logf("/readyz after truncating %s to 60%%: %s", filepath.Base(blk), r.Raw)
	if r.Status != 200 || r.Str("status") != "degraded" || lost == 0 {
		t.Fatalf("/readyz after truncation: %d %s", r.Status, r.Raw)
	}
	if v, _ := storeMetric(t, metrics, "", "parley_store_data_lost"); v != 1 {
		t.Errorf("parley_store_data_lost = %v, want 1", v)
	}
	if v, ok := storeMetric(t, metrics, "", `parley_store_lost_messages{store="PARLEY_CONV"}`); !ok || v != lost {
		t.Errorf("parley_store_lost_messages{store=PARLEY_CONV} = %v, /readyz says %v", v, lost)
	}
	if !storeLostLine.MatchString(p.stderr.String()) {
		t.Errorf("no ERROR line naming PARLEY_CONV")
	}
	// Every history answers (what survives, or a coded error), none hangs.
	for i, s := range tr.sessions {
		r, took := getBounded(t, e.base+"/v1/sessions/"+s.ID+"/history?message_limit=500", s.Token)
		t.Logf("history of conversation %d: %d %s in %s", i, r.Status, r.ErrCode(), took.Round(time.Millisecond))
		if r.Status != 200 && r.ErrCode() != "STORE_TIMEOUT" {
			t.Errorf("history: %d %s", r.Status, r.Raw)
		}
	}
	stopProc(t, p)
	// The loss is still reported after a restart, and by parley check.
	p2, e2, _ := serveProc(t, tr.dir)
	if r, _ := getBounded(t, e2.base+"/readyz", ""); storeLost(r, "PARLEY_CONV") != lost {
		t.Errorf("/readyz after another restart: %s, want %v lost", r.Raw, lost)
	}
	stopProc(t, p2)
	code, out := runCheck(t, tr.dir)
	t.Logf("parley check:\n%s", out)
	if code != 1 || !strings.Contains(out, "PROBLEM PARLEY_CONV") {
		t.Fatalf("parley check after truncation: exit %d\n%s", code, out)
	}
}

// TestCorruptSessionsBucket: a damaged sessions bucket. Before, 3 of 4
// sessions silently became 404. Now the loss is reported, logged at ERROR
// naming the bucket, and a visitor whose session record was lost gets a
// coded error.
func TestCorruptSessionsBucket(t *testing.T) {
	tr := fillStore(t, 4, 2)
	xorMiddle(t, largestBlock(t, tr.dir, "KV_parley_sessions"))

	p, e, _ := serveProc(t, tr.dir)
	codes := map[string]int{}
	for i, s := range tr.sessions {
		r, took := getBounded(t, e.base+"/v1/sessions/"+s.ID+"/history", s.Token)
		t.Logf("history of session %d: %d %s in %s", i, r.Status, r.Raw, took.Round(time.Millisecond))
		codes[r.ErrCode()]++
		if r.Status != 200 && r.ErrCode() == "" {
			t.Errorf("uncoded error: %d %s", r.Status, r.Raw)
		}
	}
	r, _ := getBounded(t, e.base+"/readyz", "")
	t.Logf("/readyz: %s; history codes %v", r.Raw, codes)
	if storeLost(r, "KV_parley_sessions") == 0 {
		t.Errorf("/readyz does not report the sessions bucket's loss: %s", r.Raw)
	}
	if !strings.Contains(p.stderr.String(), `"level":"ERROR","msg":"store lost data`) ||
		!strings.Contains(p.stderr.String(), `"store":"KV_parley_sessions"`) {
		t.Errorf("no ERROR line naming KV_parley_sessions")
	}
	if codes["SESSION_NOT_FOUND"] > 0 && !strings.Contains(p.stderr.String(), `"level":"ERROR","msg":"record not found in a bucket that lost data`) {
		t.Errorf("a session lost with the bucket answered SESSION_NOT_FOUND without an ERROR line")
	}
}

// TestStoreFullFailsReadiness: with a small nats.max_store_bytes filled
// until JetStream refuses writes, /readyz turns 503 STORE_UNWRITABLE (it
// stayed 200 before) and posting answers 503 STORE_FULL; once space is
// freed, readiness and posting come back.
func TestStoreFullFailsReadiness(t *testing.T) {
	e := startEnv(t, func(c *configs.Config) { c.NATS.MaxStoreBytes = 8 << 20 })
	s := e.NewSession(nil)
	if r := e.Post(s, "before", "k-1", true); r.Status != 200 {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("GET", "/readyz", nil); r.Status != 200 {
		t.Fatalf("/readyz: %d %s", r.Status, r.Raw)
	}
	js, err := jetstream.New(e.natsConn())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	fill, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FILL", Subjects: []string{"fill.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	var filled int
	for ; filled < 200; filled++ {
		if _, err = js.Publish(ctx, "fill.x", chunk); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatalf("the store took %d MiB past nats.max_store_bytes", filled/4)
	}
	t.Logf("store refused the filler after %d KiB: %v", filled*256, err)
	full := time.Now()
	agenttest.Poll(t, 20*time.Second, "/readyz 503 STORE_UNWRITABLE", func() bool {
		r := e.Do("GET", "/readyz", nil)
		return r.Status == 503 && r.ErrCode() == "STORE_UNWRITABLE"
	})
	t.Logf("/readyz failed %s after the store filled", time.Since(full).Round(time.Millisecond))
	if r := e.Post(s, "while full", "k-2", false); r.Status != 503 || r.ErrCode() != "STORE_FULL" {
		t.Fatalf("post into a full store: %d %s", r.Status, r.Raw)
	}
	if v, ok := storeMetric(t, e.base, e.MetricsKey, "parley_store_writable"); !ok || v != 0 {
		t.Errorf("parley_store_writable = %v (present %v), want 0", v, ok)
	}
	if err := fill.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	// A visitor's write that succeeds makes the broker ready at once,
	// before the next probe.
	if r := e.Post(s, "after", "k-3", true); r.Status != 200 {
		t.Fatalf("post after space was freed: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("GET", "/readyz", nil); r.Status != 200 {
		t.Fatalf("/readyz after a successful write: %d %s", r.Status, r.Raw)
	}
}

// TestDiskFullFailsReadiness: the data directory on a real file system that
// runs out of space (a 32 MiB tmpfs; skipped where mounting is not
// permitted). Before, /readyz stayed 200 while every write failed.
func TestDiskFullFailsReadiness(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	e := startEnv(t, func(c *configs.Config) { c.DataDir = dir; c.NATS.MaxStoreBytes = 1 << 30 })
	s := e.NewSession(nil)
	if r := e.Post(s, "before", "k-1", true); r.Status != 200 {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	// Fill the file system beside the store.
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	_ = f.Close()
	t.Logf("file system full: %v", err)
	full := time.Now()
	var r response
	agenttest.Poll(t, 20*time.Second, "/readyz 503 once the disk is full", func() bool {
		r = e.Do("GET", "/readyz", nil)
		return r.Status == 503
	})
	t.Logf("/readyz %d after %s: %s", r.Status, time.Since(full).Round(time.Millisecond), r.Raw)
	if c := r.ErrCode(); c != "STORE_UNWRITABLE" && c != "NOT_READY" {
		t.Errorf("/readyz on a full disk: %d %s", r.Status, r.Raw)
	}
	// 8 000 bytes need new pages of the block file: a full disk refuses them.
	if r := e.Post(s, strings.Repeat("é", 4000), "k-2", false); r.Status != 503 || !strings.HasPrefix(r.ErrCode(), "STORE_") {
		t.Errorf("post on a full disk: %d %s", r.Status, r.Raw)
	} else {
		t.Logf("post on a full disk: %d %s", r.Status, r.Raw)
	}
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	// nats-server's file store keeps refusing writes after a failed disk
	// write until it restarts: readiness must stay failed meanwhile.
	r = e.Do("GET", "/readyz", nil)
	t.Logf("/readyz after freeing space, before a restart: %d %s", r.Status, r.ErrCode())
	e.stop()
	e2 := startEnv(t, func(c *configs.Config) { c.DataDir = dir; c.NATS.MaxStoreBytes = 1 << 30 })
	if r := e2.Do("GET", "/readyz", nil); r.Status != 200 {
		t.Fatalf("/readyz after freeing space and restarting: %d %s", r.Status, r.Raw)
	}
	if got := signalingtest.Transcript(e2.History(s)); len(got) < 2 || got[0] != "visitor: before" {
		t.Fatalf("history after the disk-full episode: %q", got)
	}
}

// TestR1NodeDownFailsReadiness: on a 3-node cluster with replicas 1, the
// node holding the conversation stream goes down. Before, /readyz stayed
// 200 (JetStream still answered) while every post failed; now it fails
// until the node is back.
func TestR1NodeDownFailsReadiness(t *testing.T) {
	urls, nodes := natsClusterNodes(t)
	e := startEnv(t, func(c *configs.Config) { c.NATS.URL = urls; c.NATS.Replicas = 1 })
	s := e.NewSession(nil)
	if r := e.Post(s, "before", "k-1", true); r.Status != 200 {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	js, _ := jetstream.New(e.natsConn())
	st, err := js.Stream(t.Context(), "PARLEY_CONV")
	if err != nil {
		t.Fatal(err)
	}
	leader := st.CachedInfo().Cluster.Leader
	var holder *clusterNode
	for _, n := range nodes {
		if n.opts.ServerName == leader {
			holder = n
		}
	}
	if holder == nil {
		t.Fatalf("no node holds PARLEY_CONV (leader %q)", leader)
	}
	holder.srv.Shutdown()
	holder.srv.WaitForShutdown()
	down := time.Now()
	var r response
	// The broker may have been connected to that node: NOT_READY while it
	// reconnects; then the store check must keep it unready.
	agenttest.Poll(t, 30*time.Second, "/readyz 503 STORE_UNWRITABLE with the conversation stream's node down", func() bool {
		r = e.Do("GET", "/readyz", nil)
		return r.Status == 503 && r.ErrCode() == "STORE_UNWRITABLE"
	})
	t.Logf("/readyz %d %s %s after node %s went down: %s", r.Status, r.ErrCode(), time.Since(down).Round(time.Millisecond), leader, r.Raw)
	if r := e.Post(s, "while down", "k-2", false); r.Status != 503 || r.ErrCode() == "" {
		t.Errorf("post with the node down: %d %s", r.Status, r.Raw)
	}
	holder.start(t)
	up := time.Now()
	agenttest.Poll(t, 60*time.Second, "/readyz 200 once the node is back", func() bool {
		return e.Do("GET", "/readyz", nil).Status == 200
	})
	t.Logf("/readyz 200 %s after node %s came back", time.Since(up).Round(time.Millisecond), leader)
}
