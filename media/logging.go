package media

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/pion/logging"
)

// pionLoggers routes pion's scoped logs to slog (SettingEngine.LoggerFactory).
// pion's trace, debug and info become slog Debug (pion is chatty at info);
// warn and error keep their level, except the warnings every healthy call
// gives (routineWarnings), which become Debug. Formatting is skipped when
// the level is disabled.
type pionLoggers struct{ log *slog.Logger }

// NewLogger implements logging.LoggerFactory.
func (f pionLoggers) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

var _ logging.LeveledLogger = pionLogger{}

func (p pionLogger) emit(level slog.Level, msg string) {
	p.log.Log(context.Background(), level, msg)
}

func (p pionLogger) emitf(level slog.Level, format string, args ...any) {
	if !p.log.Enabled(context.Background(), level) {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if level == slog.LevelWarn && isRoutineWarning(msg) {
		level = slog.LevelDebug
	}
	p.log.Log(context.Background(), level, msg)
}

// routineWarnings are pion warnings that a call which connects and ends
// normally gives, so an operator's log would hold one or two for every
// call: each is a message prefix and, where the prefix alone could also
// mean trouble, the text that marks the routine case.
var routineWarnings = []struct{ prefix, marks string }{
	// The PeerConnection closed: its loop that waits for undeclared
	// streams ends (pion logs it at warn).
	{"Failed to accept RTP", "stream is already closed"},
	{"Failed to accept RTCP", "stream is already closed"},
	// ICE checks start before the visitor's trickled candidates arrive;
	// a connection that never gets any fails and is reported as failed.
	{"Failed to ping without candidate pairs", ""},
}

// isRoutineWarning reports whether a pion warning is one of
// routineWarnings.
func isRoutineWarning(msg string) bool {
	for _, w := range routineWarnings {
		if strings.HasPrefix(msg, w.prefix) && strings.Contains(msg, w.marks) {
			return true
		}
	}
	return false
}

func (p pionLogger) Trace(msg string)                  { p.emit(slog.LevelDebug, msg) }
func (p pionLogger) Tracef(format string, args ...any) { p.emitf(slog.LevelDebug, format, args...) }
func (p pionLogger) Debug(msg string)                  { p.emit(slog.LevelDebug, msg) }
func (p pionLogger) Debugf(format string, args ...any) { p.emitf(slog.LevelDebug, format, args...) }
func (p pionLogger) Info(msg string)                   { p.emit(slog.LevelDebug, msg) }
func (p pionLogger) Infof(format string, args ...any)  { p.emitf(slog.LevelDebug, format, args...) }
func (p pionLogger) Warn(msg string)                   { p.emitf(slog.LevelWarn, "%s", msg) }
func (p pionLogger) Warnf(format string, args ...any)  { p.emitf(slog.LevelWarn, format, args...) }
func (p pionLogger) Error(msg string)                  { p.emit(slog.LevelError, msg) }
func (p pionLogger) Errorf(format string, args ...any) { p.emitf(slog.LevelError, format, args...) }

// discardLogger is used when the caller passes a nil *slog.Logger.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
