package main

import (
	"cmp"
	"log/slog"
	"os"

	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media/speech"
	"github.com/parley-rtc/parley/signaling"
)

// speechEngines builds the engines of every agent's speech pipeline
// (agents.speech). An engine that cannot run here (a missing tool, no
// base URL) is left out with a warning: Parley still starts, and that
// agent's voice calls run without it (its visitor audio goes to the agent
// as before). The returned function closes the HTTP engines.
func speechEngines(cfg configs.Config, log *slog.Logger) (map[string]signaling.Speech, func()) {
	out := map[string]signaling.Speech{}
	var open []*speech.OpenAI
	closeAll := func() {
		for _, o := range open {
			o.Close()
		}
	}
	if !cfg.Speech.Enabled {
		log.Info("speech pipelines off (speech.enabled false): agents hear and speak audio themselves")
		return out, closeAll
	}
	key := cmp.Or(os.Getenv(speech.EnvSpeechKey), os.Getenv("OPENAI_API_KEY"))
	for agent, as := range cfg.Agents.Speech {
		oa := cfg.Speech.OpenAI
		engines := speech.Engines{
			Flite:    speech.LocalTTSConfig{Voice: as.Voice},
			EspeakNG: speech.LocalTTSConfig{Voice: as.Voice},
			OpenAI: speech.OpenAIConfig{BaseURL: oa.BaseURL, Key: speech.Secret(key), KeyFile: oa.APIKeyFile,
				STTModel: oa.STTModel, TTSModel: oa.TTSModel, Voice: cmp.Or(as.Voice, oa.Voice),
				Timeout: cfg.Speech.Timeout, Logger: log.With("component", "speech")},
		}
		var sp signaling.Speech
		if as.Hears() {
			sp.STT = buildEngine(engines.Recognizer, as.STT, &open, log,
				"voice runs without speech-to-text: the agent gets the visitor's audio, not text (make speech-tools installs the offline engines)",
				"agent", agent, "stt", as.STT)
		}
		if as.Speaks() {
			sp.TTS = buildEngine(engines.Synthesizer, as.TTS, &open, log,
				"voice runs without text-to-speech: the agent's replies are not spoken (make speech-tools installs the offline engines)",
				"agent", agent, "tts", as.TTS)
		}
		if sp.STT == nil && sp.TTS == nil {
			continue
		}
		sp.Audio = as.Audio
		out[agent] = sp
		log.Info("speech pipeline", "agent", agent, "stt", engineName(sp.STT != nil, as.STT),
			"tts", engineName(sp.TTS != nil, as.TTS), "audio_to_agent", sp.STT == nil || as.Audio)
	}
	return out, closeAll
}

// buildEngine builds the engine name of one kind (build is
// Engines.Recognizer or Engines.Synthesizer) and adds an HTTP one to open,
// to be closed. One that cannot run here is left out: the zero E, and
// warn logged with attrs and the error.
func buildEngine[E any](build func(string) (E, error), name string, open *[]*speech.OpenAI, log *slog.Logger, warn string, attrs ...any) E {
	e, err := build(name)
	if err != nil {
		log.Warn(warn, append(attrs, "err", err)...)
		var none E
		return none
	}
	if o, ok := any(e).(*speech.OpenAI); ok {
		*open = append(*open, o)
	}
	return e
}

func engineName(ok bool, name string) string {
	if !ok {
		return configs.SpeechOff
	}
	return name
}
