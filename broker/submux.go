package broker

import (
	"hash/maphash"
	"runtime"
	"sync"

	"github.com/nats-io/nats.go"
)

// subMux runs the handlers of the many per-conversation core NATS
// subscriptions (a hub's events and notices, a voice leg's agent audio)
// on a few goroutines. nats.go gives each asynchronous subscription a
// goroutine and a pending queue of its own: a stack and a wake-up per
// subscription, for thousands of conversations that are mostly idle. Here
// each subscription delivers (nats.ChanSubscribe) into one of a few shard
// channels, chosen by a key (its conversation id), so one conversation's
// messages keep their order, and each shard's goroutine runs the handlers.
//
// A handler must not block: the other subscriptions of its shard wait
// behind it. A shard that falls subMuxBuffer messages behind makes NATS
// drop a message (a slow consumer, as an asynchronous subscription's
// pending limit would): a hub reads a lost event back from the log; a lost
// agent audio frame stays lost.
//
// The shard goroutines are the mux's own: stop ends them and waits.
type subMux struct {
	nc     *nats.Conn
	seed   maphash.Seed
	shards []chan *nats.Msg
	quit   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	// mu is held across a subscribe and the registration of its handler,
	// so a shard that sees a message of a subscription it does not know
	// yet waits for it.
	mu       sync.Mutex
	handlers sync.Map // *nats.Subscription → nats.MsgHandler
}

// subMuxBuffer is how many messages a shard may hold: 512 KiB of pointers
// a shard, enough for the bursts of 10,000 conversations answered at once
// (with 8,192 the first answers of such a burst overflowed, and each lost
// event became a read of the log).
const subMuxBuffer = 1 << 16

func newSubMux(nc *nats.Conn) *subMux {
	m := &subMux{nc: nc, seed: maphash.MakeSeed(), quit: make(chan struct{}),
		shards: make([]chan *nats.Msg, max(4, 2*runtime.GOMAXPROCS(0)))}
	for i := range m.shards {
		m.shards[i] = make(chan *nats.Msg, subMuxBuffer)
		m.wg.Go(func() { m.run(m.shards[i]) })
	}
	return m
}

// subscribe subscribes h to subject on the shard of key.
func (m *subMux) subscribe(subject, key string, h nats.MsgHandler) (*nats.Subscription, error) {
	ch := m.shards[maphash.String(m.seed, key)%uint64(len(m.shards))]
	m.mu.Lock()
	defer m.mu.Unlock()
	sub, err := m.nc.ChanSubscribe(subject, ch)
	if err != nil {
		return nil, err
	}
	m.handlers.Store(sub, h)
	return sub, nil
}

// unsubscribe ends sub; messages of it still in its shard are dropped.
func (m *subMux) unsubscribe(sub *nats.Subscription) error {
	err := sub.Unsubscribe()
	m.handlers.Delete(sub)
	return err
}

func (m *subMux) run(ch chan *nats.Msg) {
	for {
		select {
		case msg := <-ch:
			h, ok := m.handlers.Load(msg.Sub)
			if !ok {
				// Its subscribe may still be registering it (or it
				// was unsubscribed): wait for that, and look again.
				m.mu.Lock()
				h, ok = m.handlers.Load(msg.Sub)
				m.mu.Unlock()
				if !ok {
					continue
				}
			}
			h.(nats.MsgHandler)(msg)
		case <-m.quit:
			return
		}
	}
}

// stop ends the shard goroutines and waits for them. Call it once the
// connection is closed; it is idempotent.
func (m *subMux) stop() {
	m.once.Do(func() { close(m.quit) })
	m.wg.Wait()
}
