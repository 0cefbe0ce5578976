package signalingtest

import (
	"context"
	"os"
	"testing"

	"github.com/thesyncim/gopus"

	"github.com/parley-rtc/parley/media"
	"github.com/parley-rtc/parley/media/speech"
)

// RequireSpeech returns the offline speech engines, or skips the test when
// they are not installed (make speech-tools); with PARLEY_REQUIRE_SPEECH=1
// (CI) a missing engine fails the test instead.
func RequireSpeech(t testing.TB) (*speech.Pocketsphinx, *speech.Flite) {
	t.Helper()
	ps, err := speech.NewPocketsphinx(speech.PocketsphinxConfig{TempDir: t.TempDir()})
	if err == nil {
		var f *speech.Flite
		if f, err = speech.NewFlite(speech.LocalTTSConfig{TempDir: t.TempDir()}); err == nil {
			return ps, f
		}
	}
	if os.Getenv("PARLEY_REQUIRE_SPEECH") == "1" {
		t.Fatalf("speech engines missing (PARLEY_REQUIRE_SPEECH=1): %v", err)
	}
	t.Skipf("SKIPPING: speech engines missing (run make speech-tools): %v", err)
	return nil, nil
}

// Say is phrase spoken by flite (voice slt, 16 kHz) as 20 ms Opus frames,
// what a visitor's microphone sends.
func Say(t testing.TB, f *speech.Flite, phrase string) [][]byte {
	t.Helper()
	a, err := f.Synthesize(context.Background(), phrase)
	if err != nil {
		t.Fatalf("say %q: %v", phrase, err)
	}
	return Encode(t, a)
}

// Encode turns audio into 20 ms Opus frames (the last padded).
func Encode(t testing.TB, a speech.Audio) [][]byte {
	t.Helper()
	enc, err := media.NewSpeechEncoder()
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := enc.Encode(a.Samples, a.Rate)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := enc.Flush()
	if err != nil {
		t.Fatal(err)
	}
	return append(pkts, tail...)
}

// Quiet is n frames of silence: enough of it (past the VAD's hangover)
// ends an utterance.
func Quiet(t testing.TB, n int) [][]byte {
	t.Helper()
	return Encode(t, speech.Audio{Rate: 16000, Samples: make([]int16, n*320)})
}

// Decode decodes Opus frames to 16 kHz mono, to transcribe what the agent
// said.
func Decode(t testing.TB, pkts [][]byte) speech.Audio {
	t.Helper()
	dec, err := gopus.NewDecoder(gopus.DefaultDecoderConfig(16000, 1))
	if err != nil {
		t.Fatal(err)
	}
	out := speech.Audio{Rate: 16000}
	buf := make([]int16, 16000*120/1000)
	for _, p := range pkts {
		n, err := dec.DecodeInt16(p, buf)
		if err != nil {
			continue // a packet the decoder refuses: heard as nothing
		}
		out.Samples = append(out.Samples, buf[:n]...)
	}
	return out
}
