package signaling_test

import (
	"bytes"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// TestIdleChatLegGoroutines: an idle chat WebSocket costs the broker two
// goroutines of its own (the leg's loop and its reader). Its writer runs
// only while frames wait, its liveness ping only while a ping is out, and
// the conversation's live feed needs none once it is subscribed.
func TestIdleChatLegGoroutines(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	e := startEnv(t, func(c *configs.Config) {
		c.Chat.PingIdle = time.Hour // no ping is out while counting
	})
	const legs = 20
	for range legs {
		s := e.NewSession(nil)
		e.MustDialWS(s) // read the session frame: the leg is live
	}
	var n int
	var stacks string
	agenttest.Poll(t, 10*time.Second, "the legs' writers to finish", func() bool {
		n, stacks = legGoroutines()
		return n <= 2*legs
	})
	if n != 2*legs {
		t.Fatalf("%d goroutines in legs and hubs for %d idle legs, want %d:\n%s", n, legs, 2*legs, stacks)
	}
}

// legGoroutines counts the goroutines running a chat leg's or a hub's
// code, and returns their stacks.
func legGoroutines() (int, string) {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n := 0
	var stacks strings.Builder
	for g := range strings.SplitSeq(buf.String(), "\n\n") {
		if strings.Contains(g, "parley/signaling.(*leg)") || strings.Contains(g, "parley/broker.(*hub)") {
			n++
			stacks.WriteString(g + "\n\n")
		}
	}
	return n, stacks.String()
}
