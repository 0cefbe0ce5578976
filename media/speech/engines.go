package speech

import (
	"fmt"
	"strings"
)

// Engine names, as an agent's `speech: {stt: …, tts: …}` will name them.
const (
	EnginePocketsphinx = "pocketsphinx" // STT, offline
	EngineFlite        = "flite"        // TTS, offline (the default)
	EngineEspeakNG     = "espeak-ng"    // TTS, offline
	EngineOpenAI       = "openai"       // STT and TTS over HTTP
)

// Engines holds the configuration of every engine, so that a caller can
// build the one an agent names. The zero value builds the offline engines
// with their defaults; OpenAI needs at least a base URL.
type Engines struct {
	Pocketsphinx PocketsphinxConfig
	Flite        LocalTTSConfig
	EspeakNG     LocalTTSConfig
	OpenAI       OpenAIConfig
}

// Recognizer builds the named speech-to-text engine ("" means
// pocketsphinx). A missing tool or an unknown name is an *Error with
// CodeUnavailable.
func (e Engines) Recognizer(name string) (Recognizer, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", EnginePocketsphinx:
		return NewPocketsphinx(e.Pocketsphinx)
	case EngineOpenAI:
		return NewOpenAI(e.OpenAI)
	}
	return nil, &Error{Code: CodeUnavailable, Engine: name, Op: "check",
		Detail: fmt.Sprintf("no speech-to-text engine %q (have %s, %s)", name, EnginePocketsphinx, EngineOpenAI)}
}

// Synthesizer builds the named text-to-speech engine ("" means flite).
// A missing tool or an unknown name is an *Error with CodeUnavailable.
func (e Engines) Synthesizer(name string) (Synthesizer, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", EngineFlite:
		return NewFlite(e.Flite)
	case EngineEspeakNG:
		return NewEspeakNG(e.EspeakNG)
	case EngineOpenAI:
		return NewOpenAI(e.OpenAI)
	}
	return nil, &Error{Code: CodeUnavailable, Engine: name, Op: "check",
		Detail: fmt.Sprintf("no text-to-speech engine %q (have %s, %s, %s)", name, EngineFlite, EngineEspeakNG, EngineOpenAI)}
}
