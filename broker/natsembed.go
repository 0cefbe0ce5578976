package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embeddedReadyTimeout bounds how long the embedded server may take to
// accept connections when it reports no error; embeddedReadyStep is how
// often a start is checked for a recorded fatal error meanwhile.
const (
	embeddedReadyTimeout = 30 * time.Second
	embeddedReadyStep    = 25 * time.Millisecond
)

// EmbeddedSync is the embedded server's store sync policy.
type EmbeddedSync struct {
	// Always makes the server fsync every write before acknowledging it.
	Always bool
	// Interval is how often the server fsyncs otherwise; 0 keeps
	// nats-server's default (2 minutes).
	Interval time.Duration
}

// EmbeddedNATS starts an in-process nats-server with JetStream on a file
// store under dataDir, listening for clients on listen ("host:port"; port 0
// or -1 picks a free one). It checks first that dataDir is writable, and a
// start the server itself reports as failed returns at once with the
// server's own error. tune, if any, adjusts the server options last.
func EmbeddedNATS(listen, dataDir string, sync EmbeddedSync, log *slog.Logger, tune ...func(*server.Options)) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("broker: nats listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("broker: nats listen %q: %w", listen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if err := checkDataDir(dataDir); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:            "parley",
		Host:                  host,
		Port:                  port,
		JetStream:             true,
		StoreDir:              dataDir, // the server adds "jetstream/"
		NoSigs:                true,
		MaxPayload:            1 << 20,
		DisableShortFirstPing: true,
		SyncAlways:            sync.Always,
		SyncInterval:          sync.Interval,
	}
	for _, f := range tune {
		f(opts)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: nats server: %w", err)
	}
	logger := &natsLogger{log: log.With("component", "nats")}
	ns.SetLoggerV2(logger, false, false, false)
	ns.Start()
	for waited := time.Duration(0); ; waited += embeddedReadyStep {
		if ns.ReadyForConnections(embeddedReadyStep) {
			return ns, nil
		}
		if msg := logger.fatal(); msg != "" {
			ns.Shutdown()
			return nil, fmt.Errorf("broker: embedded nats-server failed to start: %s", msg)
		}
		if waited >= embeddedReadyTimeout {
			ns.Shutdown()
			return nil, fmt.Errorf("broker: embedded nats-server did not become ready in %s", embeddedReadyTimeout)
		}
	}
}

// checkDataDir makes sure the store directory dataDir/jetstream exists and
// a file can be created in it, so an unusable data directory is reported
// with the operating system's error before nats-server starts.
func checkDataDir(dataDir string) error {
	dir := filepath.Join(dataDir, "jetstream")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("broker: data dir %s is not usable: %w", dataDir, unwrapPath(err))
	}
	f, err := os.CreateTemp(dir, ".parley-write-check-*")
	if err != nil {
		return fmt.Errorf("broker: data dir %s is not writable: %w", dataDir, unwrapPath(err))
	}
	name := f.Name()
	werr := f.Close()
	if err := errors.Join(werr, os.Remove(name)); err != nil {
		return fmt.Errorf("broker: data dir %s is not writable: %w", dataDir, unwrapPath(err))
	}
	return nil
}

// unwrapPath returns a *fs.PathError's message with its path, which the
// callers already name, reduced to the operation and cause.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %s: %w", pe.Op, pe.Path, pe.Err)
	}
	return err
}

// natsLogger routes nats-server logs through slog and remembers the first
// fatal error (nats-server reports a failed JetStream start with Fatalf
// and keeps running without accepting clients).
type natsLogger struct {
	log *slog.Logger

	mu       sync.Mutex
	firstErr string
}

// fatal returns the first fatal error logged, or "".
func (l *natsLogger) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.firstErr
}

func (l *natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	l.mu.Lock()
	if l.firstErr == "" {
		l.firstErr = msg
	}
	l.mu.Unlock()
}
func (l *natsLogger) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Tracef(format string, v ...any) {}
