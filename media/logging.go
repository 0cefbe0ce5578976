package media

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLoggers routes pion's scoped logs to slog (SettingEngine.LoggerFactory).
// pion's trace, debug and info become slog Debug (pion is chatty at info);
// warn and error keep their level. Formatting is skipped when the level is
// disabled.
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
	p.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (p pionLogger) Trace(msg string)                  { p.emit(slog.LevelDebug, msg) }
func (p pionLogger) Tracef(format string, args ...any) { p.emitf(slog.LevelDebug, format, args...) }
func (p pionLogger) Debug(msg string)                  { p.emit(slog.LevelDebug, msg) }
func (p pionLogger) Debugf(format string, args ...any) { p.emitf(slog.LevelDebug, format, args...) }
func (p pionLogger) Info(msg string)                   { p.emit(slog.LevelDebug, msg) }
func (p pionLogger) Infof(format string, args ...any)  { p.emitf(slog.LevelDebug, format, args...) }
func (p pionLogger) Warn(msg string)                   { p.emit(slog.LevelWarn, msg) }
func (p pionLogger) Warnf(format string, args ...any)  { p.emitf(slog.LevelWarn, format, args...) }
func (p pionLogger) Error(msg string)                  { p.emit(slog.LevelError, msg) }
func (p pionLogger) Errorf(format string, args ...any) { p.emitf(slog.LevelError, format, args...) }

// discardLogger is used when the caller passes a nil *slog.Logger.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
