package signaling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media"
)

// Server serves the HTTP surface.
type Server struct {
	cfg configs.Config

	// The roles of the core this edge calls (roles.go); each handler file
	// uses only the ones it needs.
	widgets  Widgets
	keys     Keys
	sessions Sessions
	convs    Conversations
	records  Records
	voices   Voices
	rooms    Rooms
	agents   Agents
	health   Health

	engine     *media.Engine // nil: no voice
	log        *slog.Logger
	challenger *challenger
	tokens     *tokenIssuer
	limiter    *rateLimiter
	shared     sharedRates
	metrics    *metrics
	ips        *clientIPs
	refusals   *refusalLog  // refused origins and webhooks, rate limited
	caps       *sessionCaps // limits.per_session
	handler    http.Handler
	livekit    *media.LiveKit    // livekit widgets' voice (SetLiveKit); nil: none
	speech     map[string]Speech // agents' speech pipelines (SetSpeech)
	ended      endedLegs         // legs whose peer connection the visitor closed lately (whip.go)

	// legs is the context of every WebSocket leg; cancelled on Shutdown.
	legs       context.Context
	cancelLegs context.CancelFunc
	legWG      sync.WaitGroup
	legMu      sync.Mutex // orders legWG.Add against Shutdown's Wait
	closing    bool

	httpSrv *http.Server
	ln      net.Listener
	metSrv  *metricsServer // ops.metrics_listen; nil: none
	served  chan struct{}
	stopped atomic.Bool
}

// New builds the edge for a started core, given as its roles (BrokerDeps
// fills them all from one *broker.Broker). engine carries voice legs; nil
// turns voice off (503 VOICE_UNAVAILABLE).
func New(cfg configs.Config, d Deps, engine *media.Engine, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := d.check(); err != nil {
		return nil, err
	}
	limiter, err := newRateLimiter(cfg.Limits, nil)
	if err != nil {
		return nil, fmt.Errorf("signaling: limits: %w", err)
	}
	trusted, err := configs.ParsePrefixes(cfg.Security.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("signaling: trusted proxies: %w", err)
	}
	s := &Server{
		tokens:  newTokenIssuer(d.Sessions.SigningKey(), cfg.Security.UserTokenTTL, cfg.Security.BootstrapTokenTTL),
		limiter: limiter,
		shared:  newSharedRates(cfg.Limits),
		ips:     newClientIPs(trusted),
		metrics: newMetrics(d.Health, d.Agents, func() []string {
			var agents []string
			for _, w := range d.Widgets.ListWidgets("") {
				if !slices.Contains(agents, w.Agent) {
					agents = append(agents, w.Agent)
				}
			}
			return agents
		}),
		cfg:        cfg,
		widgets:    d.Widgets,
		keys:       d.Keys,
		sessions:   d.Sessions,
		convs:      d.Conversations,
		records:    d.Records,
		voices:     d.Voices,
		rooms:      d.Rooms,
		agents:     d.Agents,
		health:     d.Health,
		engine:     engine,
		log:        log.With("component", "signaling"),
		refusals:   newRefusalLog(log.With("component", "signaling")),
		caps:       newSessionCaps(cfg.Limits),
		challenger: newChallenger(d.Sessions.SigningKey(), cfg.Sessions.ChallengeTTL),
		served:     make(chan struct{}),
	}
	d.Health.SetObserver(s.metrics)
	s.legs, s.cancelLegs = context.WithCancel(context.Background())
	s.handler = s.bodyDeadline(s.logRequests(s.refuseWhenStopping(s.routes())))
	return s, nil
}

// sweepLimits frees idle rate-limit buckets until Shutdown. Start runs it,
// counted in legWG, so a Server that is built and never started (or whose
// Start failed) owns no goroutine.
func (s *Server) sweepLimits() {
	defer s.legWG.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.legs.Done():
			return
		case now := <-t.C:
			s.limiter.sweep()
			s.caps.sweep(now)
		}
	}
}

