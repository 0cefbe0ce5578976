package agenttest

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// fatalTB records a Fatalf and ends its goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// TestPoll: Poll returns once the condition holds, and fails the test when
// it never does.
func TestPoll(t *testing.T) {
	n := 0
	Poll(t, 10*time.Second, "the third check", func() bool { n++; return n >= 3 })
	if n != 3 {
		t.Fatalf("checked %d times, want 3", n)
	}
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Poll(f, 20*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if !strings.Contains(f.msg, "waiting for never") {
		t.Fatalf("Poll on a condition that never held: Fatalf %q", f.msg)
	}
}

// TestAudioTap: a tap collects the frames published on its subject, in
// order, over a real NATS server.
func TestAudioTap(t *testing.T) {
	s := RunNATS(t, func(o *server.Options) { o.JetStream = false })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subj := agentbridge.NewSubjects("").InAudio("echo", "conv_1")
	tap := DialAudioTap(t, s.ClientURL(), subj)
	for i := range 5 {
		f := agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: uint64(i), Payload: []byte{byte(i)}}
		if err := nc.PublishMsg(f.Msg(subj)); err != nil {
			t.Fatal(err)
		}
	}
	got := tap.Wait(t, 5, 10*time.Second)
	for i, f := range got {
		if f.Seq != uint64(i) || f.Payload[0] != byte(i) {
			t.Fatalf("frame %d = %+v", i, f)
		}
	}
	if frames, at := tap.Arrivals(); len(frames) != 5 || len(at) != 5 || at[4].Before(at[0]) {
		t.Fatalf("arrivals: %d frames at %v", len(frames), at)
	}
}
