package configs

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Settings of the NATS operations group (replicas, start-up, sync, dedup).
const (
	// ReplicasAuto lets the broker choose: 3 when the connected JetStream
	// cluster can place three replicas, 1 on a single server and always on
	// the embedded server. It never lowers the replicas an existing stream
	// already has.
	ReplicasAuto Replicas = 0

	// SyncInterval makes the embedded server fsync its store every
	// nats.sync_interval (nats-server's default, 2 minutes).
	SyncInterval = "interval"
	// SyncAlways makes the embedded server fsync every write before it
	// acknowledges it.
	SyncAlways = "always"

	// MinDedupWindow is the shortest accepted nats.dedup_window: clients may
	// resend an unacknowledged message with the same client_message_id for up
	// to a minute (docs/API.md), and a resend outside the window would be
	// stored twice.
	MinDedupWindow = time.Minute
)

// Replicas is the JetStream replica count of Parley's streams and buckets:
// 1..5, or ReplicasAuto (0), written "auto" in YAML and PARLEY_NATS_REPLICAS.
type Replicas int

// String returns "auto" for ReplicasAuto and the number otherwise.
func (r Replicas) String() string {
	if r == ReplicasAuto {
		return "auto"
	}
	return strconv.Itoa(int(r))
}

// UnmarshalText parses "auto" or a whole number.
func (r *Replicas) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if strings.EqualFold(s, "auto") {
		*r = ReplicasAuto
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("want auto or a number 1..%d, got %q", maxReplicas, s)
	}
	*r = Replicas(n)
	return nil
}

// UnmarshalYAML parses "auto" or a whole number.
func (r *Replicas) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: nats.replicas: want auto or a number 1..%d", n.Line, maxReplicas)
	}
	if err := r.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: nats.replicas: %w", n.Line, err)
	}
	return nil
}

// MarshalYAML writes "auto" or the number.
func (r Replicas) MarshalYAML() (any, error) {
	if r == ReplicasAuto {
		return "auto", nil
	}
	return int(r), nil
}

// validateOps checks the replicas, start-up, sync and dedup settings.
func (n *NATSConfig) validateOps(ps *problems) {
	if n.Replicas != ReplicasAuto {
		ps.intRange("nats.replicas", int(n.Replicas), 1, maxReplicas)
		if n.URL == "" && n.Replicas > 1 && n.Replicas <= maxReplicas {
			ps.add("nats.replicas", "the embedded server is a single server: use auto or 1, or set nats.url to a NATS cluster")
		}
	}
	if n.DedupWindow < MinDedupWindow {
		ps.add("nats.dedup_window", "must be at least %s (clients resend an unacknowledged message for up to a minute), got %s", MinDedupWindow, n.DedupWindow)
	}
	if n.StartTimeout < time.Second || n.StartTimeout > time.Hour {
		ps.add("nats.start_timeout", "must be 1s..1h, got %s", n.StartTimeout)
	}
	ps.oneOf("nats.sync", n.Sync, SyncInterval, SyncAlways)
	if n.URL != "" && n.Sync == SyncAlways {
		ps.add("nats.sync", "applies to the embedded server only; with nats.url set sync_interval: always in your nats-server configuration")
	}
	if n.SyncInterval < 100*time.Millisecond || n.SyncInterval > time.Hour {
		ps.add("nats.sync_interval", "must be 100ms..1h, got %s", n.SyncInterval)
	}
}
