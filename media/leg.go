package media

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
)

// Leg is one visitor's WebRTC voice connection (one pion PeerConnection
// with one audio transceiver, RFC 8829 JSEP in the answerer role).
//
// Goroutines, all owned by the leg and stopped by Close: run (the state
// loop: connection states, silence watchdog, teardown), readSenderRTCP
// (RTCP about what we send: NACKs, receiver reports), and, once the
// visitor's track arrives, readMic (mic RTP in) and readReceiverRTCP. All
// but run are started through the lifecycle, and run waits for them
// (lifecycle.drain) before it reports StateClosed. Agent audio goes out on
// the engine's playout clock (playclock.go) from the first StateConnected
// until the PeerConnection is closed.
//
// Lock order: negMu, then lifecycle.mu. Neither is held while calling
// OnState or OnMicFrame.
type Leg struct {
	// audioPath is the mic path, the agent path and their counters
	// (audiopath.go), shared with the LiveKit bridge.
	audioPath
	// lifecycle is how the leg ends (lifecycle.go), shared with the
	// LiveKit bridge: quit, Done, the reason, the state, the goroutines.
	lifecycle

	id      string
	eng     *Engine
	pc      *webrtc.PeerConnection
	track   *webrtc.TrackLocalStaticRTP
	sender  *webrtc.RTPSender
	silence time.Duration

	events chan webrtc.PeerConnectionState

	negMu sync.Mutex // serialises offer/answer exchanges after the first

	iceUfrag   string       // our ICE ufrag of the current session; guarded by negMu
	iceSession atomic.Value // string: the current ICE session's tag (negotiate.go); written under negMu
}

// NewLeg answers a visitor's SDP offer (WHIP style, RFC 9725 §4.2: no
// trickle, the answer carries all our candidates) and starts the leg. It
// returns the leg and the SDP answer. ctx bounds ICE gathering.
//
// The offer must have an audio m-line offering Opus (ErrNoAudio) and be a
// well-formed offer (ErrBadSDP). The leg sends one Opus track (stream
// "parley", track "agent") on the offered audio transceiver.
func (e *Engine) NewLeg(ctx context.Context, o LegOptions) (*Leg, string, error) {
	if e.legs.isClosed() {
		return nil, "", ErrClosed
	}
	if err := checkOffer(o.Offer, true); err != nil {
		return nil, "", err
	}
	log := o.Log
	if log == nil {
		log = e.log
	}
	l := &Leg{
		id:      o.ID,
		eng:     e,
		silence: e.cfg.SilenceTimeout,
		events:  make(chan webrtc.PeerConnectionState, 4),
	}
	l.initLifecycle(o.OnState)
	if err := l.init(e.cfg, o.AgentFormat, o.OnMicFrame, &l.lifecycle, log.With("leg", o.ID)); err != nil {
		return nil, "", err
	}
	if err := l.initSpeech(o.VAD, o.OnSpeech, o.OnUtterance); err != nil {
		return nil, "", err
	}

	pc, err := e.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", fmt.Errorf("media: new peer connection: %w", err)
	}
	l.pc = pc
	pc.OnConnectionStateChange(l.onConnectionState)
	pc.OnTrack(l.onTrack)

	answer, err := l.answer(ctx, o.Offer)
	if err == nil {
		_, err = l.setICESession(answer)
	}
	if err != nil {
		l.abort()
		return nil, "", err
	}
	if _, err := e.legs.put(l, l); err != nil {
		l.abort()
		return nil, "", err
	}
	l.spawn(l.readSenderRTCP) // never refused: only run drains
	go l.run()
	l.log.Debug("media: leg created", "format", l.codec)
	return l, answer, nil
}

// answer applies the first offer, adds our track and returns the answer.
func (l *Leg) answer(ctx context.Context, offer string) (string, error) {
	err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer})
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	c := opusCapability()
	c.RTCPFeedback = nil
	if l.track, err = webrtc.NewTrackLocalStaticRTP(c, "agent", "parley"); err != nil {
		return "", fmt.Errorf("media: local track: %w", err)
	}
	if l.sender, err = l.pc.AddTrack(l.track); err != nil {
		return "", fmt.Errorf("media: add track: %w", err)
	}
	return l.completeAnswer(ctx)
}

