package broker

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/configs"
)

// SpeechEvent is a change in the visitor's voice activity on a voice leg,
// or a barge-in, as the broker records it. The transport (media) detects
// it; the broker imports no media, so signaling converts.
type SpeechEvent struct {
	// Kind is SpeechStarted, SpeechStopped or SpeechBargeIn.
	Kind string
	// At is the onset (started), the end of the last voiced frame
	// (stopped) or when the agent's playout was cut (barge_in).
	At time.Time
	// Source is how the speech was detected: "audio_level" (the RFC 6464
	// header extension) or "decode" (the level of decoded audio).
	Source string
	// LevelDBov is the loudest 20 ms frame of this speech so far.
	LevelDBov float64
	// HeardMS is, for a barge-in, how many ms of the reply being cut the
	// visitor heard.
	HeardMS int64
	// HeardText is, for a barge-in of a reply the speech pipeline was
	// speaking, the words of it the visitor heard (nil otherwise).
	HeardText *string
}

// Kinds of SpeechEvent.
const (
	SpeechStarted = "started"
	SpeechStopped = "stopped"
	SpeechBargeIn = "barge_in"
)

// VoiceSettings are what a voice leg of a session should detect: the
// widget's voice settings (configs.WidgetVoice), with barge-in off when
// the widget or the agent (agents.barge_in) turns it off.
type VoiceSettings struct {
	// ThresholdDBov: a 20 ms frame above it is voiced.
	ThresholdDBov float64
	// MinSpeech of voiced audio starts speech; Hangover of quiet ends it.
	MinSpeech, Hangover time.Duration
	// BargeIn: the visitor speaking over the agent's audio for BargeInMin
	// cuts the playout.
	BargeIn    bool
	BargeInMin time.Duration
	// WidgetBargeIn is the widget's own setting (voice.barge_in auto),
	// whatever the agent's: speech the broker speaks for an agent (its
	// speech pipeline) is interruptible when it is on.
	WidgetBargeIn bool
}

// voiceSettings computes a session's VoiceSettings from its widget and
// agent. A widget gone since the session started gives the defaults.
func (b *Broker) voiceSettings(s Session) VoiceSettings {
	var wv configs.WidgetVoice
	if w, err := b.WidgetByID(s.Widget); err == nil {
		wv = w.Voice
	}
	wv = wv.WithDefaults()
	return VoiceSettings{ThresholdDBov: wv.VAD.ThresholdDBov, MinSpeech: wv.MinSpeech(), Hangover: wv.Hangover(),
		BargeIn:    wv.BargeIn == configs.BargeInAuto && b.cfg.Agents.AgentBargeIn(s.Agent),
		BargeInMin: wv.BargeInMin(), WidgetBargeIn: wv.BargeIn == configs.BargeInAuto}
}

// Settings are what the leg's transport should detect (read when the leg
// was made).
func (v *Voice) Settings() VoiceSettings { return v.settings }

// Speech records the visitor's voice activity in the conversation log:
// started and stopped as user_speech_started / user_speech_stopped, a
// barge-in as interrupt (with heard_ms) plus the reply being spoken marked
// interrupted. It does not block the caller (the transport's media
// goroutine). Speech goes through the leg's FIFO with its transport
// states, so it is logged in call order with them, and nothing reported
// after the transport closed is logged.
func (v *Voice) Speech(e SpeechEvent) {
	switch e.Kind {
	case SpeechStarted, SpeechStopped, SpeechBargeIn:
	default:
		v.b.log.Debug("unknown speech event kind dropped", "leg_id", v.id, "kind", e.Kind)
		return
	}
	v.b.obs().Speech(e.Kind, e.Source)
	v.queueState(queuedState{speech: &e})
}

