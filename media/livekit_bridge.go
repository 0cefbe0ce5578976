package media

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/agentbridge"
)

// BridgeOptions describe a new LiveKit bridge.
type BridgeOptions struct {
	// ID names the bridge (the voice leg's id; used in logs).
	ID string
	// Room is the LiveKit room (LiveKit.RoomName of the conversation).
	Room string
	// Visitor is the participant identity whose microphone track is
	// carried to the agent; other participants are ignored.
	Visitor string
	// AgentFormat, OnMicFrame, OnState and Log are as in LegOptions.
	// OnState sees connected when the visitor's microphone track arrives,
	// disconnected while the bridge's own connection to LiveKit
	// reconnects, and closed exactly once at the end.
	AgentFormat Format
	OnMicFrame  func(agentbridge.AudioFrame)
	OnState     func(s State, reason string)
	Log         *slog.Logger
	// VAD, OnSpeech and OnUtterance are as in LegOptions. The visitor's
	// level comes from the RFC 6464 header extension when LiveKit forwards
	// it, else from the decoded audio.
	VAD         VAD
	OnSpeech    func(SpeechEvent)
	OnUtterance func(Utterance)
}

// Reasons a bridge ends with, besides ReasonClosed and ReasonSilence.
const (
	ReasonVisitorLeft = "livekit_visitor_left" // the visitor left the room
	ReasonRoomClosed  = "livekit_room_closed"  // the room was deleted or timed out
	ReasonRemoved     = "livekit_removed"      // the bridge was removed from the room
	ReasonReplaced    = "livekit_replaced"     // another bridge took the room
	ReasonDisconnect  = "livekit_disconnected" // the connection to LiveKit was lost
)

// Bridge is Parley in one LiveKit room: a participant (identity
// BridgeIdentity, kind agent) that subscribes to the visitor's microphone
// and hands its frames to OnMicFrame exactly like a direct Leg (the same
// jitter buffer, RTP sequence and timestamp extension, Opus passthrough or
// PCM decoding), and publishes one Opus microphone-source track on which
// Play's frames are paced at 20 ms. It implements the same Play /
// ClearAudio / Close / Stats as a Leg, so the broker cannot tell them
// apart.
//
// Goroutines, owned by the bridge and stopped by Close: run (the state
// loop: LiveKit events, silence watchdog, teardown), the shard of its own
// playout clock (agent audio out, playclock.go; only while audio plays)
// and, while the visitor's track is subscribed, readMic. LiveKit's SDK
// callbacks only hand events to run. readMic is started through the
// lifecycle; run leaves the room, waits for it (lifecycle.drain), stops
// the clock and deletes the room before it reports StateClosed.
type Bridge struct {
	audioPath
	// lifecycle is how the bridge ends (lifecycle.go), as for a Leg.
	lifecycle

	lk      *LiveKit
	id      string
	room    string
	visitor string
	silence time.Duration
	lkRoom  *lksdk.Room
	track   *webrtc.TrackLocalStaticRTP

	keepRoom atomic.Bool // another bridge took the room: do not delete it
	// clock sends the agent audio: a bridge's own, because the SDK's
	// track can block a write while LiveKit reconnects the publisher, and
	// that must not hold up another bridge's audio.
	clock  *playClock
	events chan bridgeEvent
}

// bridgeEvent is something LiveKit told the bridge, for run.
type bridgeEvent struct {
	kind   bridgeEventKind
	reason string
}

type bridgeEventKind int

const (
	evVisitorJoined bridgeEventKind = iota
	evTrackArrived
	evVisitorLeft
	evReconnecting
	evReconnected
	evDisconnected
)

// NewBridge creates the room (idempotent; with the configured empty
// timeout), joins it as the bridge and publishes the agent's track. The
// bridge that held the room before, if any, is closed first (ReasonReplaced;
// the room stays). ctx bounds the set-up. Errors wrap ErrLiveKit when
// LiveKit refused or could not be reached.
func (l *LiveKit) NewBridge(ctx context.Context, o BridgeOptions) (*Bridge, error) {
	if o.Room == "" || o.Visitor == "" {
		return nil, fmt.Errorf("%w: a bridge needs a room and a visitor", ErrBadConfig)
	}
	log := o.Log
	if log == nil {
		log = l.log
	}
	b := &Bridge{
		lk:      l,
		id:      o.ID,
		room:    o.Room,
		visitor: o.Visitor,
		silence: l.audio.SilenceTimeout,
		events:  make(chan bridgeEvent, 8),
		clock:   newPlayClock(1),
	}
	b.initLifecycle(o.OnState)
	if err := b.init(l.audio, o.AgentFormat, o.OnMicFrame, &b.lifecycle, log.With("leg", o.ID, "livekit_room", o.Room)); err != nil {
		return nil, err
	}
	if err := b.initSpeech(o.VAD, o.OnSpeech, o.OnUtterance); err != nil {
		return nil, err
	}

	// b becomes its room's bridge, replacing any other.
	old, err := l.bridges.put(b.room, b)
	if err != nil {
		return nil, err
	}
	if old != nil {
		old.keepRoom.Store(true)
		old.stop(ReasonReplaced)
		<-old.done // its identity must be gone before ours joins
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.JoinTimeout)
	defer cancel()
	if err := b.join(ctx); err != nil {
		b.abort()
		return nil, err
	}
	go b.run()
	if b.lkRoom.GetParticipantByIdentity(b.visitor) != nil {
		b.signal(bridgeEvent{kind: evVisitorJoined})
	}
	b.log.Debug("media: livekit bridge joined", "format", b.codec)
	return b, nil
}

