package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// MediaLeg is what the broker needs of a voice transport (a WebRTC peer
// connection, or a LiveKit room): play agent audio to the visitor, drop it
// on barge-in, and hang up. media implements it.
type MediaLeg interface {
	// Play queues one agent audio frame for the visitor; it must not block.
	Play(f agentbridge.AudioFrame)
	// ClearAudio drops every agent frame still queued.
	ClearAudio()
	// Close hangs up. It is idempotent.
	Close() error
}

// Voice is the voice leg of a session: the visitor's audio goes to the
// agent on Subjects.InAudio(agent, cid), the agent's audio on
// Subjects.OutAudio (from the worker holding the conversation only) comes
// back, and the agent's clear_audio
// events empty the visitor's queue. Audio never touches JetStream. The
// transport reports its states (MediaState, TransportClosed) and the
// visitor's voice activity (Speech, speech.go) to the log, in one FIFO.
type Voice struct {
	b         *Broker
	id        string
	session   Session
	format    string
	inSubj    string
	transport string
	settings  VoiceSettings
	created   time.Time // a reply older than the leg is not the one it plays

	micFrames     atomic.Uint64
	micErrors     atomic.Uint64
	agentFrames   atomic.Uint64
	statesDropped atomic.Uint64
	audioRefused  atomic.Uint64
	// holderCache is fromHolder's last check (the agent audio
	// subscription's goroutine only).
	holderCache struct {
		worker string
		gen    uint64
	}

	// stateMu guards the FIFO of transport states waiting to be logged
	// and whether its drainer runs. It is a leaf lock: nothing is called
	// while holding it.
	stateMu  sync.Mutex
	states   stateQueue
	draining bool
	// closing: the transport's closed state is queued; speech reported
	// after it is not logged.
	closing bool

	mu       sync.Mutex
	media    MediaLeg
	audioSub *nats.Subscription
	events   *Subscription
	onText   func(agentbridge.Event) // OnAgentText
	started  bool
	ended    bool
	done     chan struct{}
}

// VoiceStats are the broker-side counters of a voice leg.
type VoiceStats struct {
	MicFramesPublished uint64 `json:"mic_frames_published"`
	MicPublishErrors   uint64 `json:"mic_publish_errors"`
	AgentFrames        uint64 `json:"agent_frames"`
	// MediaStatesDropped counts transport states never logged because
	// the leg's queue was full (see stateQueue).
	MediaStatesDropped uint64 `json:"media_states_dropped"`
}

// AgentFormat is the audio format agent speaks and hears ("opus" unless
// configured otherwise).
func (b *Broker) AgentFormat(agent string) string {
	if f, ok := b.cfg.Agents.AudioFormats[agent]; ok && f != "" {
		return f
	}
	return "opus"
}

// NewVoice prepares a voice leg for a session. Nothing happens until Start:
// the caller builds its transport in between and may still drop it.
func (b *Broker) NewVoice(s Session) *Voice {
	return &Voice{b: b, id: newID("leg_"), session: s, format: b.AgentFormat(s.Agent),
		inSubj: b.subj.InAudio(s.Agent, s.ConversationID), done: make(chan struct{}), transport: "webrtc",
		states: stateQueue{max: maxQueuedStates}, settings: b.voiceSettings(s), created: time.Now()}
}

// SetTransport names the transport for ops ("webrtc", "livekit"); call it
// before StartVoice.
func (v *Voice) SetTransport(name string) { v.transport = name }

// ID is the leg id.
func (v *Voice) ID() string { return v.id }

// Session is the session the leg belongs to.
func (v *Voice) Session() Session { return v.session }

// Format is the agent's audio format string (ParseFormat in media).
func (v *Voice) Format() string { return v.format }

// Media returns the transport attached by Start.
func (v *Voice) Media() MediaLeg {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.media
}

// Done is closed when the leg has ended.
func (v *Voice) Done() <-chan struct{} { return v.done }

// Stats returns the leg's broker-side counters.
func (v *Voice) Stats() VoiceStats {
	return VoiceStats{MicFramesPublished: v.micFrames.Load(), MicPublishErrors: v.micErrors.Load(),
		AgentFrames: v.agentFrames.Load(), MediaStatesDropped: v.statesDropped.Load()}
}

