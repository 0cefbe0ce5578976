package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/parley-rtc/parley/configs"
)

// Start-up retry pacing: the first retry comes quickly, later ones back off
// to startBackoffMax. One attempt of a step is bounded by startAttemptTimeout
// so a JetStream that never answers is retried rather than waited on.
const (
	startBackoffMin     = 200 * time.Millisecond
	startBackoffMax     = 5 * time.Second
	startAttemptTimeout = 5 * time.Second
	// placementGrace is how long nats.replicas auto waits for a cluster
	// whose client knows 3 or more servers to place 3 replicas, before it
	// settles for 1: servers that have just started take a moment to
	// join JetStream, and a deployment made R1 then stays R1.
	placementGrace = 10 * time.Second
)

// errClusterForming: 3 replicas cannot be placed yet on a cluster of 3 or
// more servers; transient for placementGrace.
var errClusterForming = errors.New("the JetStream cluster cannot place 3 replicas yet (servers still joining?)")

// JetStream API error codes the start-up logic tells apart (nats-server's
// jetstream_errors_generated.go).
const (
	jsErrClusterNoPeers         jetstream.ErrorCode = 10005 // no suitable peers for placement
	jsErrClusterNotActive       jetstream.ErrorCode = 10006
	jsErrClusterNotAvail        jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	jsErrClusterNotLeader       jetstream.ErrorCode = 10009
	jsErrInsufficientResources  jetstream.ErrorCode = 10023 // a store out of space (also the next two)
	jsErrMemoryLimit            jetstream.ErrorCode = 10028
	jsErrStorageLimit           jetstream.ErrorCode = 10047
	jsErrReplicasNotSupported   jetstream.ErrorCode = 10074 // replicas > 1 not supported in non-clustered mode
	jsErrStreamOffline          jetstream.ErrorCode = 10118
	jsErrJetStreamNotEnabledAcc                     = jetstream.JSErrCodeJetStreamNotEnabledForAccount
)

// apiCode returns the JetStream API error code inside err, or 0.
func apiCode(err error) jetstream.ErrorCode {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode
	}
	return 0
}

// transientStartErr reports whether err is one NATS or JetStream produces
// while it starts or recovers (no server yet, no meta leader, timeouts), so
// Start retries it. Authentication, permissions and configuration errors are
// not transient.
func transientStartErr(err error) bool {
	switch {
	case errors.Is(err, ErrPlacement):
		return false
	case errors.Is(err, errClusterForming),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrNoServers),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrNoHeartbeat):
		return true
	}
	switch apiCode(err) {
	case jsErrClusterNotActive, jsErrClusterNotAvail, jsErrClusterNotLeader, jsErrStreamOffline:
		return true
	case 0, jsErrJetStreamNotEnabledAcc, jsErrReplicasNotSupported:
		return false
	}
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.Code == 503 && ae.ErrorCode != jsErrInsufficientResources
}