// completeAnswer creates and sets the answer to the remote offer just set,
// waits for gathering and returns our full local description, its
// rejected m-lines in the form of reject.go (pion's own stays as it is).
func (l *Leg) completeAnswer(ctx context.Context) (string, error) {
	answer, err := l.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: create answer: %v", ErrBadSDP, err)
	}
	gathered := webrtc.GatheringCompletePromise(l.pc)
	if err := l.pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("%w: set answer: %v", ErrBadSDP, err)
	}
	if err := waitGathered(ctx, gathered, l.quit); err != nil {
		return "", err
	}
	local, remote := l.pc.LocalDescription(), l.pc.RemoteDescription()
	if local == nil || remote == nil {
		return "", ErrClosed
	}
	return rejectUnused(local.SDP, remote.SDP)
}

// abort undoes a NewLeg that failed after the PeerConnection existed. No
// OnState is reported: the caller never saw the leg.
func (l *Leg) abort() {
	l.stop(ReasonClosed) // releases pion callbacks blocked on events
	l.drain(l.closePC)
}

// closePC closes the PeerConnection, which ends every reader of the leg,
// then takes the leg off the playout clock (a frame being written returns
// once the connection is closed).
func (l *Leg) closePC() {
	if err := l.pc.Close(); err != nil {
		l.log.Debug("media: close peer connection", "err", err)
	}
	l.stopPlayout()
}

// onConnectionState hands pion's peer connection state (W3C webrtc-pc
// §4.3.3) to run. It runs on a pion goroutine.
func (l *Leg) onConnectionState(s webrtc.PeerConnectionState) {
	select {
	case l.events <- s:
	case <-l.quit:
	}
}

// onTrack starts the mic reader for the visitor's audio track. It runs on
// a pion goroutine.
func (l *Leg) onTrack(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
	if t.Kind() != webrtc.RTPCodecTypeAudio {
		return
	}
	// The reader slot is never freed: a leg reads one visitor track.
	levelExt := audioLevelExtID(r)
	if !l.spawnReader(func() { l.readMic(t, levelExt) }, func() { l.readReceiverRTCP(r) }) {
		l.log.Debug("media: ignoring extra track", "ssrc", t.SSRC())
	}
}

// run is the leg's state loop: it reports connection states, watches for
// silence and, once the leg is stopping, tears it down.
func (l *Leg) run() {
	runStates(&l.lifecycle, &l.audioPath, l.silence, l.events, l.handleState, l.teardown)
}

// handleState maps a peer connection state to the leg's.
func (l *Leg) handleState(s webrtc.PeerConnectionState) {
	switch s {
	case webrtc.PeerConnectionStateConnected:
		if l.stats.connectedAt.Load() == 0 {
			l.stats.connectedAt.Store(time.Now().UnixNano())
			l.startPlayout(l.eng.clock, l.track)
		}
		l.report(StateConnected, "")
	case webrtc.PeerConnectionStateDisconnected:
		l.report(StateDisconnected, "")
	case webrtc.PeerConnectionStateFailed:
		l.report(StateFailed, "")
		l.stop(ReasonFailed)
	case webrtc.PeerConnectionStateClosed:
		l.stop(ReasonRemoteClosed)
	}
}

// teardown closes the PeerConnection, waits for the leg's goroutines and
// reports StateClosed once.
func (l *Leg) teardown() {
	l.drain(l.closePC)
	l.eng.legs.drop(l, l)
	st := l.Stats()
	l.log.Info("media: leg closed", "reason", l.reason, "frames_in", st.FramesIn, "frames_out", st.FramesOut,
		"lost", st.Lost, "late", st.Late, "dropped", st.Dropped)
	l.report(StateClosed, l.reason)
	l.finish()
}

// ID is the leg's name from LegOptions.ID.
func (l *Leg) ID() string { return l.id }

// Format is the agent-side audio format of the leg.
func (l *Leg) Format() Format { return l.format }

// State, Done and Reason come from the lifecycle.

// Close ends the leg: it closes the PeerConnection, stops and waits for the
// leg's goroutines, and reports StateClosed with ReasonClosed unless the leg
// already ended for another reason. It is idempotent and always returns nil.
// Called from OnState it does not wait, since OnState runs on the goroutine
// it would wait for (a Close from elsewhere that races with an OnState call
// may return early too; the leg still finishes closing).
func (l *Leg) Close() error {
	l.closeWait()
	return nil
}

// closedErr is ErrClosed once the leg is ending.
func (l *Leg) closedErr() error {
	if l.isEnding() {
		return ErrClosed
	}
	return nil
}
