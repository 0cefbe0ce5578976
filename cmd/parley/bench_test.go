package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// The figures of docs/BENCHMARKS.md come from these benchmarks:
//
//	make bench    (go test -run '^$' -bench . -benchtime 2x ./cmd/parley/)
//
// Each iteration is a whole load run; the latencies are reported as
// custom metrics (p50-ms, p99-ms, …).

// percentiles reports p50, p90, p99 and max of ds in milliseconds
// (agenttest.Percentile: nearest rank).
func percentiles(b *testing.B, ds []time.Duration, prefix string) {
	if len(ds) == 0 {
		b.Fatalf("%s: no samples", prefix)
	}
	at := func(q float64) float64 { return float64(agenttest.Percentile(ds, q).Microseconds()) / 1000 }
	b.ReportMetric(at(0.50), prefix+"p50-ms")
	b.ReportMetric(at(0.90), prefix+"p90-ms")
	b.ReportMetric(at(0.99), prefix+"p99-ms")
	b.ReportMetric(at(1), prefix+"max-ms")
}

// BenchmarkChatRoundTrip sends chat messages on WebSockets at a steady
// 500 messages/s over 50 conversations for 10 s and measures, per message,
// sent → ack, sent → first chunk and sent → done received, with the echo
// agent in-process (as `parley serve` runs it) or connected over TCP (as an
// external worker).
func BenchmarkChatRoundTrip(b *testing.B) {
	b.Run("agent=in-process", func(b *testing.B) {
		chatRoundTrip(b, func(b *testing.B) *env {
			return startEnv(b, func(c *configs.Config) { c.EchoAgent.Workers = 2 })
		})
	})
	b.Run("agent=tcp", func(b *testing.B) {
		chatRoundTrip(b, func(b *testing.B) *env {
			e := startEnv(b, noEcho)
			e.startWorker()
			e.startWorker()
			return e
		})
	})
}

func chatRoundTrip(b *testing.B, start func(*testing.B) *env) {
	const (
		rate     = 500
		conns    = 50
		duration = 10 * time.Second
		total    = int(rate * duration / time.Second)
	)
	for b.Loop() {
		e := start(b)
		type tracked struct {
			sent, ack, first, done atomic.Int64
		}
		msgs := make([]tracked, total)
		clients := make([]*websocket.Conn, conns)
		var readers sync.WaitGroup
		for i := range conns {
			s := e.NewSession(nil)
			c := e.MustDialWS(s)
			clients[i] = c.Conn
			readers.Add(1)
			go func() {
				defer readers.Done()
				byServerID := make(map[string]int)
				for {
					_, data, err := c.Conn.Read(context.Background())
					if err != nil {
						return
					}
					now := time.Now().UnixNano()
					var f struct{ Type, ClientMessageID, MessageID, ReplyTo string }
					if err := json.Unmarshal(data, &f); err != nil {
						continue
					}
					switch f.Type {
					case "ack":
						var m struct {
							Client string `json:"client_message_id"`
							ID     string `json:"message_id"`
						}
						_ = json.Unmarshal(data, &m)
						n, _ := strconv.Atoi(m.Client)
						byServerID[m.ID] = n
						msgs[n].ack.Store(now)
					case "chunk", "done":
						var m struct {
							ReplyTo string `json:"reply_to"`
						}
						_ = json.Unmarshal(data, &m)
						n, ok := byServerID[m.ReplyTo]
						if !ok {
							continue
						}
						msgs[n].first.CompareAndSwap(0, now)
						if f.Type == "done" {
							msgs[n].done.Store(now)
						}
					}
				}
			}()
		}
		// Send on a fixed schedule (message i at start + i/rate), so a slow
		// moment does not lower the offered rate.
		timer := time.NewTimer(0)
		<-timer.C
		start := time.Now()
		for i := range total {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
				timer.Reset(d)
				<-timer.C
			}
			data := fmt.Appendf(nil, `{"type":"message","body":"benchmark message %d","client_message_id":"%d"}`, i, i)
			msgs[i].sent.Store(time.Now().UnixNano())
			if err := clients[i%conns].Write(context.Background(), websocket.MessageText, data); err != nil {
				b.Fatalf("write: %v", err)
			}
		}
		elapsed := time.Since(start)
		agenttest.Poll(b, 30*time.Second, "every reply", func() bool {
			for i := range msgs {
				if msgs[i].done.Load() == 0 {
					return false
				}
			}
			return true
		})
		for _, c := range clients {
			c.Close(websocket.StatusNormalClosure, "")
		}
		readers.Wait()
		ack := make([]time.Duration, total)
		first := make([]time.Duration, total)
		done := make([]time.Duration, total)
		for i := range msgs {
			ack[i] = time.Duration(msgs[i].ack.Load() - msgs[i].sent.Load())
			first[i] = time.Duration(msgs[i].first.Load() - msgs[i].sent.Load())
			done[i] = time.Duration(msgs[i].done.Load() - msgs[i].sent.Load())
		}
		b.ReportMetric(float64(total)/elapsed.Seconds(), "msgs/s")
		percentiles(b, ack, "ack-")
		percentiles(b, first, "first-chunk-")
		percentiles(b, done, "done-")
	}
}

