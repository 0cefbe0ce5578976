package benchproc

import (
	"context"
	"encoding/json"
	"io"
	"time"
)

// Table is a report that prints itself for a person.
type Table interface{ PrintTable(w io.Writer) }

// Print writes a load generator's report to w: indented JSON with asJSON,
// else its table.
func Print(w io.Writer, rep Table, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return
	}
	rep.PrintTable(w)
}

// SleepUntil waits until t, or returns ctx's cause when ctx ends first.
func SleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Pace waits on timer (reset here, so that a sending loop reuses one)
// until t, and reports false when quit closes first. With t past it only
// looks at quit: a late loop catches up on its schedule without waiting.
func Pace(timer *time.Timer, t time.Time, quit <-chan struct{}) bool {
	if d := time.Until(t); d > 0 {
		timer.Reset(d)
		select {
		case <-quit:
			return false
		case <-timer.C:
			return true
		}
	}
	select {
	case <-quit:
		return false
	default:
		return true
	}
}
