// Package speech turns a visitor's voice into text and an agent's text into
// voice, so that an agent that speaks only text can hold a voice
// conversation. It knows nothing of WebRTC, NATS or the broker: it works on
// whole utterances of mono 16-bit PCM (Audio) and on plain text.
//
// Two small interfaces are the whole contract:
//
//	type Recognizer interface { Transcribe(ctx, Audio) (Transcript, error) }
//	type Synthesizer interface { Synthesize(ctx, text string) (Audio, error) }
//
// The engines behind them:
//
//   - Pocketsphinx (Recognizer): Debian's pocketsphinx_continuous with the
//     pocketsphinx-en-us model, offline. Audio is resampled to 16 kHz.
//   - Flite and EspeakNG (Synthesizer): Debian's flite (voice slt by default)
//     and espeak-ng, offline.
//   - OpenAI (both): any server that speaks OpenAI's /v1/audio/transcriptions
//     and /v1/audio/speech, hosted or self-hosted. The key comes from the
//     environment or a file and is never logged nor put in an error.
//
// The local engines run their tool with exec.CommandContext (no shell) in a
// temporary directory that is removed afterwards, with a time limit and a
// cap on what they may write; cancelling the context kills the process (a
// barge-in can abandon a synthesis mid-way). A constructor whose tool or
// model is missing returns an *Error with Code CodeUnavailable
// (errors.Is(err, ErrUnavailable)), so `parley serve` can start anyway and
// say that voice runs without speech.
//
// Engines builds an engine by the name an agent's configuration gives
// ("pocketsphinx", "flite", "espeak-ng", "openai"; empty: the offline pair).
//
// Text-to-speech streams sentence by sentence: feed an agent's text_delta
// chunks to a Sentences splitter and call Synthesize for each sentence it
// releases, so the first audio does not wait for the whole reply.
//
// Nothing here starts a goroutine that outlives a call, except the HTTP
// keep-alive connections of an OpenAI client, which its Close drops. An
// engine value holds only its configuration and is safe for concurrent use.
package speech

import "context"

// Recognizer turns one utterance into text (speech-to-text).
type Recognizer interface {
	// Transcribe returns the words heard in a. An utterance with no words
	// is not an error: Transcript.Text is then empty. Errors are *Error.
	Transcribe(ctx context.Context, a Audio) (Transcript, error)
}

// Synthesizer turns text into speech (text-to-speech). Callers speak a
// reply one sentence at a time (see Sentences).
type Synthesizer interface {
	// Synthesize returns text spoken as mono PCM at the engine's own rate
	// (Audio.Rate; resample with Audio.Resample). Blank text gives empty
	// audio and no error. Errors are *Error.
	Synthesize(ctx context.Context, text string) (Audio, error)
}

// Transcript is what a Recognizer heard.
type Transcript struct {
	// Text is the words heard, lower case for the local engine, as the
	// provider wrote them for a remote one; empty when nothing was heard.
	Text string
	// Engine names who heard it: "pocketsphinx" or "openai:<model>".
	Engine string
}