// BenchmarkDispatch creates sessions one after another and measures
// POST /v1/sessions sent, then the visitor's first message (which
// dispatches the conversation; a session that sends nothing holds no
// worker) → a worker accepted the conversation (the broker's
// agent_assigned notice on NATS).
func BenchmarkDispatch(b *testing.B) {
	const sessions = 1000
	for b.Loop() {
		e := startEnv(b, func(c *configs.Config) { c.EchoAgent.Workers = 2 })
		nc := e.natsConn()
		assigned := make(chan string, sessions)
		sub, err := nc.Subscribe(e.app.broker.Subjects().Status("*"), func(m *nats.Msg) {
			var n broker.Notice
			if json.Unmarshal(m.Data, &n) == nil && n.Kind == broker.NoticeAgentAssigned {
				assigned <- n.ConversationID
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
		var lat []time.Duration
		for range sessions {
			challenge := e.Resolve(testOrigin)
			start := time.Now()
			r := e.Do("POST", "/v1/sessions", map[string]any{"widget_key": "pk_demo", "challenge": challenge}, "Origin", testOrigin)
			if r.Status != http.StatusCreated {
				b.Fatalf("create session: %d %s", r.Status, r.Raw)
			}
			cid := r.Str("conversation_id")
			if p := e.Post(signalingtest.SessionFrom(r), "hello", "", false); p.Status != http.StatusAccepted {
				b.Fatalf("first message: %d %s", p.Status, p.Raw)
			}
			for got := range assigned {
				if got == cid {
					break
				}
			}
			lat = append(lat, time.Since(start))
		}
		_ = sub.Unsubscribe()
		nc.Close()
		percentiles(b, lat, "dispatch-")
	}
}

// BenchmarkColdStart runs the parley binary on a fresh data dir ten times
// per iteration and measures exec → "ready" line and exec → /readyz 200.
func BenchmarkColdStart(b *testing.B) {
	parleyBinary(b) // build outside the measurement
	var toLine, toReady []time.Duration
	for b.Loop() {
		for range 10 {
			start := time.Now()
			p := startProc(b, "serve", "--data-dir", b.TempDir(), "--listen", "127.0.0.1:0",
				"--nats-listen", "127.0.0.1:-1", "--log-level", "warn")
			m := p.line(readyLine)
			toLine = append(toLine, time.Since(start))
			agenttest.Poll(b, 10*time.Second, "readyz", func() bool {
				res, err := http.Get(m[1] + "/readyz")
				if err != nil {
					return false
				}
				res.Body.Close()
				return res.StatusCode == 200
			})
			toReady = append(toReady, time.Since(start))
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			p.wait()
		}
	}
	percentiles(b, toLine, "ready-line-")
	percentiles(b, toReady, "readyz-")
}

// BenchmarkSessionCreation measures resolve + POST /v1/sessions throughput
// (each op is one visitor starting a conversation: challenge minted and
// consumed, session, conversation and resume records written, the
// conversation logged and dispatched to an echo worker), with 8 concurrent
// clients. Rate limits are off, as in the other benchmarks.
func BenchmarkSessionCreation(b *testing.B) {
	e := startEnv(b, func(c *configs.Config) { c.EchoAgent.Workers = 2 })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	create := func() error {
		post := func(path string, body any) (map[string]any, error) {
			data, _ := json.Marshal(body)
			req, _ := http.NewRequest("POST", e.base+path, bytes.NewReader(data))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Origin", testOrigin)
			res, err := client.Do(req)
			if err != nil {
				return nil, err
			}
			defer res.Body.Close()
			var out map[string]any
			if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
				return nil, err
			}
			if res.StatusCode >= 300 {
				return nil, fmt.Errorf("%s: %d %v", path, res.StatusCode, out)
			}
			return out, nil
		}
		r, err := post("/v1/widget/resolve", map[string]any{"widget_key": "pk_demo"})
		if err != nil {
			return err
		}
		_, err = post("/v1/sessions", map[string]any{"widget_key": "pk_demo", "challenge": r["challenge"]})
		return err
	}
	b.SetParallelism(4) // 4 × GOMAXPROCS(2) = 8 clients
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := create(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sessions/s")
}