// Handler returns the HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/{$}", methods{http.MethodGet: s.serveDemo})
	mux.Handle("/widget.js", methods{http.MethodGet: s.serveWidgetJS})
	mux.Handle(liveKitClientPath, methods{http.MethodGet: s.serveLiveKitClient})
	mux.Handle("/healthz", methods{http.MethodGet: s.serveHealth})
	mux.Handle("/readyz", methods{http.MethodGet: s.serveReady})
	mux.Handle("/v1/widget/resolve", s.cors(methods{http.MethodPost: orError(s.serveResolve)}))
	mux.Handle("/v1/sessions", s.cors(methods{http.MethodPost: orError(s.serveCreateSession)}))
	mux.Handle("/v1/sessions/{id}", s.cors(methods{http.MethodDelete: orError(s.serveEndSession)}))
	mux.Handle("/v1/sessions/{id}/messages", s.cors(methods{http.MethodPost: s.session(s.servePostMessage)}))
	mux.Handle("/v1/sessions/{id}/history", s.cors(methods{http.MethodGet: s.session(s.serveHistory)}))
	mux.Handle("/v1/sessions/{id}/ws", methods{http.MethodGet: s.serveWS})
	mux.Handle("/v1/sessions/{id}/mode", s.cors(methods{http.MethodPost: s.session(s.serveMode)}))
	mux.Handle("/v1/sessions/{id}/captures", s.cors(methods{http.MethodPost: s.session(s.serveCapture)}))
	mux.Handle("/v1/sessions/{id}/uploads", s.cors(methods{http.MethodPost: s.session(s.serveUpload)}))
	mux.Handle("/v1/tokens", methods{http.MethodPost: s.secretKey(s.serveBootstrapToken)})
	mux.Handle("/v1/user-tokens", methods{http.MethodPost: s.secretKey(s.serveUserToken)})
	// The admin and ops APIs: every route passes the key check of s.admin
	// with the scope named here.
	cfgRead, cfgWrite, keysWrite := broker.ScopeConfigRead, broker.ScopeConfigWrite, broker.ScopeKeysWrite
	opsRead, opsWrite, dataDelete := broker.ScopeOpsRead, broker.ScopeOpsWrite, broker.ScopeDataDelete
	mux.Handle("/v1/admin/widgets", methods{http.MethodGet: s.admin(cfgRead, s.serveAdminListWidgets),
		http.MethodPost: s.admin(cfgWrite, s.serveAdminCreateWidget)})
	mux.Handle("/v1/admin/widgets/{id}", methods{http.MethodGet: s.admin(cfgRead, s.serveAdminGetWidget),
		http.MethodPut: s.admin(cfgWrite, s.serveAdminUpdateWidget), http.MethodDelete: s.admin(cfgWrite, s.serveAdminDeleteWidget)})
	mux.Handle("/v1/admin/widgets/{id}/rotate-key", methods{http.MethodPost: s.admin(cfgWrite, s.serveAdminRotateKey)})
	mux.Handle("/v1/admin/widgets/{id}/readiness", methods{http.MethodGet: s.admin(cfgRead, s.serveAdminReadiness)})
	mux.Handle("/v1/admin/widgets/{id}/secret-keys", methods{http.MethodPost: s.admin(keysWrite, s.serveAdminCreateSecretKey)})
	mux.Handle("/v1/admin/keys", methods{http.MethodGet: s.admin(keysWrite, s.serveAdminListKeys),
		http.MethodPost: s.admin(keysWrite, s.serveAdminCreateKey)})
	mux.Handle("/v1/admin/keys/{kid}", methods{http.MethodDelete: s.admin(keysWrite, s.serveAdminRevokeKey)})
	mux.Handle("/v1/admin/agents/{agent}/credentials", methods{http.MethodPost: s.admin(keysWrite, s.serveAdminAgentCredentials)})
	mux.Handle("/v1/admin/conversations", methods{http.MethodGet: s.admin(opsRead, s.serveAdminConversations)})
	mux.Handle("/v1/admin/leads", methods{http.MethodGet: s.admin(opsRead, s.serveAdminLeads)})
	mux.Handle("/v1/admin/conversations/{id}", methods{http.MethodGet: s.admin(opsRead, s.serveAdminConversation),
		http.MethodDelete: s.admin(dataDelete, s.serveAdminDeleteConversation)})
	mux.Handle("/v1/admin/visitors/{user_id}", methods{http.MethodDelete: s.admin(dataDelete, s.serveAdminDeleteVisitor)})
	mux.Handle("/v1/ops/rooms", methods{http.MethodGet: s.admin(opsRead, s.serveOpsRooms)})
	mux.Handle("/v1/ops/rooms/{id}", methods{http.MethodGet: s.admin(opsRead, s.serveOpsRoom),
		http.MethodDelete: s.admin(opsWrite, s.serveOpsEndRoom)})
	mux.Handle("/v1/ops/events", methods{http.MethodGet: s.admin(opsRead, s.serveOpsEvents)})
	mux.Handle("/ops/{$}", methods{http.MethodGet: s.serveOpsPage})
	mux.Handle("/metrics", methods{http.MethodGet: s.admin(opsRead, s.serveMetrics)})
	mux.Handle("/v1/sessions/{id}/webrtc", whipOptions(s.cors(methods{http.MethodPost: s.session(s.serveVoiceOffer),
		http.MethodOptions: s.serveVoiceOptions})))
	mux.Handle("/v1/sessions/{id}/webrtc/{leg}", s.cors(methods{http.MethodPatch: s.session(s.serveVoicePatch), http.MethodDelete: s.session(s.serveVoiceDelete)}))
	mux.Handle("/v1/sessions/{id}/livekit-token", s.cors(methods{http.MethodPost: s.session(s.serveLiveKitToken)}))
	mux.Handle("/v1/sessions/{id}/livekit/{leg}", s.cors(methods{http.MethodDelete: s.session(s.serveVoiceDelete)}))
	mux.Handle("/v1/livekit/webhook", methods{http.MethodPost: orError(s.serveLiveKitWebhook)})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("%w: %s", ErrNotFound, r.URL.Path))
	})
	return mux
}

