package signaling

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Logging of refusals anyone can cause without credentials: refused
// origins, forged LiveKit webhooks. A page whose origin no widget allows is
// the most common first-deploy mistake, so each refusal is logged (WARN) with
// the page's origin and the widget's id, so the operator can tell the
// site owner what to add to allowed_origins. Anyone can send any Origin,
// though, so the lines are rate limited: per origin and widget at most one
// line per refusalEvery (after a first burst of refusalBurst), and over
// all of them at most refusalGlobalRate lines a second. What is held back
// is counted and reported on the next line that is written ("suppressed"),
// so the log says how many there were without holding each one.
//
// Never logged: the client IP (docs/SECURITY.md), a secret, the request's
// body.
const (
	refusalEvery      = time.Minute
	refusalBurst      = 3
	refusalGlobalRate = 5
	refusalGlobalMax  = 10
	// refusalKeys bounds the per-(origin, widget) limiters: when a flood
	// of distinct origins fills the map it is emptied, and the global
	// limiter alone keeps the log bounded.
	refusalKeys = 1024
)

// refusalLog rate-limits the log lines of refusals. It is safe for
// concurrent use; it owns no goroutine.
type refusalLog struct {
	log *slog.Logger

	mu         sync.Mutex
	keys       map[string]*rate.Limiter // origin + " " + widget id
	global     *rate.Limiter
	suppressed int // refusals not logged since the last line
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, keys: make(map[string]*rate.Limiter),
		global: rate.NewLimiter(refusalGlobalRate, refusalGlobalMax)}
}

// refused notes that origin was refused for widget (its id) on route (the
// request's route pattern) at now, and logs it unless the limits say not
// to. It reports whether it wrote a line.
func (l *refusalLog) refused(now time.Time, origin, widget, route string) bool {
	if len(origin) > 256 {
		origin = origin[:256] + "…" // the header is the caller's: bound what reaches the log
	}
	return l.warn(now, origin+" "+widget,
		"origin refused: the widget does not allow the page's origin (if the page is the site's, add its origin to the widget's allowed_origins)",
		"origin", origin, "widget_id", widget, "route", route)
}

// warn logs msg with args at WARN, unless key (what is refused: an origin
// and widget, a forged LiveKit webhook) or all refusals together are over
// their limits. It reports whether it wrote a line.
func (l *refusalLog) warn(now time.Time, key, msg string, args ...any) bool {
	return l.logAt(now, slog.LevelWarn, key, msg, args...)
}

// internal logs, at ERROR, the cause of a 500 INTERNAL answered on route
// (its pattern): the client is told only "internal error", so the log is
// where an operator learns what failed. The same limits bound it.
func (l *refusalLog) internal(now time.Time, route string, err error) bool {
	return l.logAt(now, slog.LevelError, "internal "+route,
		"request failed with an unexpected error: answered 500 INTERNAL", "route", route, "err", err)
}

func (l *refusalLog) logAt(now time.Time, level slog.Level, key, msg string, args ...any) bool {
	l.mu.Lock()
	lim, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= refusalKeys {
			clear(l.keys)
		}
		lim = rate.NewLimiter(rate.Every(refusalEvery), refusalBurst)
		l.keys[key] = lim
	}
	if !lim.AllowN(now, 1) || !l.global.AllowN(now, 1) {
		l.suppressed++
		l.mu.Unlock()
		return false
	}
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, append(args, "suppressed", suppressed)...)
	return true
}
