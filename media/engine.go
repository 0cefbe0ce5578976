package media

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/sdp/v3"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"
)

// Defaults for zero Config fields.
const (
	defaultDisconnectedTimeout = 5 * time.Second
	defaultFailedTimeout       = 25 * time.Second
	defaultKeepAliveInterval   = 2 * time.Second
	defaultJitterWindow        = 60 * time.Millisecond
	maxJitterWindow            = 200 * time.Millisecond
	defaultSilenceTimeout      = 30 * time.Second
	defaultPlayoutQueue        = 500
	defaultSocketBuffer        = 4 << 20
)

// opusPayloadType is the payload type Opus is registered with (browsers use
// 111; an answer follows whatever the offer chose).
const opusPayloadType = 111

// opusFmtp is the Opus format parameters (RFC 7587 §6.1): 10 ms minimum
// packet time and in-band FEC, as browsers send.
const opusFmtp = "minptime=10;useinbandfec=1"

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	c.DisconnectedTimeout = cmp.Or(c.DisconnectedTimeout, defaultDisconnectedTimeout)
	c.FailedTimeout = cmp.Or(c.FailedTimeout, defaultFailedTimeout)
	c.KeepAliveInterval = cmp.Or(c.KeepAliveInterval, defaultKeepAliveInterval)
	c.JitterWindow = cmp.Or(c.JitterWindow, defaultJitterWindow)
	c.SilenceTimeout = cmp.Or(c.SilenceTimeout, defaultSilenceTimeout)
	c.PlayoutQueue = cmp.Or(c.PlayoutQueue, defaultPlayoutQueue)
	c.SocketBuffer = cmp.Or(c.SocketBuffer, defaultSocketBuffer)
	return c
}

// Validate reports whether c (after defaults) is usable; errors wrap
// ErrBadConfig.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadConfig}, args...)...)
	}
	switch {
	case c.UDPPort < 0 || c.UDPPort > 65535:
		return bad("udp port %d out of range", c.UDPPort)
	case c.PortMin > c.PortMax:
		return bad("port range %d-%d is empty", c.PortMin, c.PortMax)
	case c.DisconnectedTimeout < 0 || c.FailedTimeout < 0 || c.KeepAliveInterval < 0:
		return bad("negative ICE timeout")
	case c.JitterWindow < frameDuration || c.JitterWindow > maxJitterWindow:
		return bad("jitter window %v not in [%v, %v]", c.JitterWindow, frameDuration, maxJitterWindow)
	case c.SilenceTimeout < 0:
		return bad("negative silence timeout")
	case c.PlayoutQueue < 1:
		return bad("playout queue %d < 1", c.PlayoutQueue)
	case c.SocketBuffer < 0:
		return bad("negative socket buffer")
	}
	for _, ip := range c.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			return bad("NAT 1:1 address %q is not an IP", ip)
		}
	}
	return nil
}

// Engine owns what all voice legs share: one pion webrtc.API (Opus-only
// MediaEngine, interceptors, SettingEngine) and, when Config.UDPPort is
// set, the ICE UDP mux socket (RFC 8445 §5.1.1). Make one with NewEngine,
// legs with NewLeg, and Close it when done.
type Engine struct {
	cfg Config
	log *slog.Logger
	api *webrtc.API
	mux ice.UDPMux // nil without Config.UDPPort

	legs  transports[*Leg, *Leg] // each leg is its own key
	clock *playClock             // the legs' agent audio
}

// NewEngine builds the WebRTC engine from cfg (zero fields take defaults).
// log may be nil.
func NewEngine(cfg Config, log *slog.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = discardLogger()
	}
	e := &Engine{cfg: cfg, log: log, clock: newPlayClock(runtime.GOMAXPROCS(0))}

	me, reg, err := newMediaEngine()
	if err != nil {
		return nil, err
	}
	se, err := e.settingEngine()
	if err != nil {
		return nil, err
	}
	e.api = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	return e, nil
}

// newMediaEngine registers Opus only (RFC 7587), with NACK (RFC 4585) and
// transport-wide congestion control feedback
// (draft-holmer-rmcat-transport-wide-cc-extensions), the client-to-mixer
// audio level header extension (RFC 6464), and the interceptors that
// implement them plus RTCP sender/receiver reports (RFC 3550 §6.4).
// nackHistory is how many sent packets a leg keeps for NACK (a power of two).
const nackHistory = 64

func newMediaEngine() (*webrtc.MediaEngine, *interceptor.Registry, error) {
	me := &webrtc.MediaEngine{}
	err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: opusCapability(),
		PayloadType:        opusPayloadType,
	}, webrtc.RTPCodecTypeAudio)
	if err != nil {
		return nil, nil, fmt.Errorf("media: register opus: %w", err)
	}
	reg := &interceptor.Registry{}
	gen, err := nack.NewGeneratorInterceptor()
	if err != nil {
		return nil, nil, err
	}
	// The responder keeps a copy of each sent packet in a 1460-byte buffer
	// for retransmission; pion's default of 1024 packets (20 s of audio)
	// costs 1.4 MiB per leg. 64 packets is 1.28 s: a retransmission older
	// than that arrives after the receiver's jitter buffer has played past
	// it, so a larger history only costs memory.
	resp, err := nack.NewResponderInterceptor(nack.ResponderSize(nackHistory))
	if err != nil {
		return nil, nil, err
	}
	reg.Add(resp)
	reg.Add(gen)
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		return nil, nil, err
	}
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI},
		webrtc.RTPCodecTypeAudio); err != nil {
		return nil, nil, err
	}
	// The visitor's audio level (RFC 6464): browsers put it in every
	// packet when it is negotiated, which makes voice activity detection
	// free (vad.go).
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI},
		webrtc.RTPCodecTypeAudio); err != nil {
		return nil, nil, err
	}
	tw, err := twcc.NewSenderInterceptor()
	if err != nil {
		return nil, nil, err
	}
	reg.Add(tw)
	return me, reg, nil
}