// join creates the room, connects to it and publishes the agent track.
func (b *Bridge) join(ctx context.Context) error {
	l := b.lk
	if err := l.createRoom(ctx, b.room); err != nil {
		return err
	}
	token, err := l.bridgeToken(b.room)
	if err != nil {
		return err
	}
	cb := lksdk.NewRoomCallback()
	cb.OnParticipantConnected = func(rp *lksdk.RemoteParticipant) {
		if rp.Identity() == b.visitor {
			b.signal(bridgeEvent{kind: evVisitorJoined})
		}
	}
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) {
		if rp.Identity() == b.visitor {
			b.signal(bridgeEvent{kind: evVisitorLeft})
		}
	}
	cb.OnTrackSubscribed = b.onTrack
	cb.OnReconnecting = func() { b.signal(bridgeEvent{kind: evReconnecting}) }
	cb.OnReconnected = func() { b.signal(bridgeEvent{kind: evReconnected}) }
	cb.OnDisconnectedWithReason = func(r lksdk.DisconnectionReason) {
		b.signal(bridgeEvent{kind: evDisconnected, reason: disconnectReason(r)})
	}
	b.lkRoom = lksdk.NewRoom(cb)
	err = b.lkRoom.JoinWithContextAndToken(ctx, l.cfg.URL, token,
		lksdk.WithAutoSubscribe(true), lksdk.WithLogger(sdkLogger(b.log)))
	if err != nil {
		return fmt.Errorf("%w: join room %s: %v", ErrLiveKit, b.room, err)
	}
	c := opusCapability()
	c.RTCPFeedback = nil
	if b.track, err = webrtc.NewTrackLocalStaticRTP(c, "agent", "parley"); err != nil {
		return fmt.Errorf("media: local track: %w", err)
	}
	// A microphone-source track: the widget plays it like any remote
	// microphone, and the bridge's grant allows nothing else.
	if _, err := b.lkRoom.LocalParticipant.PublishTrack(b.track, &lksdk.TrackPublicationOptions{
		Name: "agent", Source: livekit.TrackSource_MICROPHONE}); err != nil {
		return fmt.Errorf("%w: publish the agent track: %v", ErrLiveKit, err)
	}
	return nil
}

// bridgeToken is the bridge's participant token: join this room, subscribe,
// publish microphone audio, no data, no admin rights; kind agent, so
// LiveKit closes the room on its empty timeout even if the bridge stays.
func (l *LiveKit) bridgeToken(room string) (string, error) {
	g := &auth.VideoGrant{RoomJoin: true, Room: room}
	g.SetCanSubscribe(true)
	g.SetCanPublish(true)
	g.SetCanPublishData(false)
	g.SetCanPublishSources([]livekit.TrackSource{livekit.TrackSource_MICROPHONE})
	t, err := auth.NewAccessToken(l.cfg.APIKey, l.cfg.APISecret).SetVideoGrant(g).
		SetIdentity(BridgeIdentity).SetName("Parley").SetKind(livekit.ParticipantInfo_AGENT).
		SetValidFor(l.cfg.JoinTimeout + time.Minute).ToJWT()
	if err != nil {
		return "", fmt.Errorf("media: bridge token: %w", err)
	}
	return t, nil
}

// disconnectReason names why LiveKit disconnected the bridge.
func disconnectReason(r lksdk.DisconnectionReason) string {
	switch r {
	case lksdk.RoomClosed:
		return ReasonRoomClosed
	case lksdk.ParticipantRemoved:
		return ReasonRemoved
	case lksdk.DuplicateIdentity:
		return ReasonReplaced
	case lksdk.LeaveRequested:
		return ReasonClosed
	default:
		return ReasonDisconnect
	}
}

