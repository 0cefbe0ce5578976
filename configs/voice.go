package configs

import (
	"cmp"
	"time"
)

// WidgetVoice configures how a widget's voice legs hear the visitor: voice
// activity detection (user_speech_started / user_speech_stopped) and
// barge-in (the visitor speaking over the agent cuts its audio).
type WidgetVoice struct {
	// VAD tunes voice activity detection.
	VAD WidgetVAD `yaml:"vad" json:"vad"`
	// BargeIn is auto (the visitor's speech over the agent's audio cuts
	// it; the default) or off. An agent's agents.barge_in off wins.
	BargeIn string `yaml:"barge_in" json:"barge_in"`
	// BargeInMinMS is how long the visitor must speak over the agent's
	// audio for it to count as a barge-in (20..5000 ms, default 300), so
	// that a cough does not cut the agent off.
	BargeInMinMS int `yaml:"barge_in_min_ms" json:"barge_in_min_ms"`
}

// WidgetVAD tunes voice activity detection. Zero fields take the
// defaults.
type WidgetVAD struct {
	// ThresholdDBov is the level above which a 20 ms frame counts as
	// voiced, in dBov (-127..-1, default -45).
	ThresholdDBov float64 `yaml:"threshold_dbov" json:"threshold_dbov"`
	// MinSpeechMS is how long the audio must stay voiced to start speech
	// (20..2000 ms, default 60).
	MinSpeechMS int `yaml:"min_speech_ms" json:"min_speech_ms"`
	// HangoverMS is how long the audio must stay quiet to end speech
	// (60..5000 ms, default 400).
	HangoverMS int `yaml:"hangover_ms" json:"hangover_ms"`
}

// Barge-in settings.
const (
	BargeInAuto = "auto"
	BargeInOff  = "off"
)

// Voice activity defaults and bounds.
const (
	DefaultVADThresholdDBov = -45.0
	DefaultVADMinSpeechMS   = 60
	DefaultVADHangoverMS    = 400
	DefaultBargeInMinMS     = 300

	minVADThresholdDBov = -127.0
	maxVADThresholdDBov = -1.0
)

// WithDefaults returns v with its unset (zero) fields at their defaults.
// Widgets stored before these settings existed read as the defaults.
func (v WidgetVoice) WithDefaults() WidgetVoice {
	v.VAD.ThresholdDBov = cmp.Or(v.VAD.ThresholdDBov, DefaultVADThresholdDBov)
	v.VAD.MinSpeechMS = cmp.Or(v.VAD.MinSpeechMS, DefaultVADMinSpeechMS)
	v.VAD.HangoverMS = cmp.Or(v.VAD.HangoverMS, DefaultVADHangoverMS)
	v.BargeIn = cmp.Or(v.BargeIn, BargeInAuto)
	v.BargeInMinMS = cmp.Or(v.BargeInMinMS, DefaultBargeInMinMS)
	return v
}

// MinSpeech is how long voiced audio starts speech.
func (v WidgetVoice) MinSpeech() time.Duration {
	return time.Duration(v.VAD.MinSpeechMS) * time.Millisecond
}

// Hangover is how long quiet ends speech.
func (v WidgetVoice) Hangover() time.Duration {
	return time.Duration(v.VAD.HangoverMS) * time.Millisecond
}

// BargeInMin is how long speech over the agent's audio must last to cut it.
func (v WidgetVoice) BargeInMin() time.Duration {
	return time.Duration(v.BargeInMinMS) * time.Millisecond
}

// validate adds the problems of normalized voice settings, under "voice.".
func (v WidgetVoice) validate(ps *problems) {
	if t := v.VAD.ThresholdDBov; t < minVADThresholdDBov || t > maxVADThresholdDBov {
		ps.add("voice.vad.threshold_dbov", "must be a level between %g and %g dBov (default %g; speech is usually above -50), got %g",
			minVADThresholdDBov, maxVADThresholdDBov, DefaultVADThresholdDBov, t)
	}
	ps.intRange("voice.vad.min_speech_ms", v.VAD.MinSpeechMS, 20, 2000)
	ps.intRange("voice.vad.hangover_ms", v.VAD.HangoverMS, 60, 5000)
	ps.oneOf("voice.barge_in", v.BargeIn, BargeInAuto, BargeInOff)
	ps.intRange("voice.barge_in_min_ms", v.BargeInMinMS, 20, 5000)
}

// validateBargeIn checks agents.barge_in.
func (a AgentsConfig) validateBargeIn(ps *problems) {
	for agent, v := range a.BargeIn {
		ps.token("agents.barge_in key", agent)
		if v != BargeInAuto && v != BargeInOff {
			ps.add("agents.barge_in."+agent, "must be %q or %q, got %q", BargeInAuto, BargeInOff, v)
		}
	}
}

// AgentBargeIn reports whether agent allows barge-in (agents.barge_in;
// default auto).
func (a AgentsConfig) AgentBargeIn(agent string) bool {
	return a.BargeIn[agent] != BargeInOff
}
