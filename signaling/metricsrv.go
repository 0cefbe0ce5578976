package signaling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/media"
)

// /metrics names every tenant's agents, the live sessions and the traffic
// of each route: nothing for the public address the widget API shares.
// There it needs an admin key of every tenant with ops:read (a Prometheus
// sends it as a bearer token). ops.metrics_listen adds a second listener
// that serves only /metrics, without a key, for a Prometheus on the host or
// an internal network.

// serveMetrics: GET /metrics on the main address.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	if key.Tenant != "" {
		return fmt.Errorf("%w: /metrics shows every tenant: use a key of no tenant", ErrMissingScope)
	}
	s.metrics.handler().ServeHTTP(w, r)
	return nil
}

// metricsServer is the listener of ops.metrics_listen.
type metricsServer struct {
	srv    *http.Server
	ln     net.Listener
	served chan struct{}
}

// startMetrics starts the metrics listener, if one is configured.
func (s *Server) startMetrics() (*metricsServer, error) {
	addr := s.cfg.Ops.MetricsListen
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("signaling: metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", methods{http.MethodGet: s.metrics.handler().ServeHTTP})
	if s.cfg.Ops.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("%w: %s (this address serves /metrics and, with ops.pprof, /debug/pprof/ only)", ErrNotFound, r.URL.Path))
	})
	m := &metricsServer{ln: ln, served: make(chan struct{}), srv: &http.Server{
		Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		ErrorLog: slog.NewLogLogger(media.NewAddrRedactor(s.log.Handler()), slog.LevelDebug),
	}}
	go func() {
		defer close(m.served)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "err", err)
		}
	}()
	s.log.Info("metrics listening", "addr", ln.Addr().String(), "pprof", s.cfg.Ops.Pprof)
	return m, nil
}

// addr is where the metrics listener listens ("" when there is none).
func (m *metricsServer) addr() string {
	if m == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// shutdown stops the metrics listener and waits for its goroutine.
func (m *metricsServer) shutdown(ctx context.Context) error {
	if m == nil {
		return nil
	}
	err := m.srv.Shutdown(ctx)
	<-m.served
	return err
}
