package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// startWorkerOn starts an echo worker on its own NATS connection, which
// the caller may close abruptly to play a crashed agent process (no
// drain, no more heartbeats).
func (e *env) startWorkerOn() (*agentbridge.Worker, *nats.Conn) {
	e.t.Helper()
	nc := e.agentConn(configs.DefaultAgent)
	return signalingtest.StartWorker(e.t, nc, configs.DefaultAgent, echoAgent), nc
}

// streamSpeech sends speech on the voice client in a loop, on a 20 ms
// schedule, until the test ends; the goroutine is waited for.
func streamSpeech(t *testing.T, c *voiceClient) {
	frames := signalingtest.Speech(t, 1, 400, 600)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		onTicks(20*time.Millisecond, stop, func(i int) { _ = c.Track.WriteSample(signalingtest.SampleOf(frames[i%len(frames)])) })
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// onTicks calls f(0), f(1), … one a tick of every, the first a tick after
// it starts, until stop closes.
func onTicks(every time.Duration, stop <-chan struct{}, f func(i int)) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		f(i)
	}
}

// TestVoiceFailover: during a voice call the agent worker's process dies
// (its NATS connection drops: no drain, no more heartbeats). Voice rooms
// are flushed to ops every interval, which used to ask the registry who
// holds the conversation and made it forget the dead worker, so the sweep
// never saw the loss: no "worker lost", no reconnecting, no re-dispatch,
// and the call never got agent audio back. Now the visitor is told
// (agent_state reconnecting), and when a new worker starts it gets the
// conversation at once and its audio reaches the caller.
func TestVoiceFailover(t *testing.T) {
	e := startEnv(t, noEcho, voiceConfig, func(c *configs.Config) {
		c.Agents.HeartbeatTimeout = time.Second
		c.Agents.DispatchRetryMax = 5 * time.Second // the default
		c.Ops.RoomUpdateInterval = 20 * time.Millisecond
	})
	_, nc1 := e.startWorkerOn()
	s, ws, c := e.voiceSession()
	streamSpeech(t, c)
	agenttest.Poll(t, 15*time.Second, "agent audio from the first worker", func() bool { return c.Received.Load() >= 50 })

	killed := time.Now()
	nc1.Close()
	for {
		f := ws.Next()
		if f.Str("type") == "agent_state" && f.Str("state") == "reconnecting" {
			break
		}
	}
	detected := time.Since(killed)
	agenttest.Poll(t, 5*time.Second, `the "agent worker lost" log line`, func() bool {
		return strings.Contains(e.logs.String(), "agent worker lost") && strings.Contains(e.logs.String(), s.ConversationID)
	})
	// The broker tries to dispatch it again and finds no worker at all.
	if f, _ := ws.Until("error"); f.Str("code") != "AGENT_UNAVAILABLE" {
		t.Fatalf("error frame = %v", f)
	}
	before := c.Received.Load()
	// No agent, no agent audio: nothing reaches the caller meanwhile.
	quiet := time.Now()
	agenttest.Poll(t, 5*time.Second, "half a second without an agent", func() bool { return time.Since(quiet) > 500*time.Millisecond })
	if got := c.Received.Load(); got != before {
		t.Fatalf("the caller got %d frames with no agent", got-before)
	}

	started := time.Now()
	e.startWorkerOn()
	agenttest.Poll(t, 10*time.Second, "agent audio from the new worker", func() bool { return c.Received.Load() > before })
	firstFrame := time.Since(started)
	agenttest.Poll(t, 10*time.Second, "a second of agent audio from the new worker", func() bool { return c.Received.Load() >= before+50 })
	t.Logf("worker killed → reconnecting on the socket: %v; new worker started → first agent audio frame at the caller: %v (50 frames: %v)",
		detected.Round(time.Millisecond), firstFrame.Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
}

// TestDispatchWakesWhenWorkerAppears: a conversation waiting for a worker
// is dispatched as soon as one appears, not at the next step of its
// backoff. dispatch_retry_max is 30 s; the test lets the backoff grow to
// 6.4 s, then starts a worker: the reply comes within a few seconds (it
// came only at the next attempt, 6.4 s later, before).
func TestDispatchWakesWhenWorkerAppears(t *testing.T) {
	e := startEnv(t, noEcho, func(c *configs.Config) {
		c.Agents.DispatchTimeout = 100 * time.Millisecond
		c.Agents.DispatchRetryMax = 30 * time.Second
	})
	// Count the dispatch attempts (a plain subscriber that never answers:
	// each attempt waits out dispatch_timeout).
	attempts := make(chan struct{}, 64)
	nc := e.natsConn()
	if _, err := nc.Subscribe(e.app.broker.Subjects().Dispatch(configs.DefaultAgent), func(*nats.Msg) {
		attempts <- struct{}{}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	ws.Send(map[string]any{"type": "message", "body": "anyone?", "client_message_id": "w-1"})
	first := time.Now()
	// Attempts go out at about 0, 0.2, 0.5, 1.0, 1.9, 3.6 and 6.9 s; after
	// the 7th the loop waits 6.4 s.
	for i := 1; i <= 7; i++ {
		select {
		case <-attempts:
		case <-time.After(30 * time.Second):
			t.Fatalf("dispatch attempt %d never came", i)
		}
	}
	t.Logf("7 dispatch attempts in %v", time.Since(first).Round(time.Millisecond))

	started := time.Now()
	e.startWorkerOn()
	for {
		f, err := ws.Read(20 * time.Second)
		if err != nil {
			t.Fatalf("no reply after the worker started: %v", err)
		}
		if f.Str("type") == "done" && f.Str("body") == "echo: anyone?" {
			break
		}
	}
	took := time.Since(started)
	t.Logf("worker started → waiting message answered: %v (the backoff step was 6.4 s)", took.Round(time.Millisecond))
	if took > 4*time.Second {
		t.Fatalf("the waiting conversation was dispatched %v after a worker appeared: it waited for its backoff", took)
	}
}
