package configs

import (
	"strings"
	"testing"
	"time"
)

func TestWidgetVoiceDefaults(t *testing.T) {
	t.Parallel()
	w := validWidget()
	v := w.Voice
	if v.VAD.ThresholdDBov != -45 || v.VAD.MinSpeechMS != 60 || v.VAD.HangoverMS != 400 ||
		v.BargeIn != BargeInAuto || v.BargeInMinMS != 300 {
		t.Fatalf("voice defaults = %+v", v)
	}
	if v.MinSpeech() != 60*time.Millisecond || v.Hangover() != 400*time.Millisecond || v.BargeInMin() != 300*time.Millisecond {
		t.Fatalf("durations = %s %s %s", v.MinSpeech(), v.Hangover(), v.BargeInMin())
	}
	// Set fields are kept; a widget stored before voice settings existed
	// reads as the defaults.
	set := WidgetVoice{VAD: WidgetVAD{ThresholdDBov: -60, HangoverMS: 800}, BargeIn: BargeInOff}.WithDefaults()
	if set.VAD.ThresholdDBov != -60 || set.VAD.HangoverMS != 800 || set.VAD.MinSpeechMS != 60 ||
		set.BargeIn != BargeInOff || set.BargeInMinMS != 300 {
		t.Fatalf("WithDefaults = %+v", set)
	}
	if (WidgetVoice{}).WithDefaults() != v {
		t.Fatalf("zero voice settings do not read as the defaults")
	}
}

func TestWidgetVoiceValidate(t *testing.T) {
	t.Parallel()
	tests := []problemCase[WidgetVoice]{
		{"threshold positive", func(v *WidgetVoice) { v.VAD.ThresholdDBov = 3 }, "voice.vad.threshold_dbov"},
		{"threshold too low", func(v *WidgetVoice) { v.VAD.ThresholdDBov = -130 }, "voice.vad.threshold_dbov"},
		{"min speech negative", func(v *WidgetVoice) { v.VAD.MinSpeechMS = -1 }, "voice.vad.min_speech_ms"},
		{"min speech long", func(v *WidgetVoice) { v.VAD.MinSpeechMS = 2001 }, "voice.vad.min_speech_ms"},
		{"hangover short", func(v *WidgetVoice) { v.VAD.HangoverMS = 10 }, "voice.vad.hangover_ms"},
		{"barge_in", func(v *WidgetVoice) { v.BargeIn = "always" }, "voice.barge_in"},
		{"barge_in_min", func(v *WidgetVoice) { v.BargeInMinMS = 6000 }, "voice.barge_in_min_ms"},
	}
	runProblemCases(t, tests, func(t *testing.T, edit func(*WidgetVoice), field string) {
		wantOneWidgetProblem(t, func(w *WidgetConfig) { edit(&w.Voice) }, field)
	})
	w := validWidget()
	w.Voice.VAD.ThresholdDBov = 3
	if ps := w.Validate(); len(ps) != 1 || !strings.Contains(ps[0].Message, "-127") || !strings.Contains(ps[0].Message, "got 3") {
		t.Fatalf("threshold problem %+v does not say the range and the value", ps)
	}
}

func TestAgentBargeIn(t *testing.T) {
	t.Parallel()
	c := Default()
	if c.Agents.AgentBargeIn(DefaultAgent) {
		t.Fatal("the demo echo agent has barge-in on by default: it would cut the visitor's own echo")
	}
	c.Agents.BargeIn = map[string]string{"quiet": BargeInOff, "loud": BargeInAuto}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Agents.AgentBargeIn("quiet") || !c.Agents.AgentBargeIn("loud") || !c.Agents.AgentBargeIn("unlisted") {
		t.Fatalf("AgentBargeIn wrong for %v", c.Agents.BargeIn)
	}
	c.Agents.BargeIn = map[string]string{"a": "sometimes"}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "agents.barge_in.a") {
		t.Fatalf("bad agents.barge_in: %v", err)
	}
	c.Agents.BargeIn = map[string]string{"a.b": BargeInOff}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "agents.barge_in key") {
		t.Fatalf("bad agent name: %v", err)
	}
}

func TestWidgetVoiceYAML(t *testing.T) {
	t.Parallel()
	cfg, err := Load(writeConfig(t, `
agents: {barge_in: {support: "off"}}
widgets:
  - public_key: pk_voice
    allow_dev_origins: true
    voice:
      vad: {threshold_dbov: -50, min_speech_ms: 80}
      barge_in_min_ms: 500
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Widgets[0].Voice
	if v.VAD.ThresholdDBov != -50 || v.VAD.MinSpeechMS != 80 || v.VAD.HangoverMS != 400 || v.BargeIn != BargeInAuto || v.BargeInMinMS != 500 {
		t.Fatalf("voice = %+v", v)
	}
	if cfg.Agents.AgentBargeIn("support") {
		t.Fatal("agents.barge_in support: off not loaded")
	}
	if _, err := Load(writeConfig(t, "widgets:\n  - public_key: pk_v\n    allow_dev_origins: true\n    voice: {vad: {threshold: -50}}\n"), nil); err == nil {
		t.Fatal("an unknown voice key was accepted")
	}
}