// opusCapability is the one codec media speaks on the WebRTC side.
func opusCapability() webrtc.RTPCodecCapability {
	return webrtc.RTPCodecCapability{
		MimeType:    webrtc.MimeTypeOpus,
		ClockRate:   48000,
		Channels:    2,
		SDPFmtpLine: opusFmtp,
		RTCPFeedback: []webrtc.RTCPFeedback{
			{Type: webrtc.TypeRTCPFBNACK},
			{Type: webrtc.TypeRTCPFBTransportCC},
		},
	}
}

// settingEngine applies Config to pion's SettingEngine. With UDPPort it
// opens the mux sockets (one per local address, receive buffer
// SocketBuffer).
func (e *Engine) settingEngine() (webrtc.SettingEngine, error) {
	cfg := e.cfg
	var se webrtc.SettingEngine
	// pion's ICE logs name the visitor's candidate addresses.
	se.LoggerFactory = pionLoggers{log: slog.New(NewAddrRedactor(e.log.Handler()))}
	se.SetICETimeouts(cfg.DisconnectedTimeout, cfg.FailedTimeout, cfg.KeepAliveInterval)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	// mDNS host candidates (draft-ietf-mmusic-mdns-ice-candidates) hide
	// the server's address; a server must advertise its real one.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	var ifFilter func(string) bool
	if len(cfg.Interfaces) > 0 {
		names := slices.Clone(cfg.Interfaces)
		ifFilter = func(name string) bool { return slices.Contains(names, name) }
		se.SetInterfaceFilter(ifFilter)
	}
	if len(cfg.NAT1To1IPs) > 0 {
		// The replacement for the deprecated SetNAT1To1IPs(ips, host).
		err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        slices.Clone(cfg.NAT1To1IPs),
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		})
		if err != nil {
			return se, fmt.Errorf("%w: NAT 1:1: %v", ErrBadConfig, err)
		}
	}
	std, err := stdnet.NewNet()
	if err != nil {
		return se, fmt.Errorf("media: network: %w", err)
	}
	nw := bufferedNet{Net: std, size: cfg.SocketBuffer}
	se.SetNet(nw)

	if cfg.UDPPort > 0 {
		opts := []ice.UDPMuxFromPortOption{
			ice.UDPMuxFromPortWithNet(nw),
			ice.UDPMuxFromPortWithReadBufferSize(cfg.SocketBuffer),
			ice.UDPMuxFromPortWithLogger(se.LoggerFactory.NewLogger("udpmux")),
			ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4, ice.NetworkTypeUDP6),
		}
		if cfg.IncludeLoopback {
			opts = append(opts, ice.UDPMuxFromPortWithLoopback())
		}
		if ifFilter != nil {
			opts = append(opts, ice.UDPMuxFromPortWithInterfaceFilter(ifFilter))
		}
		mux, err := ice.NewMultiUDPMuxFromPort(cfg.UDPPort, opts...)
		if err != nil {
			return se, fmt.Errorf("media: udp mux on port %d: %w", cfg.UDPPort, err)
		}
		e.mux = mux
		se.SetICEUDPMux(mux)
	} else if cfg.PortMin != 0 || cfg.PortMax != 0 {
		if err := se.SetEphemeralUDPPortRange(cfg.PortMin, cfg.PortMax); err != nil {
			return se, fmt.Errorf("%w: port range: %v", ErrBadConfig, err)
		}
	}
	return se, nil
}

// bufferedNet is the standard network with a larger receive buffer on every
// UDP socket pion opens (MEASURED.md: default buffers drop packets under
// load).
type bufferedNet struct {
	*stdnet.Net
	size int
}

// ListenUDP implements transport.Net.
func (n bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil && n.size > 0 {
		_ = c.SetReadBuffer(n.size) // best effort: the kernel caps it at rmem_max
	}
	return c, err
}

// NumLegs is the number of live legs.
func (e *Engine) NumLegs() int { return e.legs.len() }

// Close closes every live leg (each reports StateClosed with ReasonClosed)
// and the UDP mux. It is idempotent; NewLeg fails with ErrClosed after it.
func (e *Engine) Close() error {
	if !e.legs.close() {
		return nil
	}
	e.clock.close()
	if e.mux != nil {
		return e.mux.Close()
	}
	return nil
}

// waitGathered waits for ICE gathering to finish (non-trickle answers,
// RFC 9725 §4.2), ctx to end or quit to close.
func waitGathered(ctx context.Context, gathered, quit <-chan struct{}) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("media: ICE gathering: %w", context.Cause(ctx))
	}
	select {
	case <-gathered:
		return nil
	case <-quit:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("media: ICE gathering: %w", context.Cause(ctx))
	}
}
