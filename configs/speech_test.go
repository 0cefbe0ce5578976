package configs

import (
	"strings"
	"testing"
	"time"
)

// TestAgentSpeech: the demo echo agent hears and speaks offline by
// default; every other agent has no pipeline; bad engine names, voices,
// timeouts and URLs are refused, each naming its field.
func TestAgentSpeech(t *testing.T) {
	t.Parallel()
	c := Default()
	if sp := c.Agents.SpeechFor(DefaultAgent); !sp.Hears() || !sp.Speaks() || sp.STT != SpeechPocketsphinx || sp.TTS != SpeechFlite || sp.Audio {
		t.Fatalf("echo's default speech = %+v", sp)
	}
	if sp := c.Agents.SpeechFor("other"); sp.Hears() || sp.Speaks() {
		t.Fatalf("an agent without speech = %+v", sp)
	}
	if !c.Speech.Enabled || c.Speech.Timeout != 15*time.Second {
		t.Fatalf("speech = %+v", c.Speech)
	}
	if (AgentSpeech{STT: SpeechOff, TTS: SpeechOff}).Hears() {
		t.Fatal("off hears")
	}
	tests := []problemCase[Config]{
		{"unknown stt", func(c *Config) { c.Agents.Speech["echo"] = AgentSpeech{STT: "whisper.cpp"} }, "agents.speech.echo.stt"},
		{"tts as stt", func(c *Config) { c.Agents.Speech["echo"] = AgentSpeech{STT: SpeechFlite} }, "agents.speech.echo.stt"},
		{"unknown tts", func(c *Config) { c.Agents.Speech["echo"] = AgentSpeech{TTS: "say"} }, "agents.speech.echo.tts"},
		{"bad voice", func(c *Config) { c.Agents.Speech["echo"] = AgentSpeech{TTS: SpeechFlite, Voice: "../slt"} }, "agents.speech.echo.voice"},
		{"bad agent", func(c *Config) { c.Agents.Speech["a b"] = AgentSpeech{} }, "agents.speech key"},
		{"timeout", func(c *Config) { c.Speech.Timeout = 0 }, "speech.timeout"},
		{"base url", func(c *Config) { c.Speech.OpenAI.BaseURL = "ftp://x" }, "speech.openai.base_url"},
		{"key file", func(c *Config) { c.Speech.OpenAI.APIKeyFile = "/nonexistent/key" }, "speech.openai.api_key_file"},
	}
	runProblemCases(t, tests, func(t *testing.T, edit func(*Config), field string) {
		c := Default()
		c.Agents.Speech = defaultAgentSpeech()
		edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("err = %v, want one naming %s", err, field)
		}
	})
	ok := Default()
	ok.Agents.Speech["assistant"] = AgentSpeech{STT: SpeechOpenAI, TTS: SpeechEspeakNG, Voice: "en-us", Audio: true}
	ok.Speech.OpenAI.BaseURL = "http://127.0.0.1:8000/v1"
	if err := ok.Validate(); err != nil {
		t.Fatalf("a valid speech config: %v", err)
	}
}