// recordSpeech logs one speech event (the leg's drainer only).
func (v *Voice) recordSpeech(e SpeechEvent) {
	b := v.b
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	ev := agentbridge.Event{ConversationID: v.session.ConversationID, SessionID: v.session.ID, LegID: v.id,
		Source: e.Source, LevelDBov: e.LevelDBov}
	if !e.At.IsZero() {
		at := e.At.UTC()
		ev.At = &at
	}
	switch e.Kind {
	case SpeechStarted:
		ev.Type = agentbridge.EventUserSpeechStarted
	case SpeechStopped:
		ev.Type = agentbridge.EventUserSpeechStopped
	case SpeechBargeIn:
		ev.HeardText = e.HeardText
		v.bargeIn(ctx, ev, e.HeardMS)
		return
	}
	if _, err := b.appendInbound(ctx, ev, "", v.session.Agent); err != nil {
		b.log.Warn("speech event not recorded", "leg_id", v.id, "type", ev.Type, "err", err)
	}
}

// bargeIn logs an interrupt naming the reply the agent was speaking (the
// conversation's latest reply) and, if the agent had not finished writing
// it, closes it the way interruptReplies closes a lost worker's: a
// text_done marked interrupted (reason barge_in) with the text so far,
// under the msg id the agent's own text_done would have, so the agent's is
// a duplicate. Readers (Transcript, the WebSocket legs, the SDK's replay)
// count a reply named by an interrupt as interrupted whatever the agent
// appends to it later.
func (v *Voice) bargeIn(ctx context.Context, ev agentbridge.Event, heardMS int64) {
	b := v.b
	cid := v.session.ConversationID
	var r spokenReply
	if events, err := b.ReadLog(ctx, cid, 0); err != nil {
		b.log.Warn("barge-in: cannot find the reply being spoken", "conversation_id", cid, "err", err)
	} else {
		r = speakingReply(events, v.created)
	}
	ev.Type, ev.Reason, ev.HeardMS = agentbridge.EventInterrupt, agentbridge.ReasonBargeIn, &heardMS
	ev.MessageID, ev.ReplyTo = r.id, r.replyTo
	if _, err := b.appendInbound(ctx, ev, "", v.session.Agent); err != nil {
		b.log.Warn("interrupt not recorded", "leg_id", v.id, "err", err)
		return
	}
	b.log.Debug("barge-in", "conversation_id", cid, "leg_id", v.id, "message_id", r.id, "heard_ms", heardMS,
		"heard_text", ev.HeardText != nil)
	if r.id == "" || r.done {
		return
	}
	done := agentbridge.Event{Type: agentbridge.EventTextDone, ConversationID: cid, MessageID: r.id,
		ReplyTo: r.replyTo, Text: r.text, Interrupted: true, Reason: agentbridge.ReasonBargeIn,
		WorkerID: r.worker, Epoch: r.epoch}
	if _, err := b.publish(ctx, b.subj.OutEvent(cid), &done, cid+"/"+r.id+"/done"); err != nil {
		b.log.Warn("cannot mark the interrupted reply", "conversation_id", cid, "message_id", r.id, "err", err)
	}
}

// spokenReply is the latest agent reply of a log.
type spokenReply struct {
	id, replyTo, worker string
	epoch               uint64
	text                string
	done                bool
	last                time.Time // when its latest event was stored
}

// speakingReply finds the reply the agent is speaking: the latest one it
// wrote (text_delta or text_done of a worker not fenced off), with its
// text so far and whether it is complete. None is named (an agent that
// speaks without writing text) when that reply is older than the voice
// leg (since: a chat answer before the call) or a visitor turn came after
// it (the agent answered that turn in audio only).
func speakingReply(events []agentbridge.Event, since time.Time) spokenReply {
	var fence agentbridge.Fence
	var r spokenReply
	var text strings.Builder
	for i := range events {
		ev := &events[i]
		if !fence.Admit(ev) {
			continue
		}
		switch ev.Type {
		case agentbridge.EventUserMessage:
			r = spokenReply{}
		case agentbridge.EventTranscript:
			if ev.Final {
				r = spokenReply{}
			}
		case agentbridge.EventTextDelta, agentbridge.EventTextDone:
			if ev.MessageID == "" {
				continue
			}
			if ev.MessageID != r.id {
				r = spokenReply{id: ev.MessageID, replyTo: ev.ReplyTo, worker: ev.WorkerID, epoch: ev.Epoch}
				text.Reset()
			}
			r.last = ev.TS
			if ev.Type == agentbridge.EventTextDone {
				r.done = true
			} else if !r.done {
				text.WriteString(ev.Text)
			}
		}
	}
	if r.id == "" || !since.IsZero() && r.last.Before(since) {
		return spokenReply{}
	}
	r.text = text.String()
	return r
}

