// Package broker is Parley's core: conversations and their durable event log
// (JetStream), visitor sessions, agent dispatch and live fan-out of a
// conversation's events to the legs attached to it. It knows no HTTP and no
// RTP; the signaling and media packages drive it.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/configs"
)

// KV bucket names, after the subject prefix: "<prefix>_sessions", ….
const (
	bucketSessions      = "sessions"
	bucketConversations = "conversations"
	bucketResume        = "resume"
	bucketNonces        = "nonces"
	bucketSecrets       = "secrets"
	bucketWidgets       = "widgets"
	bucketKeys          = "keys"
	bucketLeads         = "leads"
	bucketUploads       = "uploads"
	bucketRooms         = "rooms"
	bucketRateLimits    = "ratelimits"
)

// Broker owns the NATS connection (and the embedded server, if any), the
// conversation log and everything built on it.
type Broker struct {
	cfg     configs.Config
	log     *slog.Logger
	rootLog *slog.Logger
	subj    agentbridge.Subjects

	ns   *server.Server // embedded server; nil with an external NATS
	auth *natsAuth      // the embedded server's operator and accounts
	nc   *nats.Conn
	subs *subMux // runs the per-conversation subscriptions' handlers (set with nc)
	// natsErrLog limits the log of NATS's asynchronous errors (slow
	// consumers come in bursts) to one line every 10 s.
	natsErrLog rate.Sometimes
	js         jetstream.JetStream

	stream        jetstream.Stream
	sessions      jetstream.KeyValue
	conversations jetstream.KeyValue
	resume        jetstream.KeyValue
	nonces        jetstream.KeyValue
	secrets       jetstream.KeyValue
	widgets       jetstream.KeyValue
	keys          jetstream.KeyValue
	leads         jetstream.KeyValue
	uploads       jetstream.ObjectStore
	roomsKV       jetstream.KeyValue
	rateKV        jetstream.KeyValue
	healthKV      jetstream.KeyValue // write probe; nil for attach-only tools

	health *storeHealth

	rooms    *rooms
	observer atomic.Pointer[observerBox]

	widgetCache *widgetCache

	registry   *registry
	dispatcher *dispatcher
	admission  *admission
	hubs       *hubSet

	// id names this broker process (brk_…): agents send the appends of
	// the conversations it dispatched to AppendTo(agent, id).
	id     string
	lw     *logWriter
	agents *agentBus

	signingKey []byte

	voiceMu sync.Mutex
	voices  map[string]*Voice // session id → its voice leg

	// deleting holds the conversations this broker marked deleted and has
	// not finished purging: its next sweep finishes them.
	deleting pendingDeletions

	ctx        context.Context // cancelled by Close; parent of owned goroutines
	cancel     context.CancelFunc
	connClosed chan struct{}

	// lifeMu orders goroutine starts against Close's wait.
	lifeMu sync.Mutex
	wg     sync.WaitGroup

	started atomic.Bool
	ready   atomic.Bool
	closed  atomic.Bool

	// attachOnly opens existing buckets without changing their settings
	// (operator tools); see AttachOnly.
	attachOnly bool
	// placementSince is when start-up first found that 3 replicas could
	// not be placed (start-up's goroutine only).
	placementSince time.Time
}

// AttachOnly makes Start open the deployment's existing streams and
// buckets as they are, never creating or re-configuring them: for tools
// like `parley keys` that run beside a live broker. Such a broker does not
// wait for a NATS server that refuses the connection: Start fails at once.
// Call it before Start.
func (b *Broker) AttachOnly() { b.attachOnly = true }

