package configs

import (
	"log/slog"
	"time"
)

// AgentSpeech is the speech pipeline of one agent (agents.speech.<agent>):
// Parley hears the visitor and speaks the agent's replies for it, so an
// agent that works in text holds a voice conversation. Each voice
// utterance becomes a user_message with via "voice"; each reply written
// while a voice leg is up is spoken, sentence by sentence as its text
// streams.
type AgentSpeech struct {
	// STT is the speech-to-text engine: "pocketsphinx" (offline), "openai"
	// (an OpenAI-compatible /v1/audio/transcriptions) or "off".
	STT string `yaml:"stt" json:"stt"`
	// TTS is the text-to-speech engine: "flite" (offline), "espeak-ng"
	// (offline), "openai" (/v1/audio/speech) or "off".
	TTS string `yaml:"tts" json:"tts"`
	// Voice is the engine's voice (flite: slt, rms, awb, kal16; espeak-ng:
	// en-us; openai: alloy …); empty takes the engine's default.
	Voice string `yaml:"voice" json:"voice,omitempty"`
	// Audio also sends the visitor's audio to the agent. By default an
	// agent with speech-to-text gets the text only.
	Audio bool `yaml:"audio" json:"audio,omitempty"`
}

// Speech engine names (AgentSpeech.STT and TTS).
const (
	SpeechOff          = "off"
	SpeechPocketsphinx = "pocketsphinx"
	SpeechFlite        = "flite"
	SpeechEspeakNG     = "espeak-ng"
	SpeechOpenAI       = "openai"
)

// Hears reports whether the pipeline turns speech into text.
func (s AgentSpeech) Hears() bool { return s.STT != "" && s.STT != SpeechOff }

// Speaks reports whether the pipeline speaks the agent's replies.
func (s AgentSpeech) Speaks() bool { return s.TTS != "" && s.TTS != SpeechOff }

// SpeechConfig configures the speech engines agents.speech names.
type SpeechConfig struct {
	// Enabled runs the agents' speech pipelines (agents.speech). False
	// (--speech=false) turns them all off: every agent hears the
	// visitor's audio and speaks for itself, as the echo agent's
	// loopback does.
	Enabled bool `yaml:"enabled"`
	// Timeout bounds one recognition and one sentence's synthesis.
	Timeout time.Duration `yaml:"timeout"`
	// OpenAI is an OpenAI-compatible audio API, hosted or self-hosted
	// (PARLEY_SPEECH_OPENAI_* in the environment, as for every field).
	OpenAI OpenAISpeech `yaml:"openai"`
}

// OpenAISpeech locates an OpenAI-compatible audio API. The key is never in
// the configuration: it comes from a file or the environment, and is
// never logged.
type OpenAISpeech struct {
	// BaseURL is the server, e.g. https://api.openai.com or
	// http://127.0.0.1:8000 (a trailing /v1 is accepted).
	BaseURL string `yaml:"base_url"`
	// APIKeyFile holds the key (else PARLEY_SPEECH_API_KEY or
	// OPENAI_API_KEY).
	APIKeyFile string `yaml:"api_key_file"`
	// STTModel, TTSModel and Voice default to whisper-1, tts-1, alloy.
	STTModel string `yaml:"stt_model"`
	TTSModel string `yaml:"tts_model"`
	Voice    string `yaml:"voice"`
}

// DefaultSpeechTimeout bounds one recognition or one sentence's synthesis.
const DefaultSpeechTimeout = 15 * time.Second

// defaultAgentSpeech is the demo echo agent's: offline, so the demo's
// voice call hears and answers with no account anywhere.
func defaultAgentSpeech() map[string]AgentSpeech {
	return map[string]AgentSpeech{DefaultAgent: {STT: SpeechPocketsphinx, TTS: SpeechFlite}}
}

// SpeechFor returns agent's speech pipeline (both halves off when it has
// none).
func (a AgentsConfig) SpeechFor(agent string) AgentSpeech {
	return a.Speech[agent]
}

// validateSpeech checks agents.speech and speech.
func (c *Config) validateSpeech(ps *problems) {
	for agent, s := range c.Agents.Speech {
		ps.token("agents.speech key", agent)
		field := "agents.speech." + agent
		ps.oneOf(field+".stt", orOff(s.STT), SpeechOff, SpeechPocketsphinx, SpeechOpenAI)
		ps.oneOf(field+".tts", orOff(s.TTS), SpeechOff, SpeechFlite, SpeechEspeakNG, SpeechOpenAI)
		if s.Voice != "" {
			ps.token(field+".voice", s.Voice)
		}
	}
	if c.Speech.Timeout < time.Second || c.Speech.Timeout > 5*time.Minute {
		ps.add("speech.timeout", "must be between 1s and 5m, got %s", c.Speech.Timeout)
	}
	if u := c.Speech.OpenAI.BaseURL; u != "" {
		if msg := checkPublicURL(u); msg != "" {
			ps.add("speech.openai.base_url", "%s", msg)
		}
	}
	if f := c.Speech.OpenAI.APIKeyFile; f != "" {
		ps.readableFile("speech.openai.api_key_file", f)
	}
}

func orOff(engine string) string {
	if engine == "" {
		return SpeechOff
	}
	return engine
}

// logValue is the speech section as logged (no key: there is none here).
func (s SpeechConfig) logValue() slog.Value {
	return slog.GroupValue(slog.Bool("enabled", s.Enabled), logDuration("timeout", s.Timeout),
		slog.String("openai_base_url", s.OpenAI.BaseURL),
		slog.Bool("openai_api_key_file", s.OpenAI.APIKeyFile != ""),
		slog.String("openai_stt_model", s.OpenAI.STTModel),
		slog.String("openai_tts_model", s.OpenAI.TTSModel),
		slog.String("openai_voice", s.OpenAI.Voice))
}
