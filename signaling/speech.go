package signaling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/media"
	"github.com/parley-rtc/parley/media/speech"
)

// Speech is an agent's speech pipeline (agents.speech), its engines built
// by the caller: Parley hears the visitor and speaks the agent's replies,
// so an agent that works in text holds a voice call.
type Speech struct {
	// STT turns each utterance into a user_message via "voice"; nil: the
	// agent hears the audio only.
	STT speech.Recognizer
	// TTS speaks the agent's replies; nil: the agent speaks for itself.
	TTS speech.Synthesizer
	// Audio also sends the visitor's audio to an agent with STT.
	Audio bool
}

// SetSpeech installs the agents' speech pipelines (call before Start).
func (s *Server) SetSpeech(agents map[string]Speech) { s.speech = agents }

// legSpeech is the speech pipeline of one voice leg, WebRTC or LiveKit:
// the leg's utterances go to the pipeline, its text to the log as voice
// turns; the agent's reply text (from the leg's event goroutine) goes to
// the pipeline, its speech to the leg's playout, encoded to Opus.
type legSpeech struct {
	p   *speech.Pipeline
	v   *broker.Voice
	log *slog.Logger
	m   *metrics
	stt bool // OnUtterance is wired
	tts bool // replies are spoken
	// enc is used by the pipeline's speaker goroutine only.
	enc *media.SpeechEncoder

	mu  sync.Mutex
	leg speechLeg // set by attach once the transport exists
}

// speechLeg is what the pipeline needs of a voice transport (a WebRTC leg
// or a LiveKit bridge): queue a sentence's Opus packets, and say how many
// it queued.
type speechLeg interface {
	PlaySpeech(pkts [][]byte) (queued int)
}

// newLegSpeech sets up the speech pipeline of v's agent, or returns nil
// when it has none. It starts the pipeline and a goroutine (counted in
// legWG) that stops it when the leg ends or the server shuts down.
func (s *Server) newLegSpeech(v *broker.Voice, log *slog.Logger) *legSpeech {
	sp, ok := s.speech[v.Session().Agent]
	if !ok || (sp.STT == nil && sp.TTS == nil) {
		return nil
	}
	ls := &legSpeech{v: v, log: log, m: s.metrics, stt: sp.STT != nil}
	if sp.TTS != nil {
		enc, err := media.NewSpeechEncoder()
		if err != nil {
			log.Warn("speech: no encoder: replies are not spoken", "err", err)
			sp.TTS = nil
		}
		ls.enc = enc
	}
	ls.tts = sp.TTS != nil
	if !s.addLeg() {
		return nil // shutting down
	}
	ls.p = speech.NewPipeline(speech.PipelineOptions{STT: sp.STT, TTS: sp.TTS, Heard: ls.heard, Encode: ls.encode, Play: ls.play,
		OnTiming: s.speechTiming, OnSpeaking: ls.speaking, Timeout: s.cfg.Speech.Timeout, Log: log})
	if sp.TTS != nil {
		v.OnAgentText(ls.onText)
	}
	go func() { // owned by the server: legWG
		defer s.legWG.Done()
		select {
		case <-v.Done():
		case <-s.legs.Done():
		}
		ls.p.Close()
	}()
	return ls
}

// hearsFor reports whether the agent gets text instead of audio.
func (s *Server) hearsFor(agent string) bool {
	sp, ok := s.speech[agent]
	return ok && sp.STT != nil && !sp.Audio
}

// speaks reports whether the broker speaks for the leg's agent.
func (ls *legSpeech) speaks() bool { return ls != nil && ls.tts }

// utterances is the leg's OnUtterance: nil unless the pipeline hears.
func (ls *legSpeech) utterances() func(media.Utterance) {
	if ls == nil || !ls.stt {
		return nil
	}
	return ls.onUtterance
}

// stop ends the pipeline of a leg that never started (its transport
// failed): the pipeline stops with the leg.
func (ls *legSpeech) stop(v *broker.Voice) {
	if ls != nil {
		v.End(context.Background(), "setup_failed")
	}
}

// attach gives the pipeline the leg's transport to speak on.
func (ls *legSpeech) attach(m speechLeg) {
	if ls == nil {
		return
	}
	ls.mu.Lock()
	ls.leg = m
	ls.mu.Unlock()
}

// heard logs a turn of the visitor.
func (ls *legSpeech) heard(ctx context.Context, t speech.Turn) (string, error) {
	turn := broker.VoiceTurn{Text: t.Text, Engine: t.Engine, Start: t.Start}
	result := "heard"
	if t.Err != nil {
		turn.Text, turn.Unheard = "", unheardCode(t.Err)
		result = turn.Unheard
	}
	ls.m.speechTurns.WithLabelValues(result).Inc()
	return ls.v.Heard(ctx, turn)
}

// unheardCode is the broker's code for why a recognition failed.
func unheardCode(err error) string {
	if errors.Is(err, speech.ErrBusy) {
		return broker.UnheardBusy
	}
	switch speech.CodeOf(err) {
	case speech.CodeUnavailable:
		return broker.UnheardUnavailable
	case speech.CodeDown:
		return broker.UnheardDown
	case speech.CodeTimeout:
		return broker.UnheardTimeout
	}
	return broker.UnheardFailed
}