// New builds a broker from the configuration. Nothing runs before Start.
func New(cfg configs.Config, log *slog.Logger) *Broker {
	if log == nil {
		log = slog.Default()
	}
	b := &Broker{
		natsErrLog: rate.Sometimes{First: 1, Interval: 10 * time.Second},
		cfg:        cfg,
		log:        log.With("component", "broker"),
		rootLog:    log,
		subj:       agentbridge.NewSubjects(cfg.NATS.Prefix),

		connClosed: make(chan struct{}),
		voices:     make(map[string]*Voice),

		widgetCache: newWidgetCache(),
		health:      newStoreHealth(),
	}
	b.observer.Store(&observerBox{nopObserver{}})
	b.rooms = newRooms(b)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.registry = newRegistry(cfg.Agents.HeartbeatTimeout)
	// A release fences dispatches in flight: keep its mark past the
	// longest of them.
	b.registry.markTTL = max(b.registry.markTTL, 4*cfg.Agents.DispatchTimeout)
	b.dispatcher = newDispatcher(b)
	b.admission = newAdmission(b)
	b.registry.onAppear = b.dispatcher.workerAppeared
	b.registry.onConnGone = b.dispatcher.sweep
	b.hubs = newHubSet(b)
	b.id = newID("brk_")
	b.lw = newLogWriter(b)
	b.agents = newAgentBus(b)
	return b
}

// Start starts the embedded NATS server unless an external one is
// configured, connects, and makes sure the log stream and KV buckets exist.
func (b *Broker) Start(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return nil
	}
	if b.closed.Load() {
		return ErrClosed
	}
	opts := []nats.Option{
		nats.Name("parley-broker"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
			// Live events published while the connection was down are
			// lost on core NATS: every hub reads them from the log.
			b.hubs.resync()
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(b.connClosed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			b.natsErrLog.Do(func() {
				// A slow consumer means NATS dropped messages of that
				// subscription (a hub reads lost events back from the log).
				b.log.Warn("nats: asynchronous error", "subject", subject, "slow_consumer", errors.Is(err, nats.ErrSlowConsumer), "err", err)
			})
		}),
	}
	startTimeout := b.cfg.NATS.StartTimeout
	if startTimeout <= 0 {
		startTimeout = 2 * time.Minute
	}
	deadline := time.Now().Add(startTimeout)
	url := b.cfg.NATS.URL
	if url == "" {
		o, err := b.startEmbedded()
		if err != nil {
			return err
		}
		url = b.InProcessURL()
		opts = append(opts, o...)
	} else {
		o, err := externalAuthOptions(b.cfg.NATS)
		if err != nil {
			return err
		}
		opts = append(opts, o...)
	}
	nc, err := b.connect(ctx, deadline, url, opts)
	if err != nil {
		b.shutdownServer()
		return err
	}
	b.nc = nc
	b.subs = newSubMux(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		b.closeConn()
		return fmt.Errorf("broker: jetstream: %w", err)
	}
	b.js = js
	if err := b.startStore(ctx, deadline); err != nil {
		b.closeConn()
		return err
	}
	if err := b.registry.start(b); err != nil {
		b.closeConn()
		return err
	}
	if b.auth != nil {
		// The embedded server tells when a client's connection closes: a
		// worker killed is gone at once, not after heartbeat_timeout.
		if err := b.registry.watchConns(b.nc, disconnectEventSubject(b.auth.accPub)); err != nil {
			b.closeConn()
			return err
		}
	}
	if !b.attachOnly {
		if err := b.agents.start(); err != nil {
			b.closeConn()
			return err
		}
	}
	if err := b.watchWidgets(ctx); err != nil {
		b.closeConn()
		return err
	}
	b.goroutine(b.dispatcher.watchWorkers)
	b.goroutine(b.roomsLoop)
	if b.healthKV != nil {
		_ = b.probeStore()
		b.goroutine(b.storeLoop)
	}
	if !b.attachOnly && b.cfg.Sessions.SweepInterval > 0 {
		b.goroutine(b.sessionSweepLoop)
	}
	if !b.attachOnly && b.cfg.Retention.SweepInterval > 0 {
		b.goroutine(b.retentionSweepLoop)
	}
	b.ready.Store(true)
	return nil
}