// Start listens on the configured address and serves in the background,
// and starts the rate-limit sweeper. Nothing runs if it fails. Call
// Shutdown to stop what it started.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("signaling: listen %s: %w", s.cfg.Listen, err)
	}
	met, err := s.startMetrics()
	if err != nil {
		_ = ln.Close()
		return err
	}
	if !s.addLeg() {
		_ = ln.Close()
		_ = met.shutdown(context.Background())
		return fmt.Errorf("signaling: start after shutdown: %w", broker.ErrClosed)
	}
	s.metSrv = met
	go s.sweepLimits()
	s.ln = ln
	s.httpSrv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		// net/http's own errors name the client ("TLS handshake error from …").
		ErrorLog: slog.NewLogLogger(media.NewAddrRedactor(s.log.Handler()), slog.LevelDebug),
	}
	// Shutdown waits for every handler to return, and an event stream
	// never returns by itself: the legs end as soon as the listeners close.
	s.httpSrv.RegisterOnShutdown(s.stopLegs)
	go func() {
		defer close(s.served)
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.log.Info("http listening", "addr", ln.Addr().String())
	return nil
}

// MetricsAddr is the address of the ops.metrics_listen listener (after
// Start), or "" without one.
func (s *Server) MetricsAddr() string { return s.metSrv.addr() }

// Addr is the address the server listens on (after Start).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting connections and requests (a request that still
// arrives, on a connection open before, gets 503 SHUTTING_DOWN), ends the
// long-lived ones at once (WebSocket legs close with 1001 going away, ops
// event streams end with a shutdown event, a chat request awaiting its
// reply answers SHUTTING_DOWN with the message stored) and waits for
// in-flight requests, which finish storing what they were storing, until
// ctx is done. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.stopped.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if s.httpSrv != nil {
		// Closes the listeners, then runs stopLegs; hijacked WebSockets
		// are not waited for here.
		err = s.httpSrv.Shutdown(ctx)
	}
	err = errors.Join(err, s.metSrv.shutdown(ctx))
	s.stopLegs()
	done := make(chan struct{})
	go func() {
		s.legWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.Join(err, ctx.Err())
	}
	if s.httpSrv != nil {
		<-s.served
	}
	return err
}

// stopLegs refuses new legs and requests and ends the live legs. It may
// run twice (from http.Server.Shutdown and from Shutdown).
func (s *Server) stopLegs() {
	s.legMu.Lock()
	s.closing = true
	s.legMu.Unlock()
	s.cancelLegs()
}

// addLeg registers a WebSocket leg; false once shutting down.
func (s *Server) addLeg() bool {
	s.legMu.Lock()
	defer s.legMu.Unlock()
	if s.closing {
		return false
	}
	s.legWG.Add(1)
	return true
}

// statusWriter records the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// refuseWhenStopping answers every request that arrives once Shutdown has
// begun (on a connection opened before: the listener is closed) with 503
// SHUTTING_DOWN, and closes its connection: no new work starts.
func (s *Server) refuseWhenStopping(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.legs.Err() != nil {
			w.Header().Set("Connection", "close")
			writeError(w, broker.ErrClosed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// logRequests logs each request's method, path (never the query, which may
// carry a token), status and duration, and at ERROR the cause of every 500
// INTERNAL (rate limited like refusals).
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		var f failure
		r = r.WithContext(context.WithValue(r.Context(), failureKey{}, &f))
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		if f.err != nil {
			s.refusals.internal(time.Now(), r.Pattern, f.err)
		}
		s.metrics.countRequest(r.Method, r.Pattern, sw.status)
		s.log.Debug("http request", "method", r.Method, "path", r.URL.Path,
			"status", sw.status, "duration", time.Since(start))
	})
}
