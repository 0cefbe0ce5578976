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
			rec, err := engines.Recognizer(as.STT)
			if err != nil {
				log.Warn("voice runs without speech-to-text: the agent gets the visitor's audio, not text (make speech-tools installs the offline engines)",
					"agent", agent, "stt", as.STT, "err", err)
			} else {
				sp.STT = rec
				if o, ok := rec.(*speech.OpenAI); ok {
					open = append(open, o)
				}
			}
		}
		if as.Speaks() {
			syn, err := engines.Synthesizer(as.TTS)
			if err != nil {
				log.Warn("voice runs without text-to-speech: the agent's replies are not spoken (make speech-tools installs the offline engines)",
					"agent", agent, "tts", as.TTS, "err", err)
			} else {
				sp.TTS = syn
				if o, ok := syn.(*speech.OpenAI); ok {
					open = append(open, o)
				}
			}
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

func engineName(ok bool, name string) string {
	if !ok {
		return configs.SpeechOff
	}
	return name
}