// PublishMic sends one visitor audio frame to the agent. It is the media
// hot path: a core NATS publish, never JetStream, never blocking on the
// agent.
func (v *Voice) PublishMic(f agentbridge.AudioFrame) {
	if err := v.b.nc.PublishMsg(f.Msg(v.inSubj)); err != nil {
		v.micErrors.Add(1)
		return
	}
	v.micFrames.Add(1)
	if !f.CapturedAt.IsZero() {
		v.b.obs().MicFrame(time.Since(f.CapturedAt))
	}
}

// Start attaches the transport: agent audio and clear_audio are routed to
// it, the session's previous voice leg (if any) is replaced, and the
// conversation switches to voice (mode_changed) if it was in chat.
func (b *Broker) StartVoice(ctx context.Context, v *Voice, m MediaLeg) error {
	events, err := b.Subscribe(ctx, v.session.ConversationID)
	if err != nil {
		return err
	}
	audio, err := b.subs.subscribe(b.subj.OutAudio(v.session.Agent, v.session.ConversationID), v.session.ConversationID, v.onAgentAudio)
	if err != nil {
		events.Close()
		return fmt.Errorf("%w: subscribe agent audio: %w", ErrStore, err)
	}
	v.mu.Lock()
	if v.ended {
		v.mu.Unlock()
		events.Close()
		_ = b.subs.unsubscribe(audio)
		return ErrClosed
	}
	v.media, v.audioSub, v.events, v.started = m, audio, events, true
	v.mu.Unlock()

	b.voiceMu.Lock()
	old := b.voices[v.session.ID]
	b.voices[v.session.ID] = v
	b.voiceMu.Unlock()
	if old != nil {
		old.end(ctx, "replaced", false)
	}
	ms, _ := m.(MediaStatser)
	b.rooms.attach(v.session, RoomLeg{ID: v.id, Kind: agentbridge.ModeVoice, Transport: v.transport}, ms, time.Time{})
	if !b.goroutine(v.watchEvents) {
		v.end(ctx, "shutting_down", false)
		return ErrClosed
	}
	if _, _, err := b.SetMode(ctx, v.session, agentbridge.ModeVoice, "voice_leg"); err != nil {
		v.end(ctx, "setup_failed", false)
		return err
	}
	// A session started in voice changes no mode: the call is its first
	// act, and the conversation needs a worker now.
	b.dispatcher.ensure(v.session.ConversationID, v.session.Agent)
	b.log.Info("voice leg started", "session_id", v.session.ID, "conversation_id", v.session.ConversationID,
		"leg_id", v.id, "format", v.format)
	return nil
}

// onAgentAudio plays one agent frame, if it comes from the worker holding
// the conversation (its Parley-Worker header); frames of any other worker
// (one that lost the conversation, or a forger) are dropped, counted and
// logged once per leg.
func (v *Voice) onAgentAudio(m *nats.Msg) {
	worker := m.Header.Get(agentbridge.HeaderWorker)
	if owner, ok := v.fromHolder(worker); !ok {
		v.b.obs().AgentAudioRefused()
		if v.audioRefused.Add(1) == 1 {
			v.b.log.Warn("agent audio from a worker not holding the conversation dropped (logged once per leg)",
				"conversation_id", v.session.ConversationID, "leg_id", v.id, "worker_id", fmt.Sprintf("%.64q", worker),
				"holder", owner)
		}
		return
	}
	f, err := agentbridge.ParseAudioFrame(m)
	if err != nil {
		return
	}
	v.agentFrames.Add(1)
	if media := v.Media(); media != nil {
		media.Play(f)
	}
}

// fromHolder reports whether worker holds the leg's conversation (and the
// holder otherwise). It runs on the agent audio subscription's goroutine
// only, and asks the registry again only when the registry changed (every
// applied heartbeat, assignment and removal; a worker that went silent is
// removed by the sweep within a quarter of the heartbeat timeout), so a
// frame of the holder costs a comparison.
func (v *Voice) fromHolder(worker string) (string, bool) {
	hc := &v.holderCache
	gen := v.b.registry.gen.Load()
	if worker != "" && worker == hc.worker && gen == hc.gen {
		return worker, true
	}
	owner, ok := v.b.registry.owner(v.session.ConversationID, v.session.Agent)
	if !ok || worker != owner {
		hc.worker = ""
		return owner, false
	}
	hc.worker, hc.gen = owner, gen
	return owner, true
}