// encode turns a synthesized sentence into 20 ms Opus packets (on the
// pipeline's speaker goroutine, which owns the encoder).
func (ls *legSpeech) encode(a speech.Audio) ([][]byte, error) {
	if !opusRate(a.Rate) {
		var err error
		if a, err = a.Resample(48000); err != nil {
			return nil, err
		}
	}
	pkts, err := ls.enc.Encode(a.Samples, a.Rate)
	if err != nil {
		return nil, fmt.Errorf("signaling: encode speech: %w", err)
	}
	tail, err := ls.enc.Flush()
	if err != nil {
		return nil, fmt.Errorf("signaling: encode speech: %w", err)
	}
	return append(pkts, tail...), nil
}

// play queues a sentence on the leg; none before the leg is attached.
func (ls *legSpeech) play(pkts [][]byte) int {
	ls.mu.Lock()
	leg := ls.leg
	ls.mu.Unlock()
	if leg == nil {
		return 0
	}
	return leg.PlaySpeech(pkts)
}

// opusRate reports whether Opus encodes rate directly.
func opusRate(rate int) bool {
	switch rate {
	case 8000, 12000, 16000, 24000, 48000:
		return true
	}
	return false
}

// onText hands the agent's reply text to the pipeline. A reply the
// broker closed for a barge-in is not spoken further.
func (ls *legSpeech) onText(ev agentbridge.Event) {
	switch ev.Type {
	case agentbridge.EventTextDelta:
		ls.p.ReplyDelta(ev.MessageID, ev.ReplyTo, ev.Text)
	case agentbridge.EventTextDone:
		if !ev.Interrupted {
			ls.p.ReplyDone(ev.MessageID, ev.ReplyTo, ev.Text)
		}
	}
}

// speaking records a sentence about to be spoken: the call's caption.
func (ls *legSpeech) speaking(sp speech.Spoken) {
	ctx, cancel := context.WithTimeout(context.Background(), captionTimeout)
	defer cancel()
	ls.v.Speaking(ctx, sp.MessageID, sp.ReplyTo, sp.Text, sp.At, sp.Duration)
}

// captionTimeout bounds storing a caption: one late is no use.
const captionTimeout = 2 * time.Second

// onUtterance gives the pipeline an utterance to transcribe.
func (ls *legSpeech) onUtterance(u media.Utterance) {
	ls.p.Hear(speech.Audio{Rate: u.Rate, Samples: u.PCM}, u.Start, u.End)
}

// onSpeech is the leg's OnSpeech: each speech event goes to v, converted
// for the broker. A barge-in cuts the pipeline's speech and carries what
// of it the visitor heard. When the pipeline speaks for the agent and had
// nothing left to play (the visitor spoke as its reply's last frame went
// out: the leg counts a reply as playing for 40 ms after it), nothing was
// interrupted, and the barge-in is not recorded: an interrupt would mark a
// reply the visitor heard whole as cut.
func (ls *legSpeech) onSpeech(v *broker.Voice) func(media.SpeechEvent) {
	return func(e media.SpeechEvent) {
		be := speechOf(e)
		if ls != nil && e.Kind == media.SpeechBargeIn {
			h, ok := ls.p.Cut(e.Dropped)
			if !ok && ls.speaks() {
				ls.log.Debug("speech: barge-in after the spoken reply ended; nothing cut", "dropped_frames", e.Dropped)
				return
			}
			if ok {
				ls.log.Debug("speech: barge-in cut the spoken reply", "message_id", h.MessageID,
					"dropped_frames", e.Dropped, "heard_ms", h.MS, "leg_heard_ms", e.HeardMS)
				be.HeardMS, be.HeardText = h.MS, &h.Text
			}
		}
		v.Speech(be)
	}
}

// speechTiming records where a voice turn's time went.
func (s *Server) speechTiming(t speech.TurnTiming) {
	obs := func(stage string, d float64) { s.metrics.speechStages.WithLabelValues(stage).Observe(d) }
	obs("turn", t.Heard.Sub(t.SpeechEnd).Seconds())
	obs("stt", t.Recognized.Sub(t.Heard).Seconds())
	obs("store", t.Logged.Sub(t.Recognized).Seconds())
	obs("agent", t.FirstText.Sub(t.Logged).Seconds())
	obs("tts", t.FirstAudio.Sub(t.FirstText).Seconds())
	obs("total", t.FirstAudio.Sub(t.SpeechEnd).Seconds())
	ms := func(a, b time.Time) int64 { return b.Sub(a).Milliseconds() }
	s.log.Debug("speech: voice turn timing", "message_id", t.MessageID,
		"turn_ms", ms(t.SpeechEnd, t.Heard), "stt_ms", ms(t.Heard, t.Recognized), "store_ms", ms(t.Recognized, t.Logged),
		"agent_ms", ms(t.Logged, t.FirstText), "tts_ms", ms(t.FirstText, t.FirstAudio), "total_ms", ms(t.SpeechEnd, t.FirstAudio))
}
