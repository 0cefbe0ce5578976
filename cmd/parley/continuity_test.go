package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/cmd/internal/utterance"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// slowEcho is the echo agent with a reply streamed slowly, word by word,
// so a test can kill its worker in the middle of one.
func slowEcho(ctx context.Context, c *agentbridge.Conversation) error {
	vad := utterance.NewDetector()
	reply := func(replyTo, text string) error {
		r := c.NewReply(replyTo)
		for i, word := range strings.SplitAfter("echo: "+text, " ") {
			if i > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(150 * time.Millisecond): // speaking slowly is the point
				}
			}
			if err := r.Write(ctx, word); err != nil {
				return err
			}
		}
		return r.Done(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-c.Audio():
			_ = c.SendAudio(f)
			if u, ok := vad.Push(f); ok {
				id, err := c.SendTranscript(ctx, u.String(), true)
				if err == nil {
					err = reply(id, u.String())
				}
				if err != nil {
					return err
				}
			}
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			if ev.Type == agentbridge.EventUserMessage {
				if err := reply(ev.MessageID, ev.Text); err != nil {
					return err
				}
			}
		}
	}
}

// TestContinuity drives one conversation through everything that can go
// wrong, on two `parley serve` processes sharing a 3-node NATS cluster
// (JetStream R3): chat turn on broker A → voice turn on broker B → the
// agent worker killed mid-reply (a second worker takes over with context)
// → reload (resume token, on B) → ICE restart → kill -9 of broker B (A
// serves) → chat turn. The transcript ends complete, in order, without
// duplicates, byte for byte.
func TestContinuity(t *testing.T) {
	clusterURL := natsCluster(t)
	cfgFile := filepath.Join(t.TempDir(), "parley.yaml")
	yaml := "nats: {url: \"" + clusterURL + "\", replicas: 3}\n" +
		"media: {include_loopback: true}\n" +
		"echo_agent: {enabled: false}\n" +
		"agents: {heartbeat_timeout: 1500ms}\n" +
		"limits:\n" +
		"  resolve: {per_ip: \"0\", per_widget: \"0\"}\n  sessions: {per_ip: \"0\", per_widget: \"0\"}\n" +
		"  messages: {per_ip: \"0\", per_widget: \"0\"}\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, a, _ := serveProc(t, t.TempDir(), "--config", cfgFile)
	pb, b, _ := serveProc(t, t.TempDir(), "--config", cfgFile)

	// worker starts a worker running h on its own connection to the
	// cluster, which the test closes to play the worker's process dying.
	worker := func(h agentbridge.Handler) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(clusterURL, agentbridge.ConnectOptions(agentbridge.DefaultPrefix, configs.DefaultAgent)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		signalingtest.StartWorker(t, nc, configs.DefaultAgent, h)
		return nc
	}
	// Worker 1: slow, so it can die mid-reply.
	nc1 := worker(slowEcho)

	var sent []string // what the visitor said, in order
	turn := func(c *wsClient, id, text string) {
		t.Helper()
		c.Send(map[string]any{"type": "message", "body": text, "client_message_id": id})
		sent = append(sent, text)
		for {
			f := c.Next()
			if f.Str("type") == "done" && f.Str("body") == "echo: "+text {
				return
			}
		}
	}

	// 1. A chat turn on broker A.
	s := a.NewSession(nil)
	tap := agenttest.DialAudioTap(t, clusterURL, agentbridge.NewSubjects("").InAudio(configs.DefaultAgent, s.ConversationID))
	wsA := a.MustDialWS(s)
	turn(wsA, "c-1", "hello from chat")

	// 2. A voice turn on broker B (same session, same conversation).
	v := b.NewVoiceClient(s)
	v.WaitConnected()
	v.Send(signalingtest.Speech(t, 1, 400, 400))
	f, _ := wsA.Until("transcript") // the transcript reaches the chat leg on A
	utterance := f.Str("text")
	sent = append(sent, utterance)
	for f := wsA.Next(); !(f.Str("type") == "done" && f.Str("body") == "echo: "+utterance); f = wsA.Next() {
	}
	if n := len(tap.Frames()); n < 30 {
		t.Fatalf("only %d voice frames through NATS", n)
	}

	// 3. Worker 1 dies in the middle of a reply; worker 2 takes over.
	wsA.Send(map[string]any{"type": "message", "body": "please answer this", "client_message_id": "c-2"})
	sent = append(sent, "please answer this")
	wsA.Until("chunk")
	worker(echoAgent)
	killed := time.Now()
	nc1.Close()
	for f := wsA.Next(); !(f.Str("type") == "done" && f.Str("body") == "echo: please answer this" && f["interrupted"] != true); f = wsA.Next() {
	}
	t.Logf("failover: worker killed → full reply from the new worker in %v", time.Since(killed).Round(time.Millisecond))

	// 4. Reload: a new page resumes with the resume token, this time on B.
	v.Close()
	wsA.Conn.CloseNow()
	s2 := b.NewSession(map[string]any{"resume_token": s.ResumeToken})
	if s2.ConversationID != s.ConversationID || !s2.Resumed {
		t.Fatalf("reload gave %+v", s2)
	}
	wsB := b.MustDialWS(s2)
	turn(wsB, "c-3", "back after a reload")

	// 5. A fresh voice leg, then an ICE restart that keeps it.
	v2 := b.NewVoiceClient(s2)
	v2.WaitConnected()
	if r := v2.RestartICE(s2.Token); r.Status != http.StatusOK {
		t.Fatalf("ICE restart: %d %s", r.Status, r.Raw)
	}
	v2.Send(signalingtest.Speech(t, 1, 400, 400))
	f, _ = wsB.Until("transcript")
	utterance2 := f.Str("text")
	sent = append(sent, utterance2)
	for f := wsB.Next(); !(f.Str("type") == "done" && f.Str("body") == "echo: "+utterance2); f = wsB.Next() {
	}

	// 6. kill -9 broker B: the visitor reconnects to A and goes on.
	if err := pb.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	pb.wait()
	wsA2 := a.MustDialWS(s2)
	turn(wsA2, "c-4", "still here after a crash")

	// The transcript: every visitor turn once, in order, byte for byte,
	// each followed by its echo; the reply cut off by the dead worker is
	// marked interrupted.
	var visitor, replies []string
	for _, m := range a.History(s2) {
		body := m["body"].(string)
		switch {
		case m["role"] == "visitor":
			visitor = append(visitor, body)
		case m["interrupted"] == true:
			if !strings.HasPrefix("echo: please answer this", body) {
				t.Fatalf("interrupted reply %q is not a prefix of the echo", body)
			}
		default:
			replies = append(replies, body)
		}
	}
	var want []string
	for _, s := range sent {
		want = append(want, "echo: "+s)
	}
	if !slices.Equal(visitor, sent) || !slices.Equal(replies, want) {
		t.Fatalf("transcript:\nvisitor %q\n   sent %q\nreplies %q\n   want %q", visitor, sent, replies, want)
	}
}