// VoiceTurn is what the visitor said in one utterance on a voice leg, as
// the speech pipeline heard it.
type VoiceTurn struct {
	// Text is the words heard; empty when Unheard says why there are none.
	Text string
	// Engine names the recognizer ("pocketsphinx", "openai:whisper-1").
	Engine string
	// Start is the onset of the speech.
	Start time.Time
	// Unheard is a code when recognition failed (UnheardDown, …): the turn
	// is logged all the same, without text, so that nothing the visitor
	// said goes missing and the widget can tell them.
	Unheard string
}

// Codes of a voice turn the speech pipeline could not transcribe.
const (
	UnheardUnavailable = "speech_unavailable" // no recognizer
	UnheardDown        = "speech_down"        // the provider could not be reached
	UnheardTimeout     = "speech_timeout"     // recognition took too long
	UnheardBusy        = "speech_busy"        // recognition fell behind the visitor
	UnheardFailed      = "speech_failed"      // the engine failed or answered garbage
)

// Heard logs a voice turn as a user_message via "voice" and makes sure a
// worker holds the conversation to answer it; it returns the message id.
// The same utterance (leg and onset) is stored once however often it is
// retried.
func (v *Voice) Heard(ctx context.Context, t VoiceTurn) (string, error) {
	b := v.b
	text := strings.TrimSpace(t.Text)
	if n := b.cfg.Chat.MaxMessageChars; utf8.RuneCountInString(text) > n {
		text = string([]rune(text)[:n]) // an hour-long utterance
	}
	if text == "" && t.Unheard == "" {
		return "", fmt.Errorf("%w: a voice turn needs text or a reason it has none", ErrValidation)
	}
	if text != "" {
		t.Unheard = ""
	}
	ev := agentbridge.Event{Type: agentbridge.EventUserMessage, ConversationID: v.session.ConversationID,
		SessionID: v.session.ID, MessageID: newID("msg_"), Text: text, Via: agentbridge.ModeVoice,
		Engine: t.Engine, Reason: t.Unheard, LegID: v.id}
	if !t.Start.IsZero() {
		at := t.Start.UTC()
		ev.At = &at
	}
	dedup := fmt.Sprintf("%s/voice/%s/%d", v.session.ConversationID, v.id, t.Start.UnixNano())
	p, err := b.postUserMessage(ctx, v.session, ev, dedup)
	if err != nil {
		return "", err
	}
	return p.MessageID, nil
}

// OnAgentText makes the leg hand every agent reply text event (text_delta,
// text_done) stored while it lives to f, in log order, from the leg's
// event goroutine: the speech pipeline speaks them. Set it before
// StartVoice; f must not block.
func (v *Voice) OnAgentText(f func(agentbridge.Event)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.onText = f
}

// Speaking logs that the speech pipeline is about to speak a sentence of
// a reply (agent_speaking): the visitor's widget shows it as the call's
// caption from at, for dur. It is best effort: a caption not stored is
// only logged.
func (v *Voice) Speaking(ctx context.Context, messageID, replyTo, text string, at time.Time, dur time.Duration) {
	at = at.UTC()
	ev := agentbridge.Event{Type: agentbridge.EventAgentSpeaking, ConversationID: v.session.ConversationID,
		SessionID: v.session.ID, LegID: v.id, MessageID: messageID, ReplyTo: replyTo, Text: text, At: &at,
		DurationMS: dur.Milliseconds()}
	if _, err := v.b.appendInbound(ctx, ev, "", v.session.Agent); err != nil {
		v.b.log.Debug("caption not recorded", "leg_id", v.id, "message_id", messageID, "err", err)
	}
}
