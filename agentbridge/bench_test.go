package agentbridge_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// BenchmarkFirstChunk measures the SDK's share of a reply's first chunk:
// from the broker end publishing a visitor message on the live subject to
// it receiving the reply's first text_delta append (the SDK's "thinking"
// state goes before it, pipelined), one message at a time, over a real
// NATS server on loopback.
func BenchmarkFirstChunk(b *testing.B) {
	be := newBrokerEnd(b)
	const cid = "conv_bench"
	w := be.startWorker(agentbridge.Options{}, agenttest.Echo)
	be.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
	agenttest.Poll(b, waitFor, "the conversation held", func() bool { return len(w.Conversations()) == 1 })
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		id := "msg_" + strconv.Itoa(i)
		start := time.Now()
		be.userMessage(cid, id, "hello")
		for {
			a := recv(b, be.appends, "the first chunk")
			if a.Sent.Type == agentbridge.EventTextDelta && a.Sent.ReplyTo == id {
				lat = append(lat, time.Since(start))
				break
			}
		}
		for { // the rest of the reply, so that runs do not overlap
			if a := recv(b, be.appends, "the reply's end"); a.Sent.Type == agentbridge.EventTextDone {
				break
			}
		}
	}
	b.ReportMetric(float64(agenttest.Percentile(lat, 0.5).Microseconds())/1000, "first-chunk-p50-ms")
	b.ReportMetric(float64(agenttest.Percentile(lat, 0.9).Microseconds())/1000, "first-chunk-p90-ms")
}