// retryStart runs step until it succeeds, fails with an error that is not
// transient, the start deadline passes or ctx ends. Each retry is logged at
// WARN with its cause.
func (b *Broker) retryStart(ctx context.Context, deadline time.Time, what string, step func(context.Context) error) error {
	backoff := startBackoffMin
	for attempt := 1; ; attempt++ {
		ad := time.Now().Add(startAttemptTimeout)
		if deadline.Before(ad) {
			ad = deadline
		}
		actx, cancel := context.WithDeadline(ctx, ad)
		err := step(actx)
		cancel()
		switch {
		case err == nil:
			if attempt > 1 {
				b.log.Info("start-up step succeeded after retries", "step", what, "attempts", attempt)
			}
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("broker: %s: start cancelled: %w (last error: %v)", what, ctx.Err(), err)
		case !transientStartErr(err):
			return err
		case b.attachOnly && errors.Is(err, nats.ErrNoServers):
			// A one-shot tool (parley keys, rooms) asked for a server
			// that is not there: say so now rather than wait for one.
			return err
		case !time.Now().Add(backoff).Before(deadline):
			return fmt.Errorf("broker: %s: gave up after %s (nats.start_timeout): %w", what, b.cfg.NATS.StartTimeout, err)
		}
		b.log.Warn("NATS not ready, retrying start-up", "step", what, "attempt", attempt, "retry_in", backoff.String(), "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("broker: %s: start cancelled: %w (last error: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, startBackoffMax)
	}
}

// connect connects to NATS, retrying while no server answers.
func (b *Broker) connect(ctx context.Context, deadline time.Time, url string, opts []nats.Option) (*nats.Conn, error) {
	var nc *nats.Conn
	err := b.retryStart(ctx, deadline, "connect nats", func(context.Context) error {
		c, err := nats.Connect(url, opts...)
		if err != nil {
			return err
		}
		nc = c
		return nil
	})
	if err != nil {
		if !strings.HasPrefix(err.Error(), "broker: ") {
			err = fmt.Errorf("broker: connect nats: %w", err)
		}
		return nil, err
	}
	return nc, nil
}

// startStore sets up streams and buckets, the signing key and the seeded
// widgets, retrying while JetStream recovers. Every step is idempotent.
func (b *Broker) startStore(ctx context.Context, deadline time.Time) error {
	if err := b.retryStart(ctx, deadline, "store set-up", b.setupStore); err != nil {
		return err
	}
	if !b.attachOnly {
		// Before anything writes: the marks of a clean stop must match.
		b.checkStore(ctx, false)
	}
	if err := b.retryStart(ctx, deadline, "signing key", b.loadSigningKey); err != nil {
		return err
	}
	return b.retryStart(ctx, deadline, "seed widgets", func(ctx context.Context) error {
		return b.seedWidgets(ctx, b.cfg.Widgets)
	})
}

// resolveReplicas decides the replica count of the streams and buckets from
// nats.replicas and the connected JetStream (see configs.ReplicasAuto), and
// logs a WARN when R1 meets a cluster. before maps Parley's existing streams
// to their replicas.
func (b *Broker) resolveReplicas(ctx context.Context, before map[string]int) (int, error) {
	want := int(b.cfg.NATS.Replicas)
	if b.ns != nil {
		return max(want, 1), nil // the embedded server is one server
	}
	cluster := b.nc.ConnectedClusterName()
	r := want
	if want == int(configs.ReplicasAuto) {
		r = 1
		if cluster != "" {
			ok, err := b.canPlace(ctx, 3)
			switch {
			case err != nil && transientStartErr(err):
				return 0, err
			case err != nil:
				// An account limit or permission, say: keep what the
				// streams have, at least 1, and say why.
				b.log.Warn("nats.replicas is auto but the replica probe failed: using the streams' current replicas (at least 1); set nats.replicas explicitly",
					"cluster", cluster, "err", err)
			case ok:
				r = 3
			case len(b.nc.Servers()) >= 3 && b.placementWait(time.Now()):
				return 0, fmt.Errorf("%w: %w", ErrStore, errClusterForming)
			default:
				b.log.Warn("nats.replicas is auto but the JetStream cluster cannot place 3 replicas (fewer than 3 servers with JetStream, or some are down): using 1",
					"cluster", cluster)
			}
		}
		// auto never lowers what a stream already has.
		for _, n := range before {
			r = max(r, n)
		}
	} else if r > 1 && cluster == "" {
		return 0, fmt.Errorf("%w: nats.replicas is %d but the NATS server at %s is not clustered (a single server keeps one replica); set nats.replicas to auto or 1: %w",
			ErrStore, r, b.nc.ConnectedUrlRedacted(), ErrPlacement)
	}
	if r == 1 && cluster != "" {
		b.log.Warn("JetStream streams and buckets have 1 replica on a NATS cluster: losing the server that holds them stops every post and new session; set nats.replicas to auto or 3",
			"cluster", cluster, "nats_replicas", b.cfg.NATS.Replicas.String())
	}
	b.log.Info("jetstream replicas", "replicas", r, "setting", b.cfg.NATS.Replicas.String(), "cluster", cluster)
	return r, nil
}

// placementWait reports whether start-up may still wait for the cluster
// to place 3 replicas: within placementGrace of the first time it could
// not.
func (b *Broker) placementWait(now time.Time) bool {
	if b.placementSince.IsZero() {
		b.placementSince = now
	}
	return now.Sub(b.placementSince) < placementGrace
}

// canPlace reports whether JetStream can place a stream with n replicas,
// by creating and deleting a small in-memory probe stream. Placement
// failures answer false; other errors are returned.
func (b *Broker) canPlace(ctx context.Context, n int) (bool, error) {
	name := b.subj.StreamName() + "_PROBE_" + nuid.Next()
	_, err := b.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Description: "Parley replica placement probe (deleted at once)",
		Subjects: []string{b.subj.Prefix + "._probe." + strings.ToLower(name)},
		Storage:  jetstream.MemoryStorage, Replicas: n, MaxMsgs: 1,
	})
	switch apiCode(err) {
	case 0:
	case jsErrInsufficientResources, jsErrClusterNoPeers, jsErrReplicasNotSupported:
		return false, nil
	default:
		return false, fmt.Errorf("%w: replica probe: %w", ErrStore, err)
	}
	if err != nil {
		return false, fmt.Errorf("%w: replica probe: %w", ErrStore, err)
	}
	if err := b.js.DeleteStream(ctx, name); err != nil {
		b.log.Warn("could not delete the replica probe stream", "stream", name, "err", err)
	}
	return true, nil
}