// onTrack starts the mic reader for the visitor's microphone track. It
// runs on an SDK goroutine. A track that ends (unpublished, or the visitor
// republished after a full reconnect) lets the next one in, with a fresh
// jitter buffer (Seq then jumps: a new RTP stream).
func (b *Bridge) onTrack(t *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
	if rp.Identity() != b.visitor || t.Kind() != webrtc.RTPCodecTypeAudio || pub.Source() != livekit.TrackSource_MICROPHONE {
		return
	}
	if mt := t.Codec().MimeType; !strings.EqualFold(mt, webrtc.MimeTypeOpus) {
		b.log.Warn("media: visitor microphone is not Opus: ignored", "codec", mt)
		return
	}
	levelExt := audioLevelExtID(pub.Receiver())
	started := b.spawnReader(func() {
		b.jb = newJitterBuffer(b.lk.audio.JitterWindow)
		b.readMic(t, levelExt)
		b.readerDone()
	})
	if !started {
		b.log.Debug("media: ignoring extra track", "track", pub.SID())
		return
	}
	b.signal(bridgeEvent{kind: evTrackArrived})
}

// signal hands an event to run without blocking past the bridge's end.
func (b *Bridge) signal(ev bridgeEvent) {
	select {
	case b.events <- ev:
	case <-b.quit:
	}
}

// run is the bridge's state loop: it applies LiveKit's events, watches for
// silence and, once the bridge is stopping, tears it down.
func (b *Bridge) run() {
	runStates(&b.lifecycle, &b.audioPath, b.silence, b.events, b.handleEvent, b.teardown)
}

// handleEvent applies what LiveKit told the bridge, on the state loop.
func (b *Bridge) handleEvent(ev bridgeEvent) {
	switch ev.kind {
	case evVisitorJoined:
		b.joined()
	case evTrackArrived:
		b.joined()
		if b.stats.connectedAt.Load() == 0 {
			b.stats.connectedAt.Store(time.Now().UnixNano())
		}
		b.report(StateConnected, "")
	case evReconnecting:
		b.report(StateDisconnected, "livekit_reconnecting")
	case evReconnected:
		if b.stats.connectedAt.Load() != 0 {
			b.report(StateConnected, "")
		}
	case evVisitorLeft:
		b.stop(ReasonVisitorLeft)
	case evDisconnected:
		b.stop(ev.reason)
	}
}

// joined starts the playout when the visitor is in the room (the first
// time; later calls do nothing).
func (b *Bridge) joined() { b.startPlayout(b.clock, b.track) }

// leave disconnects from the room, waits for the bridge's goroutines and,
// unless another bridge took it over, deletes the room.
func (b *Bridge) leave() {
	b.drain(func() {
		if b.lkRoom != nil {
			b.lkRoom.Disconnect() // ends the mic track: readMic returns
		}
		b.stopPlayout() // after: a frame being written returns once the room is left
	})
	b.clock.close()
	if !b.keepRoom.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), liveKitCallTimeout)
		defer cancel()
		if err := b.lk.DeleteRoom(ctx, b.room); err != nil {
			b.log.Warn("media: livekit room not deleted", "err", err)
		}
	}
	b.lk.bridges.drop(b.room, b)
}

// teardown leaves and reports StateClosed once.
func (b *Bridge) teardown() {
	b.leave()
	st := b.Stats()
	b.log.Info("media: livekit bridge closed", "reason", b.reason, "frames_in", st.FramesIn,
		"frames_out", st.FramesOut, "lost", st.Lost, "late", st.Late, "dropped", st.Dropped)
	b.report(StateClosed, b.reason)
	b.finish()
}

// abort undoes a NewBridge that failed: no OnState is reported. Done
// still closes: a bridge that replaces this one waits for it.
func (b *Bridge) abort() {
	b.stop(ReasonClosed)
	b.leave()
	b.finish()
}

// ID is the bridge's name from BridgeOptions.ID.
func (b *Bridge) ID() string { return b.id }

// Room is the LiveKit room the bridge is in.
func (b *Bridge) Room() string { return b.room }

// Visitor is the participant identity whose microphone the bridge carries.
func (b *Bridge) Visitor() string { return b.visitor }

// Format is the agent-side audio format.
func (b *Bridge) Format() Format { return b.format }

// State, Done and Reason come from the lifecycle.

// Alive reports whether the bridge is neither closing nor closed.
func (b *Bridge) Alive() bool { return !b.isEnding() }

// Close leaves the room and deletes it (LiveKit disconnects the visitor),
// stops and waits for the bridge's goroutines, and reports StateClosed with
// ReasonClosed unless the bridge already ended for another reason. It is
// idempotent and always returns nil; called from OnState it does not wait.
func (b *Bridge) Close() error {
	b.closeWait()
	return nil
}
