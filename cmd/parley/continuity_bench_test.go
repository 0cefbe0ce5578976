package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// Continuity benchmarks (docs/BENCHMARKS.md), 100 repetitions each:
//
//	go test -run '^$' -bench 'Failover|Resume|ICERestart' -benchtime 1x ./cmd/parley/

const continuityReps = 100

// BenchmarkFailover: a worker dies in the middle of a reply; measured from
// its death to the first chunk of the new worker's answer on the visitor's
// WebSocket. Default detection settings (500 ms heartbeats, 1.5 s
// timeout). Every message must end with exactly one complete reply.
func BenchmarkFailover(b *testing.B) {
	for b.Loop() {
		e := startEnv(b, noEcho)
		s := e.NewSession(nil)
		c := e.MustDialWS(s)
		start := func() *nats.Conn {
			nc := e.agentConn(configs.DefaultAgent)
			signalingtest.StartWorker(b, nc, configs.DefaultAgent, slowEcho)
			b.Cleanup(nc.Close)
			return nc
		}
		owner := start()
		var took []time.Duration
		lost := 0
		for i := range continuityReps {
			text := fmt.Sprintf("message %d needs several words", i)
			c.Send(map[string]any{"type": "message", "body": text, "client_message_id": fmt.Sprintf("fo-%d", i)})
			c.Until("chunk") // the owner is mid-reply
			next := start()
			killed := time.Now()
			owner.Close()
			owner = next
			first := time.Duration(0)
			for {
				f := c.Next()
				if first == 0 && f.Str("type") == "chunk" && f["index"] == 0.0 {
					first = time.Since(killed) // the new worker's first event
				}
				if f.Str("type") == "done" && f["interrupted"] != true {
					if f.Str("body") != "echo: "+text {
						lost++
					}
					break
				}
			}
			took = append(took, first)
		}
		b.ReportMetric(float64(lost), "messages-lost")
		percentiles(b, took, "failover-")
	}
}

// BenchmarkResume: a reload; measured from the new page's resolve to its
// WebSocket open with the conversation's history fetched (resume token
// exchanged for a session on the same conversation).
func BenchmarkResume(b *testing.B) {
	for b.Loop() {
		e := startEnv(b)
		s := e.NewSession(nil)
		if r := e.Post(s, "before the reloads", "r-0", true); r.Status != 200 {
			b.Fatalf("post: %d", r.Status)
		}
		var took []time.Duration
		lost := 0
		for i := range continuityReps {
			start := time.Now()
			s2 := e.NewSession(map[string]any{"resume_token": s.ResumeToken})
			c := e.MustDialWS(s2)
			h := e.History(s2)
			took = append(took, time.Since(start))
			if s2.ConversationID != s.ConversationID || len(h) != 2*(i+1) {
				lost++
			}
			c.Send(map[string]any{"type": "message", "body": fmt.Sprintf("after reload %d", i), "client_message_id": fmt.Sprintf("r-%d", i+1)})
			if f, _ := c.Until("done"); f.Str("body") != fmt.Sprintf("echo: after reload %d", i) {
				lost++
			}
			c.Conn.CloseNow()
			s = s2
		}
		b.ReportMetric(float64(lost), "messages-lost")
		percentiles(b, took, "resume-")
	}
}

// BenchmarkICERestart: a network change survived by an ICE restart (full
// re-offer through PATCH); measured from the restart's start to the next
// visitor frame on NATS, with the client sending 50 frames/s throughout.
func BenchmarkICERestart(b *testing.B) {
	for b.Loop() {
		e := startEnv(b, voiceConfig)
		s := e.NewSession(nil)
		tap := agenttest.TapAudio(b, e.natsConn(), e.app.broker.Subjects().InAudio(configs.DefaultAgent, s.ConversationID))
		v := e.NewVoiceClient(s)
		v.WaitConnected()
		frames := signalingtest.Speech(b, 1, 20, 0) // one 20 ms tone frame, sent in a loop
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			onTicks(20*time.Millisecond, stop, func(int) { _ = v.Track.WriteSample(signalingtest.SampleOf(frames[0])) })
		}()
		var took []time.Duration
		for range continuityReps {
			start := time.Now()
			if r := v.RestartICE(s.Token); r.Status != http.StatusOK {
				b.Fatalf("restart: %d %s", r.Status, r.Raw)
			}
			n := tap.Len()
			agenttest.Poll(b, 10*time.Second, "a frame after the restart", func() bool { return tap.Len() > n })
			took = append(took, time.Since(start))
		}
		close(stop)
		<-done
		percentiles(b, took, "ice-restart-")
	}
}