// watchEvents empties the visitor's queue on the agent's clear_audio and
// hands reply text to OnAgentText's function.
func (v *Voice) watchEvents() {
	v.mu.Lock()
	sub, onText := v.events, v.onText
	v.mu.Unlock()
	var fence agentbridge.Fence
	var updates []Update
	for {
		select {
		case <-v.done:
			return
		case <-sub.Ready():
		}
		updates, open := sub.Take(updates[:0])
		for _, u := range updates {
			if ev := u.Event; ev != nil && ev.Type == agentbridge.EventSessionEnded && ev.SessionID == v.session.ID {
				// Ended elsewhere (another broker's sweeper, a deletion):
				// the leg hangs up wherever it is hosted.
				v.end(v.b.ctx, ev.Reason, false)
				return
			}
			ev := u.Event
			if ev == nil || !fence.Admit(ev) {
				continue // a worker that lost the conversation
			}
			switch ev.Type {
			case agentbridge.EventClearAudio:
				if m := v.Media(); m != nil {
					m.ClearAudio()
				}
			case agentbridge.EventTextDelta, agentbridge.EventTextDone:
				if onText != nil {
					onText(*ev)
				}
			}
		}
		if !open {
			return
		}
	}
}

// MediaState records a transport state change (connected, disconnected,
// failed, …) in the conversation log, where the visitor's WebSocket and the
// agent see it. It does not block the caller. States are logged in the
// order of the calls (see drainStates).
func (v *Voice) MediaState(state, reason string) {
	v.queueState(queuedState{state: state, reason: reason})
}

// TransportClosed is called when the transport ended by itself (ICE
// failure, silence, the peer hung up): it records media_state "closed",
// after every state reported before it, then ends the leg, and the
// conversation goes back to chat, in that order. It does not block the
// caller.
func (v *Voice) TransportClosed(reason string) {
	v.queueState(queuedState{state: stateClosed, reason: reason, end: true})
}

// queueState appends st to the leg's FIFO and starts its drainer unless it
// runs.
func (v *Voice) queueState(st queuedState) {
	v.stateMu.Lock()
	if st.speech != nil && v.closing {
		v.stateMu.Unlock()
		return
	}
	if st.end || st.state == stateClosed {
		v.closing = true
	}
	if v.states.push(st) && v.statesDropped.Add(1) == 1 {
		// Logged after unlocking: stateMu is a leaf lock.
		defer v.b.log.Warn("media_state queue full: dropping the oldest intermediate state",
			"leg_id", v.id, "max", v.states.max)
	}
	if v.draining {
		v.stateMu.Unlock()
		return
	}
	v.draining = true
	v.stateMu.Unlock()
	if v.b.goroutine(v.drainStates) {
		return
	}
	// The broker is closing: nothing more is logged, but a closed
	// transport still ends its leg.
	v.stateMu.Lock()
	pending := v.states.items
	v.states.items, v.draining = nil, false
	v.stateMu.Unlock()
	for _, p := range pending {
		if p.end {
			v.end(context.Background(), p.reason, false)
		}
	}
}

// drainStates logs the leg's queued states one at a time, in FIFO order,
// and returns once the queue is empty. It is the leg's one state goroutine:
// queueState starts it (owned by the broker, so Close waits for it) only
// when it is not running, so there is at most one per leg and two states
// are never appended concurrently. It exits when the queue runs dry rather
// than living as long as the leg: states keep coming after the leg ended
// (its transport reports "closed" when End hangs it up), and an idle leg,
// or one that never started, holds no goroutine.
func (v *Voice) drainStates() {
	b := v.b
	for {
		v.stateMu.Lock()
		st, ok := v.states.pop()
		if !ok {
			v.draining = false
			v.stateMu.Unlock()
			return
		}
		v.stateMu.Unlock()
		if b.ctx.Err() != nil {
			// Broker closing: Close cancelled the store's context.
			if st.end {
				v.end(context.Background(), st.reason, false)
			}
			continue
		}
		if st.speech != nil {
			v.recordSpeech(*st.speech)
			continue
		}
		v.recordState(st.state, st.reason)
		if st.end {
			ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
			v.End(ctx, st.reason)
			cancel()
		}
	}
}

// maxQueuedStates bounds a leg's FIFO of states waiting to be logged.
// Transports report a handful of states per call; a flapping one, with
// the store slow, is what reaches it.
const maxQueuedStates = 256

// stateClosed and stateFailed are the terminal transport states, never
// dropped from a full queue.
const (
	stateClosed = "closed"
	stateFailed = "failed"
)

