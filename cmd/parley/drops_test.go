package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// TestMetricsDrops: a chat WebSocket that stops reading is cut off, and a
// live subscription that stops reading is ended, and both show in /metrics;
// so do the periodic sweeps.
func TestMetricsDrops(t *testing.T) {
	e := startEnv(t, func(c *configs.Config) {
		c.Chat.MaxMessageChars = 60000
		// The echo streams a reply in 3 deltas of ~20 KB: above the
		// default per-delta limit of agent events (16 KiB).
		c.Agents.MaxDeltaBytes = 64 << 10
		c.Sessions.SweepInterval = 100 * time.Millisecond
		c.Retention.SweepInterval = 100 * time.Millisecond
		// The stalled socket reads nothing, so it never answers the
		// liveness ping either: on a busy machine the ping (20 s) could
		// close it before its queue fills. This test is about the queue
		// (TestWSLivenessPing is about the ping).
		c.Chat.PingIdle = time.Hour
	})
	before := e.Scrape()
	val := func(name string, labels ...string) float64 {
		v, _ := signalingtest.MetricValue(e.Scrape(), name, labels...)
		return v
	}
	slowWS0, _ := signalingtest.MetricValue(before, "parley_websocket_slow_consumers_total")
	slowSub0, _ := signalingtest.MetricValue(before, "parley_live_slow_subscribers_total")

	s := e.NewSession(nil)
	stalled := e.MustDialWS(s) // read no further
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := e.app.broker.Subscribe(ctx, s.ConversationID) // never drained
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	// Big messages, each echoed back: typing, chunk and done frames fill
	// the stalled socket's TCP buffers and queue; their events fill the
	// subscription's buffer.
	body := strings.Repeat("x", 60000)
	sent := 0
	for ; sent < 3000; sent++ {
		if val("parley_websocket_slow_consumers_total") > slowWS0 && val("parley_live_slow_subscribers_total") > slowSub0 {
			break
		}
		if r := e.Post(s, body, "m-"+strconv.Itoa(sent), false); r.Status != http.StatusAccepted && r.Status != http.StatusCreated && r.Status != http.StatusOK {
			t.Fatalf("post %d: %d %s", sent, r.Status, r.Raw)
		}
	}
	agenttest.Poll(t, 30*time.Second, "drops counted", func() bool {
		return val("parley_websocket_slow_consumers_total") > slowWS0 && val("parley_live_slow_subscribers_total") > slowSub0
	})
	t.Logf("after %d messages of %d bytes: slow consumers %v, slow subscribers %v", sent, len(body),
		val("parley_websocket_slow_consumers_total"), val("parley_live_slow_subscribers_total"))
	deadline := time.After(10 * time.Second)
drained:
	for {
		select {
		case <-sub.Ready():
			if _, open := sub.Take(nil); !open {
				break drained
			}
		case <-deadline:
			t.Fatal("subscription still open")
		}
	}
	if !errors.Is(sub.Err(), broker.ErrSlowSubscriber) {
		t.Fatalf("subscription ended with %v, want ErrSlowSubscriber", sub.Err())
	}
	// The stalled socket was dropped: reading on finds its end.
	for {
		if _, err := stalled.Read(15 * time.Second); err != nil {
			break
		}
	}
	agenttest.Poll(t, 10*time.Second, "sweeps counted", func() bool {
		return val("parley_retention_sweeps_total", "kind", "session", "result", "ok") > 0 &&
			val("parley_retention_sweeps_total", "kind", "retention", "result", "ok") > 0
	})
	// Every drop counter is exported, at 0 when nothing was dropped.
	for _, name := range []string{"parley_media_frames_late_total", "parley_media_playout_dropped_total",
		"parley_media_playout_rejected_total", "parley_websocket_ping_timeouts_total", "parley_ops_slow_readers_total",
		"parley_live_gaps_total", "parley_live_refills_total", "parley_store_retries_total"} {
		if _, ok := signalingtest.MetricValue(before, name); !ok {
			t.Errorf("%s missing from /metrics", name)
		}
	}
}

// TestWSLivenessPing: the server pings an idle chat WebSocket; one that
// does not answer is closed and its leg released, one that answers stays.
func TestWSLivenessPing(t *testing.T) {
	e := startEnv(t, func(c *configs.Config) {
		c.Chat.PingIdle = 100 * time.Millisecond
		c.Chat.PingTimeout = 300 * time.Millisecond
	})
	timeouts0, _ := signalingtest.MetricValue(e.Scrape(), "parley_websocket_ping_timeouts_total")

	// A healthy idle client: its read loop answers pings.
	healthy := e.NewSession(nil)
	var pings atomic.Int64
	url := "ws" + strings.TrimPrefix(e.base, "http") + "/v1/sessions/" + healthy.ID + "/ws?token=" + healthy.Token
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	hc, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {testOrigin}},
		OnPingReceived: func(context.Context, []byte) bool {
			pings.Add(1)
			return true
		},
	})
	dcancel()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseNow()
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := hc.Read(context.Background()); err != nil {
				readErr <- err
				return
			}
		}
	}()

	// A dead client: the handshake completes, then it reads nothing, so
	// no pong is sent.
	dead := e.NewSession(nil)
	dc, _, err := e.DialWS(dead, "")
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Conn.CloseNow()
	agenttest.Poll(t, 10*time.Second, "both legs attached", func() bool { return e.app.broker.LocalStats().Sessions == 2 })

	agenttest.Poll(t, 15*time.Second, "dead socket dropped", func() bool {
		v, _ := signalingtest.MetricValue(e.Scrape(), "parley_websocket_ping_timeouts_total")
		return v > timeouts0 && e.app.broker.LocalStats().Sessions == 1
	})
	// The healthy one sees several pings and stays.
	agenttest.Poll(t, 15*time.Second, "five pings answered", func() bool { return pings.Load() >= 5 })
	select {
	case err := <-readErr:
		t.Fatalf("healthy idle socket closed: %v", err)
	default:
	}
	if n := e.app.broker.LocalStats().Sessions; n != 1 {
		t.Fatalf("%d sessions with a leg, want the healthy one", n)
	}
	// It still works.
	if r := e.Post(healthy, "still here", "h-1", false); r.Status >= 300 {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	t.Logf("healthy socket answered %d pings; dead one dropped", pings.Load())
}
