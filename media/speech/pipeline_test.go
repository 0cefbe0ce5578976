package speech

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records what a pipeline logs and plays.
type sink struct {
	mu      sync.Mutex
	turns   []Turn
	played  []Audio
	encoded []Audio
	timing  []TurnTiming
	got     chan struct{}
}

func newSink() *sink { return &sink{got: make(chan struct{}, 64)} }

func (s *sink) heard(_ context.Context, t Turn) (string, error) {
	s.mu.Lock()
	s.turns = append(s.turns, t)
	id := "msg_" + string(rune('a'+len(s.turns)-1))
	s.mu.Unlock()
	s.got <- struct{}{}
	return id, nil
}

// encode cuts a sentence into 20 ms frames (PCM here: the pipeline does
// not look inside them) and remembers its audio.
func (s *sink) encode(a Audio) ([][]byte, error) {
	s.mu.Lock()
	s.encoded = append(s.encoded, a)
	s.mu.Unlock()
	return make([][]byte, framesOf(a)), nil
}

// play queues every frame (the pipeline holds its lock: no channel send).
func (s *sink) play(frames [][]byte) int {
	s.mu.Lock()
	s.played = append(s.played, s.encoded[len(s.encoded)-1])
	s.mu.Unlock()
	select {
	case s.got <- struct{}{}:
	default:
	}
	return len(frames)
}

func (s *sink) onTiming(t TurnTiming) {
	s.mu.Lock()
	s.timing = append(s.timing, t)
	s.mu.Unlock()
}

// wait waits until cond holds, checking after each thing the pipeline does.
func (s *sink) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.got:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestPipelineHearsTurns: utterances spoken by flite are recognized by
// pocketsphinx and logged in order, with their speech bounds and the time
// recognition took.
func TestPipelineHearsTurns(t *testing.T) {
	ps, f := requireLocal(t)
	s := newSink()
	p := NewPipeline(PipelineOptions{STT: ps, Heard: s.heard, Encode: s.encode, Play: s.play})
	defer p.Close()
	phrases := []string{"what are your opening hours", "hello can you hear me"}
	start := time.Now()
	for i, phrase := range phrases {
		a, err := f.Synthesize(context.Background(), phrase)
		if err != nil {
			t.Fatal(err)
		}
		at := start.Add(time.Duration(i) * 3 * time.Second)
		p.Hear(a, at, at.Add(a.Duration()))
	}
	s.wait(t, "two turns", func() bool { return len(s.turns) == 2 })
	for i, tr := range s.turns {
		if tr.Err != nil || tr.Text != phrases[i] || tr.Engine != EnginePocketsphinx {
			t.Errorf("turn %d: %+v, want %q", i, tr, phrases[i])
		}
		if tr.Recognition <= 0 || tr.Audio < 500*time.Millisecond || !tr.End.After(tr.Start) {
			t.Errorf("turn %d: recognition %s, audio %s, %s..%s", i, tr.Recognition, tr.Audio, tr.Start, tr.End)
		}
		t.Logf("%q recognized in %s", tr.Text, tr.Recognition.Round(time.Millisecond))
	}
}

