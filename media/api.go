package media

import (
	"log/slog"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// This file is the contract between media and its callers (signaling wires
// a Leg to the broker). Implementation lives in the other files.

// Config configures the WebRTC engine. Zero values take the defaults noted.
type Config struct {
	// UDPPort, when > 0, carries every leg's media on one UDP socket (ICE UDP
	// mux, RFC 8445 §5.1.1) on that port.
	UDPPort int
	// PortMin and PortMax bound the ephemeral UDP ports when UDPPort is 0
	// (both 0: any port).
	PortMin, PortMax uint16
	// NAT1To1IPs are public IPs to advertise as host candidates (1:1 NAT).
	NAT1To1IPs []string
	// Interfaces, when set, limits gathering to these network interfaces.
	Interfaces []string
	// IncludeLoopback gathers loopback candidates (needed where lo is the
	// only interface, e.g. tests in a network namespace).
	IncludeLoopback bool
	// DisconnectedTimeout, FailedTimeout and KeepAliveInterval are the ICE
	// timers (defaults 5 s, 25 s, 2 s).
	DisconnectedTimeout, FailedTimeout, KeepAliveInterval time.Duration
	// JitterWindow is how long an out-of-order gap is waited for before the
	// missing frame counts as lost (default 60 ms, min 20 ms, max 200 ms).
	JitterWindow time.Duration
	// SilenceTimeout ends a leg that received no RTP for this long
	// (default 30 s).
	SilenceTimeout time.Duration
	// PlayoutQueue bounds the agent frames queued for a visitor (default
	// 500 frames = 10 s); the oldest are dropped, and counted, past it.
	PlayoutQueue int
	// SocketBuffer is the receive buffer asked for on media sockets
	// (default 4 MiB; the kernel caps it at net.core.rmem_max).
	SocketBuffer int
}

// ICEServer is a STUN or TURN server handed to the peer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// State is a leg's connection state.
type State string

// Leg states reported through LegOptions.OnState.
const (
	StateConnecting   State = "connecting"
	StateConnected    State = "connected"
	StateDisconnected State = "disconnected"
	StateFailed       State = "failed"
	StateClosed       State = "closed"
)

// End reasons reported with StateClosed.
const (
	ReasonClosed       = "closed"          // Close (or Engine.Close) was called
	ReasonFailed       = "ice_failed"      // ICE (or DTLS) failed
	ReasonSilence      = "silence_timeout" // no RTP for SilenceTimeout
	ReasonRemoteClosed = "remote_closed"   // the peer closed the connection (DTLS close_notify)
)

// LegOptions describe a new voice leg.
type LegOptions struct {
	// ID names the leg (used in logs).
	ID string
	// Offer is the remote SDP offer; it must have an audio m-line offering
	// Opus.
	Offer string
	// AgentFormat is what the agent speaks and hears: Opus frames passed
	// through, or PCM decoded from / encoded to Opus.
	AgentFormat Format
	// OnMicFrame receives each visitor audio frame, in order, 20 ms each,
	// with Seq, Timestamp (RTP, extended) and CapturedAt (RTP arrival) set
	// and Codec = AgentFormat. It is called from the leg's reader goroutine
	// and must not block or call Close. Payload belongs to the callee.
	OnMicFrame func(agentbridge.AudioFrame)
	// OnState receives state changes (connected, disconnected, failed, and
	// finally closed exactly once, with reason set). It is called from the
	// leg's state goroutine without locks held, must not block for long, and
	// may call Close (which then does not wait).
	OnState func(s State, reason string)
	// VAD configures voice activity detection and barge-in (vad.go). VAD
	// runs when OnSpeech or OnUtterance is set or VAD.BargeIn is on.
	VAD VAD
	// OnSpeech receives the visitor's voice activity: started and stopped
	// in pairs, and barge_in between them when VAD.BargeIn cut the
	// playout (the queue is already cleared when it is called). It is
	// called from the leg's reader goroutine, in order, without locks held,
	// and must not block or call Close.
	OnSpeech func(SpeechEvent)
	// OnUtterance, when set, receives each utterance of the visitor's
	// speech when it stops (after OnSpeech's stopped event), for
	// speech-to-text. It turns VAD on. Called from the reader goroutine, in
	// order, without locks held; it must not block.
	OnUtterance func(Utterance)
	// Log is the leg's logger (nil: the engine's). pion's own logs go to
	// the engine's logger, since all legs share one pion API.
	Log *slog.Logger
}

// Utterance is one stretch of the visitor's speech, as 16 kHz mono PCM, for
// speech-to-text (utterance.go).
type Utterance struct {
	PCM        []int16   // 16 kHz mono; owned by the callee
	Rate       int       // 16000
	Start, End time.Time // the speech's onset and end (the SpeechEvents' At)
	// PreRoll is how much audio before Start the PCM begins with (up to
	// 300 ms).
	PreRoll time.Duration
	// Truncated: the speech went on past MaxUtterance; the rest comes as
	// the next Utterance.
	Truncated bool
}

// MaxUtterance bounds the PCM of one Utterance (pre-roll included).
const MaxUtterance = 30 * time.Second

// Format is the audio format on the agent side.
type Format struct {
	// Codec is "opus" or "pcm_s16le".
	Codec string
	// SampleRate is 48000 for Opus; 16000, 24000 or 48000 for PCM.
	SampleRate int
	// Channels is 2 for Opus as received from WebRTC; 1 for PCM.
	Channels int
}

// Stats are a leg's media counters.
type Stats struct {
	FramesIn     uint64    `json:"frames_in"`               // mic frames delivered to OnMicFrame
	FramesOut    uint64    `json:"frames_out"`              // agent frames written to the visitor
	Lost         uint64    `json:"lost"`                    // mic frames never received (gaps)
	Late         uint64    `json:"late"`                    // mic frames that came after their gap was given up
	Duplicates   uint64    `json:"duplicates"`              // mic packets received twice (dropped, not in Late)
	Dropped      uint64    `json:"dropped"`                 // agent frames dropped (queue full or cleared)
	Rejected     uint64    `json:"rejected"`                // agent frames of a wrong codec or malformed
	DecodeErrors uint64    `json:"decode_errors"`           // mic packets PCM agents lost to Opus decode errors
	BargeIns     uint64    `json:"barge_ins"`               // playouts cut by the visitor's speech (VAD.BargeIn)
	JitterMS     float64   `json:"jitter_ms"`               // interarrival jitter (RFC 3550) of mic RTP
	RTTMS        float64   `json:"rtt_ms"`                  // from RTCP receiver reports
	BitrateIn    float64   `json:"bitrate_in"`              // bits/s of mic payload, last few seconds
	BitrateOut   float64   `json:"bitrate_out"`             // bits/s written to the visitor
	ConnectedAt  time.Time `json:"connected_at,omitzero"`   // first time the leg connected
	FirstFrameAt time.Time `json:"first_frame_at,omitzero"` // first mic frame delivered
	CreatedAt    time.Time `json:"created_at"`
}