// parleyStreams returns Parley's existing streams (the conversation log and
// the streams behind its KV buckets and object store) with their replicas.
// It asks for each by name: a cluster's stream list can leave out a stream
// whose peers are changing.
func (b *Broker) parleyStreams(ctx context.Context) (map[string]int, error) {
	names := []string{b.subj.StreamName(), "OBJ_" + b.subj.Bucket(bucketUploads)}
	for _, k := range []string{bucketSessions, bucketConversations, bucketResume, bucketNonces, bucketSecrets,
		bucketWidgets, bucketKeys, bucketLeads, bucketRooms, bucketRateLimits, bucketHealth} {
		names = append(names, "KV_"+b.subj.Bucket(k))
	}
	out := map[string]int{}
	for _, n := range names {
		st, err := b.js.Stream(ctx, n)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
		case err != nil:
			return nil, fmt.Errorf("%w: stream %s: %w", ErrStore, n, err)
		default:
			out[n] = st.CachedInfo().Config.Replicas
		}
	}
	return out, nil
}

// reportReplicaChanges logs, at WARN, every existing stream whose replicas
// were raised to want, and whether JetStream did so.
func (b *Broker) reportReplicaChanges(ctx context.Context, before map[string]int, want int) {
	var raised []string
	for n, r := range before {
		if r < want {
			raised = append(raised, n)
		}
	}
	if len(raised) == 0 {
		return
	}
	for _, n := range raised {
		// One stream at a time: a cluster's stream list can leave out a
		// stream whose peers are changing.
		st, err := b.js.Stream(ctx, n)
		switch {
		case err != nil:
			b.log.Warn("existing stream had fewer replicas than the setting; could not read it back", "stream", n, "from", before[n], "want", want, "err", err)
		case st.CachedInfo().Config.Replicas >= want:
			b.log.Warn("existing stream had fewer replicas than the setting; JetStream raised them (new replicas catch up in the background)",
				"stream", n, "from", before[n], "to", st.CachedInfo().Config.Replicas)
		default:
			b.log.Warn("existing stream still has fewer replicas than the setting",
				"stream", n, "replicas", st.CachedInfo().Config.Replicas, "want", want)
		}
	}
}

// placementErr explains a JetStream placement failure of a stream with
// replicas replicas and marks it ErrPlacement (not retried); other errors
// are returned as they are.
func placementErr(err error, replicas int) error {
	switch apiCode(err) {
	case jsErrInsufficientResources, jsErrClusterNoPeers, jsErrReplicasNotSupported:
		return fmt.Errorf("JetStream cannot place %d replicas (more than the cluster has servers with JetStream and free storage, or some are down; check nats.replicas): %w: %w",
			replicas, ErrPlacement, err)
	}
	return err
}
