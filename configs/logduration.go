package configs

import (
	"log/slog"
	"time"
)

// logDuration is a duration attribute that every slog handler renders as
// Go duration text ("2m0s"). slog.Duration is rendered so by the text
// handler, but as an integer of nanoseconds by the JSON one, which makes
// the start-up log of a JSON deployment unreadable.
func logDuration(key string, d time.Duration) slog.Attr {
	return slog.String(key, d.String())
}
