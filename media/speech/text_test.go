package speech

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestWordErrorRate(t *testing.T) {
	cases := []struct {
		ref, hyp string
		want     float64
	}{
		{"what are your opening hours", "what are your opening hours", 0},
		{"What are your opening hours?", "what are your opening hours", 0}, // case and punctuation do not count
		{"what are your opening hours", "what are your opening was", 0.2},  // 1 substitution / 5
		{"hello can you hear me", "hello you hear me", 0.2},                // 1 deletion
		{"hello can you hear me", "oh hello can you hear me now", 0.4},     // 2 insertions
		{"hello can you hear me", "", 1},
		{"yes", "yes yes yes", 2}, // insertions can push it over 1
		{"", "", 0},
		{"", "noise", 1},
		{"it's five o'clock", "it's five o clock", 2.0 / 3},     // "o'clock" → "o" + "clock"
		{"book a table for two", "but a ball for it to you", 1}, // 3 substitutions, 2 insertions
	}
	for _, c := range cases {
		if got := WordErrorRate(c.ref, c.hyp); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("WER(%q, %q) = %.3f, want %.3f", c.ref, c.hyp, got, c.want)
		}
	}
	if got := Words("Don't STOP, 3 times!"); !reflect.DeepEqual(got, []string{"don't", "stop", "3", "times"}) {
		t.Errorf("Words: %q", got)
	}
}

func TestSentences(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"Hello there. How are you? Fine!", []string{"Hello there.", "How are you?", "Fine!"}},
		{"It costs 3.50 today. Dr. Smith will see you. Bye", []string{"It costs 3.50 today.", "Dr. Smith will see you.", "Bye"}},
		{"Use e.g. this one. Ok", []string{"Use e.g. this one.", "Ok"}},
		{"He said \"stop.\" Then left.", []string{"He said \"stop.\"", "Then left."}},
		{"Wait… what?\nNew line", []string{"Wait…", "what?", "New line"}},
		{"first line\nsecond line", []string{"first line", "second line"}},
		{"  ", nil},
		{"no end at all", []string{"no end at all"}},
	}
	for _, c := range cases {
		// Fed whole, and fed one byte at a time (text_delta chunks can cut
		// anywhere, even inside a character): the same sentences.
		for _, step := range []int{len(c.in) + 1, 1, 3} {
			var s Sentences
			var got []string
			for i := 0; i < len(c.in); i += step {
				got = append(got, s.Push(c.in[i:min(i+step, len(c.in))])...)
			}
			if rest := s.Flush(); rest != "" {
				got = append(got, rest)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("%q in chunks of %d: %q, want %q", c.in, step, got, c.want)
			}
		}
	}
}

// TestSentencesReleaseEarly: a sentence is released as soon as the next
// chunk shows it ended, not at the end of the reply; a long run with no
// punctuation is cut at a space within MaxLen.
func TestSentencesReleaseEarly(t *testing.T) {
	var s Sentences
	if got := s.Push("Our opening hours are nine to five."); got != nil {
		t.Fatalf("released %q before knowing the sentence ended", got)
	}
	if got := s.Push(" On Sundays"); !reflect.DeepEqual(got, []string{"Our opening hours are nine to five."}) {
		t.Fatalf("got %q", got)
	}
	s = Sentences{MaxLen: 20}
	got := s.Push("one two three four five six seven eight")
	if len(got) == 0 || len(got[0]) > 20 || strings.HasSuffix(got[0], " ") || !strings.HasPrefix("one two three four five six seven eight", got[0]) {
		t.Fatalf("forced cut: %q", got)
	}
	s = Sentences{MaxLen: 8}
	if got := s.Push(strings.Repeat("é", 10)); len(got) == 0 || !strings.HasPrefix(got[0], "éééé") || strings.ContainsRune(got[0], '\uFFFD') {
		t.Fatalf("cut inside a character: %q", got)
	}
	s = Sentences{MaxLen: 8}
	if got := s.Push(strings.Repeat("\x80", 20)); len(got) != 2 { // not UTF-8: still progresses
		t.Fatalf("invalid UTF-8: %q", got)
	}
}

func TestErrorCodes(t *testing.T) {
	err := fmt.Errorf("speaking: %w", &Error{Code: CodeTimeout, Engine: "flite", Op: "synthesize", Detail: "killed after 10s", Err: context.DeadlineExceeded})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDown) || CodeOf(err) != CodeTimeout {
		t.Fatalf("errors.Is/CodeOf on %v", err)
	}
	if got := err.Error(); got != "speaking: speech: flite synthesize: timeout: killed after 10s: context deadline exceeded" {
		t.Fatalf("message %q", got)
	}
	if e := (&Error{Code: CodeRejected, Engine: "openai", Status: 401}); e.Error() != "speech: openai: rejected (HTTP 401)" {
		t.Fatalf("message %q", e.Error())
	}
	if CodeOf(errors.New("other")) != "" || CodeOf(nil) != "" {
		t.Fatal("CodeOf of a foreign error")
	}
	for _, c := range []Code{CodeUnavailable, CodeDown, CodeTimeout, CodeRejected, CodeBadResponse, CodeFailed, CodeCanceled} {
		if sentinel(c) == nil || !errors.Is(&Error{Code: c}, sentinel(c)) {
			t.Errorf("code %s has no sentinel", c)
		}
	}
}

func TestEnginesByName(t *testing.T) {
	var e Engines
	if _, err := e.Recognizer("whisper.cpp"); CodeOf(err) != CodeUnavailable || !strings.Contains(err.Error(), `no speech-to-text engine "whisper.cpp"`) {
		t.Fatalf("unknown STT: %v", err)
	}
	if _, err := e.Synthesizer("piper"); CodeOf(err) != CodeUnavailable {
		t.Fatalf("unknown TTS: %v", err)
	}
	if _, err := e.Recognizer("openai"); CodeOf(err) != CodeUnavailable {
		t.Fatalf("openai without a base URL: %v", err)
	}
	e.OpenAI.BaseURL = "http://127.0.0.1:9"
	r, err := e.Recognizer(" OpenAI ")
	if _, ok := r.(*OpenAI); !ok || err != nil {
		t.Fatalf("openai: %T, %v", r, err)
	}
	e.Pocketsphinx.Binary = "parley-no-such-pocketsphinx"
	if _, err := e.Recognizer(""); CodeOf(err) != CodeUnavailable {
		t.Fatalf("default STT with its tool missing: %v", err)
	}
}
