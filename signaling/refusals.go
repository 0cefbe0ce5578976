package signaling

import (
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// refusalLog logs requests the edge refuses before anyone is authenticated
// (a forged LiveKit webhook, say). Anyone on the network can send those as
// fast as they like, so each kind of refusal (its message) gets at most
// refusalBurst lines at once and one a second after that; the next line
// that gets through says how many were left out ("suppressed"). The kinds
// are the fixed messages of the code, so the map stays small. No line
// names the client's address (docs/SECURITY.md).
type refusalLog struct {
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex
	kinds map[string]*refusalKind
}

type refusalKind struct {
	lim        *rate.Limiter
	suppressed int
}

const (
	refusalEvery = time.Second
	refusalBurst = 5
)

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, now: time.Now, kinds: map[string]*refusalKind{}}
}

// warn logs msg at WARN unless that kind of refusal is over its rate.
func (l *refusalLog) warn(msg string, args ...any) {
	l.mu.Lock()
	k := l.kinds[msg]
	if k == nil {
		k = &refusalKind{lim: rate.NewLimiter(rate.Every(refusalEvery), refusalBurst)}
		l.kinds[msg] = k
	}
	if !k.lim.AllowN(l.now(), 1) {
		k.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := k.suppressed
	k.suppressed = 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Warn(msg, args...)
}
