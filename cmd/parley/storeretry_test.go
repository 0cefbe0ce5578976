package main

import (
	"bytes"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/configs"
)

// stallProxy forwards TCP between a NATS client and server on loopback.
// The first time marker passes from the client to the server it holds
// that direction for hold (the bytes wait in the socket buffers, as with a
// stalled node or a starved machine), then forwards everything.
type stallProxy struct {
	ln       net.Listener
	upstream string
	marker   []byte
	hold     time.Duration

	once    sync.Once
	stalled chan struct{} // closed when the marker is seen
	quit    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func newStallProxy(t *testing.T, upstream, marker string, hold time.Duration) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, upstream: upstream, marker: []byte(marker), hold: hold,
		stalled: make(chan struct{}), quit: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			p.pipe(u, c, true)
		}()
		go func() {
			defer p.wg.Done()
			p.pipe(c, u, false)
		}()
	}
}

// pipe copies src to dst; toServer watches for the marker.
func (p *stallProxy) pipe(dst, src net.Conn, toServer bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	var tail []byte
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if toServer {
				window := append(tail, buf[:n]...)
				if bytes.Contains(window, p.marker) {
					p.once.Do(func() {
						close(p.stalled)
						t := time.NewTimer(p.hold)
						defer t.Stop()
						select {
						case <-t.C:
						case <-p.quit:
						}
					})
				}
				tail = append(tail[:0], window[max(0, len(window)-len(p.marker)):]...)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) close() {
	close(p.quit)
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestPostSurvivesStoreStall: the store stops answering while a visitor's
// message is being stored (the NATS connection stalls for 6.5 s right as
// the message is published, longer than one attempt and than the 5 s the
// client library waits by default). Publishing carries a Nats-Msg-Id, so
// the broker tries again within the request's budget: the message is
// acknowledged, not STORE_UNAVAILABLE, and stored exactly once although
// every attempt reached the server in the end.
func TestPostSurvivesStoreStall(t *testing.T) {
	const hold = 6500 * time.Millisecond
	server := natsServer(t)
	p := newStallProxy(t, server[len("nats://"):], "store me slowly", hold)
	e := startEnv(t, noEcho, func(c *configs.Config) { c.NATS.URL = p.url() })
	s := e.NewSession(nil)
	if r := e.Post(s, "before", "m-1", false); r.Status != 202 {
		t.Fatalf("post before the stall: %d %s", r.Status, r.Raw)
	}
	start := time.Now()
	r := e.Post(s, "store me slowly", "m-2", false)
	took := time.Since(start)
	select {
	case <-p.stalled:
	default:
		t.Fatal("the proxy never saw the message: nothing stalled")
	}
	if r.Status != 202 || r.Body["duplicate"] == true {
		t.Fatalf("post during a %v stall (took %v): %d %s\nlogs: %s", hold, took, r.Status, r.Raw, tail(e.logs.String(), 3000))
	}
	if r2 := e.Post(s, "after", "m-3", false); r2.Status != 202 {
		t.Fatalf("post after the stall: %d %s", r2.Status, r2.Raw)
	}
	// The client retries with the same id: still one message.
	if r2 := e.Post(s, "store me slowly", "m-2", false); r2.Status != 200 && r2.Status != 202 || r2.Body["duplicate"] != true ||
		r2.Str("message_id") != r.Str("message_id") {
		t.Fatalf("client retry: %d %s (first: %s)", r2.Status, r2.Raw, r.Raw)
	}
	var got []string
	for _, m := range e.History(s) {
		got = append(got, m["body"].(string))
	}
	if want := []string{"before", "store me slowly", "after"}; !slices.Equal(got, want) {
		t.Fatalf("history = %q, want %q", got, want)
	}
	t.Logf("message acknowledged %v after posting, through a %v stall", took.Round(time.Millisecond), hold)
}

// TestBrowserResendsRefusedMessage: the store stalls for longer than the
// broker's retry budget, so the visitor's first send is refused with
// STORE_UNAVAILABLE. The widget sends the message again by itself with the
// same client_message_id: it is acknowledged, answered and stored once,
// and the visitor never has to retype it.
func TestBrowserResendsRefusedMessage(t *testing.T) {
	requireChromium(t)
	const text = "please keep this one"
	const hold = 12 * time.Second // beyond the broker's 10 s store budget
	p := newStallProxy(t, natsServer(t)[len("nats://"):], text, hold)
	e := startEnv(t, func(c *configs.Config) { c.NATS.URL = p.url() })
	b := newBrowser(t)
	b.openDemo(e)

	b.typeMessage(text)
	<-p.stalled
	b.waitJS(hold+5*time.Second, "the refused message to be sent again", widgetJS+`.resends >= 1`)
	d := b.waitJS(hold+10*time.Second, "the echo of the resent message", hasLine("agent", "echo: "+text))
	b.waitJS(5*time.Second, "the message line acknowledged", `!`+sq(".log .visitor.pending")+` && !`+sq(".log .visitor.failed")+
		` && `+widgetJS+`.outbox === 0`)
	var resends int
	b.mustEval(widgetJS+`.resends`, &resends)
	n := 0
	for _, m := range e.History(session{ID: b.session().SessionID, Token: b.token()}) {
		if m["body"] == text {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the message is stored %d times, want once", n)
	}
	t.Logf("store stalled %v: the widget resent the message %d time(s); echo shown %v after the resend began", hold, resends, d.Round(time.Millisecond))
}