// TestPipelineSpeaksAsTextStreams: a reply is spoken sentence by sentence
// as its deltas come: the first sentence plays before the reply is done,
// and every sentence plays once, in order, then the next reply's.
func TestPipelineSpeaksAsTextStreams(t *testing.T) {
	_, f := requireLocal(t)
	s := newSink()
	var captions []Spoken // the speaker goroutine's until Close
	p := NewPipeline(PipelineOptions{TTS: f, Heard: s.heard, Encode: s.encode, Play: s.play, Lead: time.Minute,
		OnSpeaking: func(sp Spoken) { captions = append(captions, sp) }})
	defer p.Close()
	p.ReplyDelta("r1", "m1", "Hello can you hear me. Where is ")
	s.wait(t, "the first sentence, before the reply is done", func() bool { return len(s.played) == 1 })
	p.ReplyDelta("r1", "m1", "my order")
	p.ReplyDelta("r2", "m2", "Tell me a joke.") // waits for r1
	p.ReplyDone("r1", "m1", "Hello can you hear me. Where is my order")
	p.ReplyDone("r2", "m2", "Tell me a joke.")
	p.ReplyDone("r3", "m3", "What are your opening hours. Hello can you hear me.")
	s.wait(t, "five sentences", func() bool { return len(s.played) == 5 })
	// Sentence lengths order them: each is spoken as its own audio.
	for i, a := range s.played {
		if a.Rate != 16000 || a.Duration() < 300*time.Millisecond {
			t.Errorf("sentence %d: %d Hz, %s", i, a.Rate, a.Duration())
		}
	}
	p.ReplyDelta("r1", "m1", "more text of a finished reply.")
	p.ReplyDone("r2", "m2", "again")
	ps, _ := requireLocal(t)
	var heard []string
	for _, a := range s.played {
		tr, err := ps.Transcribe(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		heard = append(heard, tr.Text)
	}
	t.Logf("spoken: %q", heard)
	// Phrases pocketsphinx hears exactly from flite (TestFliteToPocketsphinx).
	want := []string{"hello can you hear me", "where is my order", "tell me a joke", "what are your opening hours", "hello can you hear me"}
	for i := range want {
		if w := WordErrorRate(want[i], heard[i]); w > 0 {
			t.Errorf("sentence %d heard %q, want %q (WER %.2f)", i, heard[i], want[i], w)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.played) != 5 {
		t.Fatalf("%d sentences played after the replies were done, want 5", len(s.played))
	}
	// Captions: each sentence, timed to start when the one before ends.
	p.Close()
	texts := []string{"Hello can you hear me.", "Where is my order", "Tell me a joke.", "What are your opening hours.", "Hello can you hear me."}
	for i, c := range captions {
		// Whole 20 ms frames: the last one padded.
		if d := c.Duration - s.played[i].Duration(); c.Text != texts[i] || d < 0 || d >= 20*time.Millisecond {
			t.Fatalf("caption %d: %+v, want %q lasting %s", i, c, texts[i], s.played[i].Duration())
		}
		if i > 0 && !c.At.Equal(captions[i-1].At.Add(captions[i-1].Duration)) {
			t.Fatalf("caption %d starts at %s, the one before ends at %s", i, c.At, captions[i-1].At.Add(captions[i-1].Duration))
		}
	}
	if len(captions) != 5 || captions[0].MessageID != "r1" || captions[2].MessageID != "r2" || captions[2].ReplyTo != "m2" {
		t.Fatalf("captions %+v", captions)
	}
}

// TestPipelineCut: a barge-in reports the reply the dropped frames fall
// in, how much of it played and the words of that, and stops every reply.
func TestPipelineCut(t *testing.T) {
	_, f := requireLocal(t)
	s := newSink()
	p := NewPipeline(PipelineOptions{TTS: f, Heard: s.heard, Encode: s.encode, Play: s.play, Lead: time.Minute})
	defer p.Close()
	p.ReplyDone("r1", "m1", "One two three. Four five six seven.")
	p.ReplyDelta("r2", "m2", "Eight nine ten. Eleven")
	s.wait(t, "three sentences", func() bool { return len(s.played) == 3 })
	frames := framesOf
	f1, f2, f3 := frames(s.played[0]), frames(s.played[1]), frames(s.played[2])
	// Half of r2's first sentence is still queued: r1 was heard whole.
	h, ok := p.Cut(f3 / 2)
	if !ok || h.MessageID != "r2" || h.MS != int64(f3-f3/2)*20 {
		t.Fatalf("cut: %+v %v; want r2, %d ms", h, ok, (f3-f3/2)*20)
	}
	if h.Text != "Eight" {
		t.Errorf("heard %q of %q, want its first word", h.Text, "Eight nine ten.")
	}
	p.ReplyDelta("r2", "m2", " twelve. Thirteen.")
	p.ReplyDone("r2", "m2", "Eight nine ten. Eleven twelve. Thirteen.")
	if _, ok := p.Cut(0); ok {
		t.Fatal("a second cut found something playing")
	}
	// A cut inside r1's second sentence.
	p.ReplyDone("r3", "m3", "Alpha beta. Gamma delta epsilon zeta.")
	s.wait(t, "r3", func() bool { return len(s.played) == 5 })
	g1, g2 := frames(s.played[3]), frames(s.played[4])
	h, ok = p.Cut(g2 / 2)
	if !ok || h.MessageID != "r3" || h.MS != int64(g1+g2-g2/2)*20 || h.Text != "Alpha beta. Gamma delta" {
		t.Fatalf("cut: %+v %v; want r3, %d ms, %q", h, ok, (g1+g2-g2/2)*20, "Alpha beta. Gamma delta")
	}
	_ = f1
	_ = f2
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.played) != 5 {
		t.Fatalf("%d sentences played: text of a cut reply was spoken", len(s.played))
	}
}

// TestPipelineFailures: a recognizer that is down or answers garbage
// still logs the turn, without text and with the error; one that is busy
// (more utterances waiting than MaxPending) logs the extra turns as
// ErrBusy; a synthesizer that fails skips the sentence, and the next one
// still plays. Nothing blocks the caller.
func TestPipelineFailures(t *testing.T) {
	_, f := requireLocal(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	downURL := srv.URL
	srv.Close()
	down, err := NewOpenAI(OpenAIConfig{BaseURL: downURL, Key: "sk-test", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("<html>not json"))
	}))
	defer garbage.Close()
	bad, err := NewOpenAI(OpenAIConfig{BaseURL: garbage.URL, Key: "sk-test", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	a, err := f.Synthesize(context.Background(), "hello can you hear me")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		stt  Recognizer
		code Code
	}{{"down", down, CodeDown}, {"garbage", bad, CodeBadResponse}} {
		s := newSink()
		p := NewPipeline(PipelineOptions{STT: c.stt, Heard: s.heard, Encode: s.encode, Play: s.play})
		p.Hear(a, time.Now(), time.Now())
		s.wait(t, c.name+" turn", func() bool { return len(s.turns) == 1 })
		p.Close()
		if tr := s.turns[0]; tr.Text != "" || CodeOf(tr.Err) != c.code || strings.Contains(tr.Err.Error(), "sk-test") {
			t.Errorf("%s: turn %+v, want no text and code %s", c.name, tr, c.code)
		}
	}

	// Busy: the recognizer is held until every utterance is in.
	release, started := make(chan struct{}), make(chan struct{}, 4)
	var once sync.Once
	defer once.Do(func() { close(release) }) // before the server closes
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"text":"hello"}`))
	}))
	defer slow.Close()
	defer once.Do(func() { close(release) })
	held, err := NewOpenAI(OpenAIConfig{BaseURL: slow.URL, Key: "sk-test", Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	s := newSink()
	p := NewPipeline(PipelineOptions{STT: held, Heard: s.heard, Encode: s.encode, Play: s.play, MaxPending: 1})
	p.Hear(a, time.Now(), time.Now())
	<-started // being recognized
	for range 3 {
		p.Hear(a, time.Now(), time.Now()) // one waiting, two busy
	}
	s.wait(t, "two busy turns", func() bool { return len(s.turns) == 2 })
	once.Do(func() { close(release) })
	s.wait(t, "four turns", func() bool { return len(s.turns) == 4 })
	p.Close()
	busy, ok := 0, 0
	for _, tr := range s.turns {
		switch {
		case errors.Is(tr.Err, ErrBusy):
			busy++
		case tr.Err == nil && tr.Text == "hello":
			ok++
		}
	}
	if busy != 2 || ok != 2 {
		t.Fatalf("turns %+v: want 2 busy, 2 recognized", s.turns)
	}

	// A synthesizer that is down: nothing plays, the pipeline goes on.
	s = newSink()
	p = NewPipeline(PipelineOptions{TTS: down, Heard: s.heard, Encode: s.encode, Play: s.play})
	p.ReplyDone("r1", "m1", "First. Second.")
	p.Close()
	if len(s.played) != 0 {
		t.Fatalf("played %d sentences from a synthesizer that is down", len(s.played))
	}
}

// TestPipelineTiming: a voice turn's stages are reported when the first
// audio of its reply is handed to Play, in order.
func TestPipelineTiming(t *testing.T) {
	ps, f := requireLocal(t)
	s := newSink()
	timed := make(chan TurnTiming, 1)
	p := NewPipeline(PipelineOptions{STT: ps, TTS: f, Heard: s.heard, Encode: s.encode, Play: s.play,
		OnTiming: func(tt TurnTiming) { timed <- tt }})
	defer p.Close()
	a, err := f.Synthesize(context.Background(), "where is my order")
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	p.Hear(a, end.Add(-a.Duration()), end)
	s.wait(t, "the turn", func() bool { return len(s.turns) == 1 })
	p.ReplyDelta("r1", "msg_a", "You said: where is my order.")
	p.ReplyDone("r1", "msg_a", "You said: where is my order.")
	var tt TurnTiming
	select {
	case tt = <-timed:
	case <-time.After(30 * time.Second):
		t.Fatal("no timing")
	}
	stages := []time.Time{tt.SpeechEnd, tt.Heard, tt.Recognized, tt.Logged, tt.FirstText, tt.FirstAudio}
	for i := 1; i < len(stages); i++ {
		if stages[i].Before(stages[i-1]) {
			t.Fatalf("stage %d before stage %d: %+v", i, i-1, tt)
		}
	}
	if tt.MessageID != "msg_a" {
		t.Fatalf("timing of %q", tt.MessageID)
	}
	t.Logf("recognition %s, first audio %s after the text",
		tt.Recognized.Sub(tt.Heard).Round(time.Millisecond), tt.FirstAudio.Sub(tt.FirstText).Round(time.Millisecond))
}

// framesOf is how many 20 ms frames a plays in (the last one padded), as
// the leg's encoder cuts it.
func framesOf(a Audio) int {
	spf := a.Rate / 50
	if spf <= 0 {
		return 0
	}
	return (len(a.Samples) + spf - 1) / spf
}
