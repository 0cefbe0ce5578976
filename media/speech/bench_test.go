package speech

import (
	"context"
	"strings"
	"testing"
)

// benchPhrases are what a visitor might say to a site's assistant. The
// offline stack hears some of them exactly, reliably (both tools are
// deterministic: the same text gives the same words every run); the
// benchmark output says which.
var benchPhrases = []string{
	"what are your opening hours",
	"hello can you hear me",
	"i would like to book a table for two",
	"can i speak to a human please",
	"thank you goodbye",
	"where is my order",
	"please call me back tomorrow",
	"yes",
	"no thanks",
	"what is the weather like today",
	"how much does it cost",
	"tell me a joke",
}

func benchName(phrase string) string { return strings.ReplaceAll(phrase, " ", "_") }

// reportPerPhrase reports the time one loop took per phrase and its
// real-time factor against a, the phrase's audio.
func reportPerPhrase(b *testing.B, a Audio) {
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/phrase")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)/a.Duration().Seconds(), "rtf")
}

// BenchmarkSynthesize: flite (slt) latency per phrase, one process per
// sentence as the pipeline runs it; also the real-time factor.
func BenchmarkSynthesize(b *testing.B) {
	_, f := requireLocal(b)
	for _, phrase := range benchPhrases {
		b.Run(benchName(phrase), func(b *testing.B) {
			var a Audio
			var err error
			for b.Loop() {
				if a, err = f.Synthesize(context.Background(), phrase); err != nil {
					b.Fatal(err)
				}
			}
			reportPerPhrase(b, a)
		})
	}
}

// BenchmarkTranscribe: pocketsphinx latency per phrase spoken by flite
// (slt), model loading included (one process per utterance), with the
// phrase's word error rate.
func BenchmarkTranscribe(b *testing.B) {
	ps, f := requireLocal(b)
	for _, phrase := range benchPhrases {
		a, err := f.Synthesize(context.Background(), phrase)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(benchName(phrase), func(b *testing.B) {
			var tr Transcript
			for b.Loop() {
				if tr, err = ps.Transcribe(context.Background(), a); err != nil {
					b.Fatal(err)
				}
			}
			reportPerPhrase(b, a)
			b.ReportMetric(WordErrorRate(phrase, tr.Text), "WER")
		})
	}
}

// BenchmarkWER: word error rate of pocketsphinx over all the phrases, per
// synthetic voice (flite's slt, rms, awb, kal16 and espeak-ng's en-us),
// logging each phrase that is not heard exactly.
func BenchmarkWER(b *testing.B) {
	ps, _ := requireLocal(b)
	voices := map[string]func() (Synthesizer, error){
		"flite-slt":       func() (Synthesizer, error) { return NewFlite(LocalTTSConfig{Voice: "slt"}) },
		"flite-rms":       func() (Synthesizer, error) { return NewFlite(LocalTTSConfig{Voice: "rms"}) },
		"flite-awb":       func() (Synthesizer, error) { return NewFlite(LocalTTSConfig{Voice: "awb"}) },
		"flite-kal16":     func() (Synthesizer, error) { return NewFlite(LocalTTSConfig{Voice: "kal16"}) },
		"espeak-ng-en-us": func() (Synthesizer, error) { return NewEspeakNG(LocalTTSConfig{}) },
	}
	for _, name := range []string{"flite-slt", "flite-rms", "flite-awb", "flite-kal16", "espeak-ng-en-us"} {
		b.Run(name, func(b *testing.B) {
			s, err := voices[name]()
			if err != nil {
				b.Fatal(err)
			}
			var sum float64
			exact := 0
			var missed []string
			for b.Loop() {
				sum, exact, missed = 0, 0, nil
				for _, phrase := range benchPhrases {
					a, err := s.Synthesize(context.Background(), phrase)
					if err != nil {
						b.Fatal(err)
					}
					tr, err := ps.Transcribe(context.Background(), a)
					if err != nil {
						b.Fatal(err)
					}
					w := WordErrorRate(phrase, tr.Text)
					sum += w
					if w == 0 {
						exact++
					} else {
						missed = append(missed, phrase+" → "+tr.Text)
					}
				}
			}
			b.ReportMetric(sum/float64(len(benchPhrases)), "WER")
			b.ReportMetric(float64(exact), "exact/12")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: %d/%d exact, missed: %q", name, exact, len(benchPhrases), missed)
		})
	}
}