// queuedState is a transport state, or a speech event, waiting to be
// logged; end ends the leg once it is.
type queuedState struct {
	state, reason string
	end           bool
	speech        *SpeechEvent
}

// kept reports whether a full queue must keep the state: terminal
// transport states and barge-ins (which mark a reply interrupted).
func (q queuedState) kept() bool {
	if q.speech != nil {
		return q.speech.Kind == SpeechBargeIn
	}
	return q.end || q.state == stateClosed || q.state == stateFailed
}

// stateQueue is a bounded FIFO of transport states and speech events. Its
// drop policy: a state pushed onto a full queue makes room by dropping the
// oldest intermediate state queued (connected, disconnected, …, speech
// started or stopped). If only kept states (closed, failed, barge_in) are
// queued, a new intermediate state is dropped and a new kept one is
// appended beyond max: kept states are never dropped. What is logged is therefore always in call order,
// keeps the newest state, and ends with the last terminal state reported.
type stateQueue struct {
	items []queuedState
	max   int
}

// push appends st and reports whether a state was dropped.
func (q *stateQueue) push(st queuedState) (dropped bool) {
	if len(q.items) < q.max {
		q.items = append(q.items, st)
		return false
	}
	for i, old := range q.items {
		if !old.kept() {
			q.items = append(q.items[:i], q.items[i+1:]...)
			q.items = append(q.items, st)
			return true
		}
	}
	if st.kept() {
		q.items = append(q.items, st)
		return false
	}
	return true
}

// pop removes the oldest state.
func (q *stateQueue) pop() (queuedState, bool) {
	if len(q.items) == 0 {
		return queuedState{}, false
	}
	st := q.items[0]
	q.items[0] = queuedState{}
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // let a burst's backing array go
	}
	return st, true
}

func (v *Voice) recordState(state, reason string) {
	b := v.b
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	_, err := b.appendInbound(ctx, agentbridge.Event{Type: agentbridge.EventMediaState,
		ConversationID: v.session.ConversationID, SessionID: v.session.ID, LegID: v.id,
		State: state, Reason: reason}, "", v.session.Agent)
	if err != nil {
		b.log.Warn("media_state not recorded", "leg_id", v.id, "err", err)
	}
}

// End hangs up the leg; the conversation goes back to chat. It is
// idempotent.
func (v *Voice) End(ctx context.Context, reason string) { v.end(ctx, reason, true) }

func (v *Voice) end(ctx context.Context, reason string, toChat bool) {
	v.mu.Lock()
	if v.ended {
		v.mu.Unlock()
		return
	}
	v.ended = true
	media, audio, events, started := v.media, v.audioSub, v.events, v.started
	v.mu.Unlock()
	close(v.done)
	if audio != nil {
		_ = v.b.subs.unsubscribe(audio)
	}
	if events != nil {
		events.Close()
	}
	if media != nil {
		_ = media.Close()
	}
	b := v.b
	b.rooms.detach(v.session.ConversationID, v.id)
	b.voiceMu.Lock()
	current := b.voices[v.session.ID] == v
	if current {
		delete(b.voices, v.session.ID)
	}
	b.voiceMu.Unlock()
	if !started {
		return
	}
	b.log.Info("voice leg ended", "session_id", v.session.ID, "conversation_id", v.session.ConversationID,
		"leg_id", v.id, "reason", reason, "mic_frames", v.micFrames.Load(), "agent_frames", v.agentFrames.Load())
	if toChat && current {
		if _, _, err := b.SetMode(ctx, v.session, agentbridge.ModeChat, reason); err != nil {
			b.log.Warn("switching back to chat failed", "session_id", v.session.ID, "err", err)
		}
	}
}

// Voice returns the live voice leg of a session.
func (b *Broker) Voice(sessionID string) (*Voice, bool) {
	b.voiceMu.Lock()
	defer b.voiceMu.Unlock()
	v, ok := b.voices[sessionID]
	return v, ok
}

// endVoices hangs up every voice leg (shutdown).
func (b *Broker) endVoices(ctx context.Context) {
	b.voiceMu.Lock()
	all := make([]*Voice, 0, len(b.voices))
	for _, v := range b.voices {
		all = append(all, v)
	}
	b.voiceMu.Unlock()
	for _, v := range all {
		v.end(ctx, "shutting_down", false)
	}
}
