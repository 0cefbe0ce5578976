package benchvoice

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

const (
	frameLen     = 20 * time.Millisecond
	frameSamples = 960 // RTP clock ticks (48 kHz) per 20 ms frame
	opusPT       = 111
	origin       = "http://localhost"
	widgetKey    = "pk_demo"
	socketBuffer = 4 << 20
	settleQuiet  = 300 * time.Millisecond // no new frame on NATS for this long: all landed
	settleMax    = 10 * time.Second
	loopFrames   = 250 // the signal loops every 5 s
)

// Options configure a run; see Command for the flags.
type Options struct {
	Sessions       int
	Duration       time.Duration // the steady window that is measured
	Warmup         time.Duration // skipped after the last session connected
	Ramp           float64       // sessions started per second
	URL, NATSURL   string        // a running server; empty: start a child
	NATSCreds      string        // .creds for NATSURL (operator tools' credentials)
	ServerPID      int           // for CPU/RSS of a running server
	ConnectTimeout time.Duration
	Senders        int      // sender goroutines shared by all sessions
	Sockets        string   // "mux": one UDP socket for all peers; "peer": one each
	Prefix         string   // NATS subject prefix
	Binary         string   // parley binary for the child; empty: os.Executable()
	Agent          string   // "in-process": serve's echo agent; "process": `parley agent echo`
	Transport      string   // "direct" (Parley's own WebRTC) or "livekit"; "both" only in the command
	LiveKitServer  string   // livekit-server binary for --transport livekit; empty: see livekitserver.FindServer
	ProfileDir     string   // write the child broker's heap and CPU profiles here; empty: none
	ServerEnv      []string // KEY=VALUE added to the child broker's environment (GOGC, PARLEY_MEDIA_…)
	Interfaces     string   // the child broker's media.interfaces, comma-separated; empty: all (not used with URL)
	NATSNodes      int      // a NATS cluster of this many node processes with Brokers brokers; 0: one serve with its embedded NATS
	Brokers        int
}

// Validate refuses options that cannot run, before anything starts.
func (o Options) Validate() error {
	switch {
	case o.Sessions < 1:
		return errors.New("--sessions must be at least 1")
	case o.Duration < time.Second:
		return errors.New("--duration must be at least 1s")
	case o.Warmup < 0:
		return errors.New("--warmup must not be negative")
	case o.Ramp <= 0:
		return errors.New("--ramp must be positive")
	case (o.URL == "") != (o.NATSURL == ""):
		return errors.New("--url and --nats-url go together")
	case o.Senders < 1:
		return errors.New("--senders must be at least 1")
	case o.Sockets != "mux" && o.Sockets != "peer":
		return errors.New(`--client-sockets must be "mux" or "peer"`)
	case o.Agent != "in-process" && o.Agent != "process":
		return errors.New(`--agent must be "in-process" or "process"`)
	case o.Agent == "process" && o.URL != "":
		return errors.New(`--agent process starts the agent with the child server; not with --url`)
	case o.Transport != "" && o.Transport != "direct" && o.Transport != "livekit" && o.Transport != "both":
		return errors.New(`--transport must be "direct", "livekit" or "both"`)
	case o.Transport != "" && o.Transport != "direct" && o.URL != "":
		return errors.New(`--transport livekit starts livekit-server and the child server; not with --url`)
	case o.URL != "" && (o.ProfileDir != "" || len(o.ServerEnv) > 0):
		return errors.New("--server-profile and --server-env apply to the child server; not with --url")
	}
	switch {
	case o.NATSNodes < 0 || o.NATSNodes > 9:
		return errors.New("--nats-nodes must be 0 (the embedded NATS) to 9")
	case o.NATSNodes == 0 && o.Brokers > 1:
		return errors.New("--brokers above 1 needs a NATS cluster (--nats-nodes 3)")
	case o.NATSNodes > 0 && (o.Brokers < 1 || o.URL != "" || o.Agent != "process" || (o.Transport != "" && o.Transport != "direct") || o.ProfileDir != ""):
		return errors.New("--nats-nodes needs --brokers 1 or more, --agent process and --transport direct, and takes no --url or --server-profile")
	}
	for _, kv := range o.ServerEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("--server-env %q: want KEY=VALUE", kv)
		}
	}
	return nil
}
