package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/cmd/internal/benchchat"
)

// TestBenchChat runs `parley bench chat` in-process with a few
// conversations against a child `parley serve` and a `parley agent echo`
// process, and checks that every conversation went live, every message of
// the window was answered, it measured the latencies, memory and
// consumers, and left no goroutine behind.
func TestBenchChat(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds parley and runs a child `parley serve` and agent under chat load")
	}
	bin := parleyBinary(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	o := benchchat.Options{Conversations: 40, Rate: 40, Duration: 2 * time.Second, Warmup: 500 * time.Millisecond,
		Workers: 8, Agent: "process", Binary: bin, Prefix: "parley"}
	rep, table := runBench(t, func(ctx context.Context, log io.Writer) (*benchchat.Report, error) { return benchchat.Run(ctx, o, log) })

	if rep.Live != 40 || len(rep.Failures) != 0 {
		t.Errorf("live %d of 40, failures %v", rep.Live, rep.Failures)
	}
	m := rep.Messages
	if m.Sent < 40 || m.Acked != m.Sent || m.Answered != m.Sent || m.Lost != 0 || len(m.Errors) != 0 {
		t.Errorf("messages %+v: every one sent in the window must be acked and answered", m)
	}
	if rep.AckMS.N != m.Sent || rep.FirstChunkMS.N != m.Sent || rep.FirstChunkMS.P50 <= 0 || rep.FirstChunkMS.P99 < rep.FirstChunkMS.P50 {
		t.Errorf("ack %+v, first chunk %+v", rep.AckMS, rep.FirstChunkMS)
	}
	if rep.Sessions.PerS <= 0 || rep.Sessions.MS.N != 40 {
		t.Errorf("sessions %+v", rep.Sessions)
	}
	if rep.Server.RSSLiveIdleMiB <= 0 || rep.Server.CPUPct <= 0 || rep.Agent.CPUPct <= 0 || rep.AgentPID == 0 {
		t.Errorf("server %+v, agent %+v (pid %d)", rep.Server, rep.Agent, rep.AgentPID)
	}
	// The conversation stream's one consumer, whatever the conversations.
	if rep.JetStreamConsumers < 1 || rep.JetStreamConsumers > 2 {
		t.Errorf("JetStream consumers %d with 40 live conversations", rep.JetStreamConsumers)
	}
	var back benchchat.Report
	if b, err := json.Marshal(rep); err != nil || json.Unmarshal(b, &back) != nil || back.Messages.Sent != m.Sent {
		t.Errorf("JSON round trip: %v", err)
	}
	if !strings.Contains(table, "sent → first chunk of the reply") {
		t.Errorf("table:\n%s", table)
	}
}
