package benchvoice

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// audioTap is the agent subscriber: one NATS connection subscribed to every
// conversation's in.audio.
type audioTap struct {
	nc     *nats.Conn
	win    *window
	closed chan struct{}
	once   sync.Once

	slowConsumer atomic.Uint64
	frames       atomic.Uint64 // every frame received

	mu       sync.Mutex
	sessions map[string]*session // by conversation id
	latUS    []int32             // RTP arrival → here, frames captured in the window
	e2eUS    []int32             // client write → here, frames written in the window
	unknown  uint64
	bad      uint64
}

func newTap(natsURL, creds, prefix string, win *window) (*audioTap, error) {
	t := &audioTap{win: win, closed: make(chan struct{}), sessions: map[string]*session{}}
	var auth []nats.Option
	if creds != "" {
		auth = append(auth, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(natsURL, append(auth, nats.Name("parley-bench-voice"),
		nats.ClosedHandler(func(*nats.Conn) { close(t.closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				t.slowConsumer.Add(1)
			}
		}))...)
	if err != nil {
		return nil, fmt.Errorf("bench: NATS %s: %w", natsURL, err)
	}
	t.nc = nc
	// Every agent's visitor audio: <prefix>.agents.<agent>.conv.<cid>.in.audio.
	sub, err := nc.Subscribe(agentbridge.NewSubjects(prefix).InAudio("*", "*"), t.onFrame)
	if err == nil {
		err = sub.SetPendingLimits(1<<20, 1<<30)
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		t.close()
		return nil, fmt.Errorf("bench: NATS subscribe: %w", err)
	}
	return t, nil
}

func (t *audioTap) register(s *session) {
	t.mu.Lock()
	t.sessions[s.cid] = s
	t.mu.Unlock()
}

// onFrame records one published mic frame (the subscription's goroutine).
func (t *audioTap) onFrame(m *nats.Msg) {
	now := time.Now()
	t.frames.Add(1)
	f, err := agentbridge.ParseAudioFrame(m)
	var cid string
	if tok := strings.Split(m.Subject, "."); len(tok) >= 3 {
		cid = tok[len(tok)-3]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.bad++
		return
	}
	s := t.sessions[cid]
	if s == nil {
		t.unknown++
		return
	}
	if s.firstNATS.IsZero() {
		s.firstNATS = now
	}
	s.natsFrames++
	i := uint32(f.Timestamp) / frameSamples // our frame index (timestamp = index × 960)
	// The payload names the frame of the loop, hence when it was written
	// (and, through LiveKit, which rewrites timestamps, its index).
	if k, ok := s.g.index[string(f.Payload)]; ok {
		if s.lk != nil {
			i = s.sentIdx[k].Load()
		}
		if at := time.Unix(0, s.sentAt[k].Load()); t.win.contains(at) {
			t.e2eUS = append(t.e2eUS, int32(min(now.Sub(at).Microseconds(), math.MaxInt32)))
		}
	} else if s.lk != nil {
		return // not a frame of ours (nothing else is sent)
	}
	if w := int(i / 64); w < 1<<20 {
		if w >= len(s.got) {
			s.got = append(s.got, make([]uint64, w+1-len(s.got)+64)...)
		}
		s.got[w] |= 1 << (i % 64)
	}
	inWin := t.win.contains(f.CapturedAt)
	if inWin && s.lastSeq != 0 && f.Seq > s.lastSeq+1 {
		s.seqGaps += f.Seq - s.lastSeq - 1
	}
	s.lastSeq = max(s.lastSeq, f.Seq)
	if inWin {
		t.latUS = append(t.latUS, int32(min(now.Sub(f.CapturedAt).Microseconds(), math.MaxInt32)))
	}
}

// settle waits, after the senders stopped, until no frame has come for
// settleQuiet (at most settleMax): under overload frames reach NATS
// seconds late, and they count.
func (t *audioTap) settle(ctx context.Context) {
	deadline := time.Now().Add(settleMax)
	last, quiet := t.frames.Load(), 0
	for time.Now().Before(deadline) && quiet < int(settleQuiet/(50*time.Millisecond)) {
		if benchproc.SleepUntil(ctx, time.Now().Add(50*time.Millisecond)) != nil {
			return
		}
		if n := t.frames.Load(); n != last {
			last, quiet = n, 0
		} else {
			quiet++
		}
	}
}

// checkAudio fails connected sessions that have published nothing yet.
func (t *audioTap) checkAudio(sessions []*session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range sessions {
		if s.err == nil && s.firstNATS.IsZero() {
			s.err = errors.New("connected, but no audio on NATS before the window")
		}
	}
}

func (t *audioTap) close() {
	t.once.Do(func() {
		if t.nc == nil {
			return
		}
		if err := t.nc.Drain(); err != nil {
			t.nc.Close()
		}
		select {
		case <-t.closed:
		case <-time.After(10 * time.Second):
			t.nc.Close()
		}
	})
}

// published counts the frames of [i0, i1) found on NATS.
func published(got []uint64, i0, i1 uint32) uint64 {
	var n uint64
	for i := i0; i < i1; {
		w := int(i / 64)
		if w >= len(got) {
			break
		}
		word := got[w] >> (i % 64)
		take := min(64-i%64, i1-i)
		if take < 64 {
			word &= 1<<take - 1
		}
		n += uint64(bits.OnesCount64(word))
		i += take
	}
	return n
}
