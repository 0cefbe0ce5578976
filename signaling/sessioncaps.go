package signaling

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/parley-rtc/parley/configs"
)

// One session token is one visitor, who needs a WebSocket or two (a
// reconnect overlaps the old one) and a mode switch now and then. Without
// caps one stolen or scripted token could hold hundreds of sockets, churn
// voice offers (each a new peer connection) and append a mode switch to the
// durable log for every request. sessionCaps holds, per session on this
// broker, the number of live WebSockets and a token bucket for mode
// switches, voice offers and LiveKit joins.
type sessionCaps struct {
	maxWS    int          // 0: unlimited
	switches configs.Rate // Unlimited: no bucket

	mu sync.Mutex
	m  map[string]*sessionCap // session id → its caps; swept when idle
}

type sessionCap struct {
	ws   int
	lim  *rate.Limiter // nil: switches are unlimited
	last time.Time     // of the last use, for sweep
}

func newSessionCaps(l configs.LimitsConfig) *sessionCaps {
	switches, _ := configs.ParseRate(l.PerSession.ModeSwitches) // validated with the config
	return &sessionCaps{maxWS: l.PerSession.WebSockets, switches: switches, m: map[string]*sessionCap{}}
}

// get returns the session's caps; call with mu held.
func (c *sessionCaps) get(id string, now time.Time) *sessionCap {
	sc := c.m[id]
	if sc == nil {
		sc = &sessionCap{}
		if !c.switches.Unlimited() {
			sc.lim = rate.NewLimiter(rate.Every(c.switches.Per/time.Duration(c.switches.N)), c.switches.N)
		}
		c.m[id] = sc
	}
	sc.last = now
	return sc
}

// openWS counts a new WebSocket of session id, or refuses it over the cap
// with ErrSessionLimit. The caller calls closeWS when it ends.
func (c *sessionCaps) openWS(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc := c.get(id, time.Now())
	if c.maxWS > 0 && sc.ws >= c.maxWS {
		return fmt.Errorf("%w: at most %d live WebSockets per session (limits.per_session.websockets)", ErrSessionLimit, c.maxWS)
	}
	sc.ws++
	return nil
}

// closeWS counts a WebSocket of session id as ended.
func (c *sessionCaps) closeWS(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.get(id, time.Now()).ws--
}

// modeSwitch takes a token of session id's switch bucket: a mode switch, a
// voice offer or a LiveKit join. Refused, it returns how long until the
// next would pass.
func (c *sessionCaps) modeSwitch(id string) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	sc := c.get(id, now)
	if sc.lim == nil {
		return 0, true
	}
	r := sc.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// sweep drops the caps of sessions with no live WebSocket whose bucket
// has refilled (no use for a whole period).
func (c *sessionCaps) sweep(now time.Time) {
	idle := time.Minute
	if !c.switches.Unlimited() && c.switches.Per > idle {
		idle = c.switches.Per
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, sc := range c.m {
		if sc.ws <= 0 && now.Sub(sc.last) > idle {
			delete(c.m, id)
		}
	}
}

// allowSwitch is the gate of every request that switches a session's mode
// or starts a voice leg: ErrRateLimited, with Retry-After on w when there
// is one, once the session's limits.per_session.mode_switches are spent.
func (s *Server) allowSwitch(w http.ResponseWriter, sessionID string) error {
	wait, ok := s.caps.modeSwitch(sessionID)
	if ok {
		return nil
	}
	if w != nil {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	}
	return fmt.Errorf("%w: too many mode switches and voice starts for this session (limits.per_session.mode_switches %s)",
		ErrRateLimited, s.caps.switches)
}