// setupStore creates or updates the conversation log stream and KV buckets.
func (b *Broker) setupStore(ctx context.Context) error {
	replicas := 1
	var before map[string]int
	if !b.attachOnly {
		var err error
		if before, err = b.parleyStreams(ctx); err != nil {
			return err
		}
		if replicas, err = b.resolveReplicas(ctx, before); err != nil {
			return err
		}
	}
	var (
		st  jetstream.Stream
		err error
	)
	if b.attachOnly {
		st, err = b.js.Stream(ctx, b.subj.StreamName())
	} else {
		st, err = b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:         b.subj.StreamName(),
			Description:  "Parley conversation logs",
			Subjects:     b.subj.LogSubjects(),
			Storage:      jetstream.FileStorage,
			Retention:    jetstream.LimitsPolicy,
			Replicas:     replicas,
			Duplicates:   b.cfg.NATS.DedupWindow,
			MaxConsumers: b.cfg.NATS.MaxConsumers,
			AllowDirect:  true,

			// Retention backstop (see retention.go): the sweeper deletes
			// conversations whole by last activity; this drops any event
			// older than the longest max age a widget may have.
			MaxAge: b.cfg.Retention.LogMaxAge,
		})
	}
	if err != nil {
		return fmt.Errorf("%w: conversation stream: %w", ErrStore, placementErr(err, replicas))
	}
	b.stream = st
	bucket := func(name, desc string, ttl time.Duration) (jetstream.KeyValue, error) {
		name = b.subj.Bucket(name)
		if b.attachOnly {
			kv, err := b.js.KeyValue(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("%w: kv %s (is Parley running on this NATS?): %w", ErrStore, name, err)
			}
			return kv, nil
		}
		kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Description: desc, Storage: jetstream.FileStorage,
			Replicas: replicas, TTL: ttl, History: 1,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: kv %s: %w", ErrStore, name, placementErr(err, replicas))
		}
		return kv, nil
	}
	// A session record goes record_grace after its TTL (counted from its
	// last change); the session sweeper has ended it by then. A bucket TTL,
	// not a per-key TTL (KeyTTL): that is set on Create only, and the next
	// Update (ending the session, a mode switch) would store the record
	// without it.
	if b.sessions, err = bucket(bucketSessions, "Parley visitor sessions", b.cfg.Sessions.TTL+b.cfg.Sessions.RecordGrace); err != nil {
		return err
	}
	if b.conversations, err = bucket(bucketConversations, "Parley conversations", b.cfg.Retention.LogMaxAge); err != nil {
		return err
	}
	// Records outlive the resume window so an expired token is told apart
	// from an unknown one (SESSION_EXPIRED vs RESUME_TOKEN_INVALID).
	if b.resume, err = bucket(bucketResume, "Parley resume tokens by hash, identified visitors", 2*b.cfg.Sessions.ResumeWindow); err != nil {
		return err
	}
	// A used nonce must be remembered longer than anything carrying it
	// stays valid: challenges and bootstrap tokens.
	nonceTTL := 2 * max(b.cfg.Sessions.ChallengeTTL, b.cfg.Security.BootstrapTokenTTL+b.cfg.Security.ClockSkew)
	if b.nonces, err = bucket(bucketNonces, "Parley single-use nonces (challenges, bootstrap tokens)", nonceTTL); err != nil {
		return err
	}
	if b.secrets, err = bucket(bucketSecrets, "Parley signing keys", 0); err != nil {
		return err
	}
	if b.widgets, err = bucket(bucketWidgets, "Parley widgets", 0); err != nil {
		return err
	}
	if b.keys, err = bucket(bucketKeys, "Parley API keys (hashes only)", 0); err != nil {
		return err
	}
	if b.leads, err = bucket(bucketLeads, "Parley leads (visitor captures)", b.cfg.Retention.LogMaxAge); err != nil {
		return err
	}
	if b.roomsKV, err = bucket(bucketRooms, "Parley live rooms (ops view)", 0); err != nil {
		return err
	}
	if b.rateKV, err = bucket(bucketRateLimits, "Parley rate limit windows shared by brokers", 2*rateWindowMax); err != nil {
		return err
	}
	if !b.attachOnly {
		// The write probe of store health (storehealth.go); attach-only
		// tools do not probe.
		if b.healthKV, err = bucket(bucketHealth, "Parley store write probe (no visitor data)", 0); err != nil {
			return err
		}
	}
	if b.attachOnly {
		b.uploads, err = b.js.ObjectStore(ctx, b.subj.Bucket(bucketUploads))
	} else {
		b.uploads, err = b.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: b.subj.Bucket(bucketUploads), Description: "Parley visitor uploads",
			Storage: jetstream.FileStorage, Replicas: replicas,
			TTL: b.cfg.Retention.LogMaxAge, MaxBytes: b.cfg.Retention.UploadsMaxBytes,
		})
	}
	if err != nil {
		return fmt.Errorf("%w: object store: %w", ErrStore, placementErr(err, replicas))
	}
	if !b.attachOnly {
		b.reportReplicaChanges(ctx, before, replicas)
	}
	return nil
}

// Ready reports whether the broker can serve: NATS connected and JetStream
// answering.
func (b *Broker) Ready(ctx context.Context) error {
	if !b.ready.Load() || b.closed.Load() {
		return ErrNotReady
	}
	if !b.nc.IsConnected() {
		return fmt.Errorf("%w: nats not connected", ErrNotReady)
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("%w: jetstream: %w", ErrNotReady, err)
	}
	if err := b.health.writeErr(); err != nil {
		return fmt.Errorf("%w: %w", ErrStoreUnwritable, err)
	}
	return nil
}

// NATSClientURL is the URL agent workers connect to: the embedded server's
// client URL, or the configured external URL.
func (b *Broker) NATSClientURL() string {
	if b.ns != nil {
		return b.ns.ClientURL()
	}
	return b.cfg.NATS.URL
}

// InProcessURL is the URL to pass with InProcessOption: the embedded
// server's client URL with a nats:// scheme, since an in-process
// connection needs no TLS even when the listener requires it.
func (b *Broker) InProcessURL() string {
	if b.ns == nil {
		return b.cfg.NATS.URL
	}
	return strings.Replace(b.ns.ClientURL(), "tls://", "nats://", 1)
}

// InProcessOption returns a nats.Option connecting in-process to the embedded
// server, or nil when NATS is external.
func (b *Broker) InProcessOption() nats.Option {
	if b.ns == nil {
		return nil
	}
	return nats.InProcessServer(b.ns)
}

// Subjects returns the protocol subjects the broker uses.
func (b *Broker) Subjects() agentbridge.Subjects { return b.subj }

// ID is this broker process's id (brk_…), the one its DispatchRequests
// carry.
func (b *Broker) ID() string { return b.id }

// AliveWorkers returns how many workers of agent heartbeat.
func (b *Broker) AliveWorkers(agent string) int { return b.registry.alive(agent) }

// Close stops everything the broker started, in order: voice legs, live
// fan-out and dispatch loops, this broker's legs out of the shared room
// state, the NATS connection (drained), the embedded server. It is
// idempotent.
func (b *Broker) Close() {
	if !b.closed.CompareAndSwap(false, true) {
		return
	}
	b.ready.Store(false)
	b.endVoices(context.Background())
	b.cancel()
	b.hubs.closeAll()
	b.lifeMu.Lock()
	b.lifeMu.Unlock()
	b.agents.stop()
	b.wg.Wait()
	b.registry.stop()
	if b.roomsKV != nil && b.nc != nil && b.nc.IsConnected() {
		// This broker's legs leave the shared room state now, not when
		// they expire: the flush loop has stopped, NATS is still up.
		ctx, cancel := context.WithTimeout(context.Background(), roomReleaseTimeout)
		b.rooms.release(ctx)
		cancel()
	}
	if b.healthKV != nil && b.nc != nil && b.nc.IsConnected() {
		// The last marks: what a clean stop left, compared at next start.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b.checkStore(ctx, true)
		cancel()
	}
	b.closeConn()
	b.shutdownServer()
}

func (b *Broker) closeConn() {
	if b.nc == nil {
		return
	}
	if err := b.nc.Drain(); err != nil {
		b.nc.Close()
	}
	// Drain is asynchronous; wait for it to finish.
	select {
	case <-b.connClosed:
	case <-time.After(10 * time.Second):
		b.nc.Close()
	}
	b.subs.stop()
}

func (b *Broker) shutdownServer() {
	if b.ns == nil {
		return
	}
	b.ns.Shutdown()
	b.ns.WaitForShutdown()
}

// goroutine runs f in a goroutine the broker owns and waits for on Close.
func (b *Broker) goroutine(f func()) bool {
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	if b.closed.Load() {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

// every calls fn every interval, on the calling goroutine, until the
// broker closes: the body of the broker's periodic loops.
func (b *Broker) every(interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// validID reports whether id has the given prefix and is one subject token.
func validID(id, prefix string) bool {
	return strings.HasPrefix(id, prefix) && agentbridge.ValidToken(id)
}
