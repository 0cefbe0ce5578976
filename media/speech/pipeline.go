package speech

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Pipeline is the speech of one voice leg whose agent works in text: it
// turns each utterance of the visitor into text (Hear → Recognizer →
// Heard), and speaks the agent's replies as their text streams in
// (ReplyDelta, ReplyDone → Sentences → Synthesizer → Play), one sentence at
// a time, queued at most Lead ahead of what the visitor hears, so that a
// barge-in (Cut) abandons little and knows what was heard.
//
// It owns two goroutines, started by NewPipeline and stopped by Close: the
// listener (one utterance at a time, in order) and the speaker (one
// sentence at a time, in order). The methods other than Close never block
// on an engine: they are called from the media reader and the leg's event
// loop. Engines and callbacks are called without the pipeline's lock.
type Pipeline struct {
	o      PipelineOptions
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	utter  chan utterance
	wake   chan struct{} // 1-buffered: the speaker has something to do

	mu     sync.Mutex
	closed bool // Close was called
	// replies are spoken in order: those whose audio may still be queued
	// in the leg, then the one being spoken, then those waiting.
	replies []*reply
	ahead   time.Time              // when the audio handed to Play ends playing
	cut     map[string]bool        // replies a barge-in cut: their text is ignored
	turns   map[string]*TurnTiming // voice turns waiting for their reply, by message id
}

// PipelineOptions configure a Pipeline. STT or TTS may be nil: that half
// does nothing.
type PipelineOptions struct {
	STT Recognizer
	TTS Synthesizer
	// Heard logs a turn of the visitor (the broker: a user_message via
	// voice) and returns its message id. It is called on the listener
	// goroutine, for every utterance with words and for every one the
	// recognizer failed on (Turn.Err set, no text): a turn is never lost.
	Heard func(ctx context.Context, t Turn) (messageID string, err error)
	// Encode turns a synthesized sentence into the 20 ms frames the leg
	// plays (Opus packets), on the speaker goroutine.
	Encode func(a Audio) ([][]byte, error)
	// Play queues a sentence's frames for the visitor and returns how many
	// it queued: none once a barge-in holds the playout. It is called with
	// the pipeline's lock held, so that a barge-in (Cut) counts exactly
	// what was queued: it must be quick and never block.
	Play func(frames [][]byte) (queued int)
	// OnSpeaking, if set, is told of each sentence handed to Play: the
	// reply it is of, its text, when it starts playing and for how long
	// (the call's captions). It is called on the speaker goroutine,
	// without the pipeline's lock.
	OnSpeaking func(s Spoken)
	// OnTiming, if set, receives the stages of each voice turn when the
	// first audio of its reply is handed to Play (the speaker goroutine).
	OnTiming func(TurnTiming)
	// Timeout bounds one recognition and one sentence's synthesis
	// (default 15 s).
	Timeout time.Duration
	// Lead is how far ahead of the visitor's ear speech is queued
	// (default 1 s).
	Lead time.Duration
	// MaxPending bounds the utterances waiting for recognition; past it an
	// utterance is logged as a turn that failed with ErrBusy (default 4).
	MaxPending int
	Log        *slog.Logger
}

// Turn is what the visitor said in one utterance.
type Turn struct {
	Text   string // empty when Err is set
	Engine string
	// Start and End bound the speech; Audio is how long the utterance
	// given to the recognizer was.
	Start, End time.Time
	Audio      time.Duration
	// Recognition is how long the recognizer took.
	Recognition time.Duration
	// Err is why there is no text: the recognizer failed (an *Error, or
	// ErrBusy when recognition fell behind).
	Err error
}

// ErrBusy: recognition fell behind the visitor (MaxPending utterances
// waiting) and an utterance was not transcribed.
var ErrBusy = errors.New("speech: recognition is behind; utterance not transcribed")

// TurnTiming is where the time of one voice turn went, from the end of the
// visitor's speech to the first audio of the agent's reply.
type TurnTiming struct {
	MessageID string
	SpeechEnd time.Time // the end of the visitor's speech (VAD)
	// Heard: the utterance reached the pipeline (end of turn detection);
	// Recognized: the recognizer returned; Logged: the turn was stored
	// (Heard returned, or the reply's first text came if that was sooner).
	Heard, Recognized, Logged time.Time
	// FirstText: the reply's first text arrived; FirstAudio: its first
	// sentence was synthesized and handed to Play.
	FirstText, FirstAudio time.Time
}

// Spoken is a sentence handed to the leg to play.
type Spoken struct {
	MessageID, ReplyTo, Text string
	// At is when it starts playing (after what was queued before it).
	At       time.Time
	Duration time.Duration
}

// Heard is what a barge-in cut of the visitor's hearing of a reply.
type Heard struct {
	MessageID string
	MS        int64
	Text      string
}

type utterance struct {
	audio      Audio
	start, end time.Time
	at         time.Time
}

// reply is an agent reply being spoken.
type reply struct {
	id      string
	split   Sentences
	pending []string // sentences to synthesize, in order
	done    bool     // its text is complete
	spoken  []spokenSentence
	frames  int // handed to Play, in all
	// replyTo and came (when its first text came) time a voice turn:
	// timing is that turn's, until the reply's first audio.
	replyTo string
	came    time.Time
	timing  *TurnTiming
	ctx     context.Context
	stop    context.CancelFunc
}

type spokenSentence struct {
	text   string
	frames int
}

const (
	defaultSpeechTimeout = 15 * time.Second
	defaultLead          = time.Second
	defaultMaxPending    = 4
	frameMS              = 20
	maxTurnsTracked      = 16
)

// NewPipeline starts a leg's pipeline; Close stops it.
func NewPipeline(o PipelineOptions) *Pipeline {
	if o.Timeout <= 0 {
		o.Timeout = defaultSpeechTimeout
	}
	if o.Lead <= 0 {
		o.Lead = defaultLead
	}
	if o.MaxPending <= 0 {
		o.MaxPending = defaultMaxPending
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pipeline{o: o, ctx: ctx, cancel: cancel, utter: make(chan utterance, o.MaxPending),
		wake: make(chan struct{}, 1), cut: map[string]bool{}, turns: map[string]*TurnTiming{}}
	p.wg.Add(2)
	go p.listen()
	go p.speak()
	return p
}

// Close stops the pipeline: a recognition or synthesis under way is
// cancelled, and utterances not yet recognized are dropped. It waits for
// the goroutines.
func (p *Pipeline) Close() {
	p.mu.Lock()
	p.closed = true // no goroutine is added after this
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}

// Hear gives the pipeline an utterance to transcribe. It does not block.
func (p *Pipeline) Hear(a Audio, start, end time.Time) {
	if p.o.STT == nil || p.ctx.Err() != nil {
		return
	}
	u := utterance{audio: a, start: start, end: end, at: time.Now()}
	select {
	case p.utter <- u:
	default:
		// Recognition is behind: the turn is still logged, marked.
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go func() { // owned: Close waits for it
			defer p.wg.Done()
			p.logTurn(Turn{Start: start, End: end, Audio: a.Duration(), Err: ErrBusy}, u)
		}()
	}
}

// listen recognizes utterances in order until Close.
func (p *Pipeline) listen() {
	defer p.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case u := <-p.utter:
			p.recognize(u)
		}
	}
}

func (p *Pipeline) recognize(u utterance) {
	ctx, cancel := context.WithTimeout(p.ctx, p.o.Timeout)
	defer cancel()
	t0 := time.Now()
	tr, err := p.o.STT.Transcribe(ctx, u.audio)
	t := Turn{Text: strings.TrimSpace(tr.Text), Engine: tr.Engine, Start: u.start, End: u.end,
		Audio: u.audio.Duration(), Recognition: time.Since(t0), Err: err}
	if p.ctx.Err() != nil {
		return // closing: the leg is gone
	}
	if err == nil && t.Text == "" {
		p.o.Log.Debug("speech: nothing recognized in an utterance", "audio", t.Audio, "took", t.Recognition)
		return
	}
	if err != nil {
		t.Text = ""
		p.o.Log.Warn("speech: recognition failed; the turn is logged without text", "code", CodeOf(err),
			"audio", t.Audio, "took", t.Recognition.Round(time.Millisecond), "err", err)
	}
	p.logTurn(t, u)
}

// logTurn hands a turn to Heard and remembers it for its timing.
func (p *Pipeline) logTurn(t Turn, u utterance) {
	recognized := time.Now()
	ctx, cancel := context.WithTimeout(p.ctx, p.o.Timeout)
	defer cancel()
	id, err := p.o.Heard(ctx, t)
	if err != nil {
		if p.ctx.Err() == nil {
			p.o.Log.Warn("speech: a voice turn was not logged", "err", err)
		}
		return
	}
	if t.Err != nil || p.o.OnTiming == nil {
		return
	}
	tt := &TurnTiming{MessageID: id, SpeechEnd: u.end, Heard: u.at, Recognized: recognized, Logged: time.Now()}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.replies {
		if r.replyTo == id && r.timing == nil && len(r.spoken) == 0 {
			// The agent answered before Heard returned: the turn was
			// stored by then.
			tt.FirstText, r.timing = r.came, tt
			if tt.Logged.After(r.came) {
				tt.Logged = r.came
			}
			return
		}
	}
	if len(p.turns) >= maxTurnsTracked {
		clear(p.turns) // replies that never came
	}
	p.turns[id] = tt
}

// ReplyDelta gives the pipeline a piece of an agent reply's text (a
// text_delta) to speak. It does not block.
func (p *Pipeline) ReplyDelta(id, replyTo, text string) {
	if p.o.TTS == nil || id == "" {
		return
	}
	p.mu.Lock()
	r := p.replyLocked(id, replyTo)
	if r == nil {
		p.mu.Unlock()
		return
	}
	r.pending = append(r.pending, r.split.Push(text)...)
	p.mu.Unlock()
	p.poke()
}

// ReplyDone tells the pipeline a reply's text is complete (its text_done,
// with the whole text): what was not spoken yet of it is, and a reply that
// came whole (no deltas) is spoken sentence by sentence.
func (p *Pipeline) ReplyDone(id, replyTo, text string) {
	if p.o.TTS == nil || id == "" {
		return
	}
	p.mu.Lock()
	r := p.replyLocked(id, replyTo)
	if r == nil || r.done {
		p.mu.Unlock()
		return
	}
	if len(r.pending) == 0 && len(r.spoken) == 0 && r.split.buf == "" {
		r.pending = append(r.pending, r.split.Push(text)...)
	}
	if rest := r.split.Flush(); rest != "" {
		r.pending = append(r.pending, rest)
	}
	r.done = true
	p.mu.Unlock()
	p.poke()
}

// replyLocked returns the reply id, queued to speak if it is new; nil if a
// barge-in cut it or it was spoken already.
func (p *Pipeline) replyLocked(id, replyTo string) *reply {
	if p.cut[id] {
		return nil
	}
	for _, r := range p.replies {
		if r.id == id {
			return r
		}
	}
	ctx, stop := context.WithCancel(p.ctx)
	r := &reply{id: id, ctx: ctx, stop: stop, replyTo: replyTo, came: time.Now()}
	p.replies = append(p.replies, r)
	if tt := p.turns[replyTo]; tt != nil {
		tt.FirstText, r.timing = r.came, tt
		delete(p.turns, replyTo)
	}
	return r
}

func (p *Pipeline) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Cut is a barge-in: the leg dropped `dropped` queued frames. The
// pipeline's audio plays in the order it was handed to Play, so the
// visitor heard all of it but the last `dropped` frames: the reply those
// fall in is the one cut, and the rest of its frames are what was heard.
// Every reply stops (their text is ignored from now on). ok is false when
// none of the pipeline's audio was cut (the agent's own audio was).
func (p *Pipeline) Cut(dropped int) (h Heard, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	total := 0
	for _, r := range p.replies {
		total += r.frames
	}
	played := max(total-dropped, 0)
	for _, r := range p.replies {
		if played < r.frames || (!ok && played == r.frames && !r.finished()) {
			if !ok {
				h, ok = Heard{MessageID: r.id, MS: int64(played) * frameMS, Text: heardText(r.spoken, played)}, true
			}
		}
		played = max(played-r.frames, 0)
		r.stop()
		p.cut[r.id] = true
	}
	p.replies, p.ahead = nil, time.Time{}
	if len(p.cut) > 64 {
		clear(p.cut) // old replies; their text stopped coming long ago
		if ok {
			p.cut[h.MessageID] = true
		}
	}
	return h, ok
}

// finished reports whether all of a reply was handed to Play.
func (r *reply) finished() bool { return r.done && len(r.pending) == 0 }

// heardText is the text of the sentences whose audio the first played
// frames carried: whole sentences, then the share of the next one's words
// its played frames make.
func heardText(spoken []spokenSentence, played int) string {
	var words []string
	for _, s := range spoken {
		w := strings.Fields(s.text)
		if played >= s.frames {
			words = append(words, w...)
			played -= s.frames
			continue
		}
		if s.frames > 0 {
			words = append(words, w[:len(w)*played/s.frames]...)
		}
		break
	}
	return strings.Join(words, " ")
}

// speak synthesizes and plays the replies' sentences in order until Close.
func (p *Pipeline) speak() {
	defer p.wg.Done()
	for {
		r, text, ok := p.next()
		if !ok {
			select {
			case <-p.ctx.Done():
				return
			case <-p.wake:
			}
			continue
		}
		p.pace(r)
		if r.ctx.Err() != nil {
			continue // cut while waiting
		}
		p.say(r, text)
	}
}

// next takes the next sentence to speak, of the first reply not yet all
// handed to Play (a later reply waits for an earlier one's text). Replies
// whose audio has all played are forgotten.
func (p *Pipeline) next() (*reply, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.After(p.ahead.Add(time.Second)) {
		// Everything handed has played (the second covers the leg's
		// jitter): only replies still being spoken or waiting stay.
		for len(p.replies) > 0 && p.replies[0].finished() {
			p.replies[0].stop()
			p.replies = p.replies[1:]
		}
	}
	for _, r := range p.replies {
		if len(r.pending) > 0 {
			text := r.pending[0]
			r.pending = r.pending[1:]
			return r, text, true
		}
		if !r.done {
			return nil, "", false // more text to come
		}
	}
	return nil, "", false
}

// pace waits until the audio already queued is within Lead of its end, so
// that little is queued ahead of the visitor's ear.
func (p *Pipeline) pace(r *reply) {
	p.mu.Lock()
	wait := time.Until(p.ahead.Add(-p.o.Lead))
	p.mu.Unlock()
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.ctx.Done():
	}
}

// say synthesizes one sentence of r and hands it to Play.
func (p *Pipeline) say(r *reply, text string) {
	ctx, cancel := context.WithTimeout(r.ctx, p.o.Timeout)
	a, err := p.o.TTS.Synthesize(ctx, text)
	cancel()
	if r.ctx.Err() != nil {
		return // cut, or closing
	}
	if err != nil {
		// The text is in the log and on the visitor's screen; only its
		// sound is missing.
		p.o.Log.Warn("speech: a sentence was not spoken", "message_id", r.id, "code", CodeOf(err), "err", err)
		return
	}
	frames, err := p.o.Encode(a)
	if err != nil {
		p.o.Log.Warn("speech: a sentence was not encoded", "message_id", r.id, "err", err)
		return
	}
	if len(frames) == 0 {
		return
	}
	now := time.Now()
	var timing *TurnTiming
	p.mu.Lock()
	if p.cut[r.id] {
		p.mu.Unlock()
		return
	}
	// Queued and counted under the lock: a barge-in's Cut sees either
	// none of the sentence or exactly what the leg queued of it.
	n := p.o.Play(frames)
	if n == 0 {
		p.mu.Unlock()
		p.o.Log.Debug("speech: playout held: a sentence was dropped", "message_id", r.id)
		return
	}
	r.spoken = append(r.spoken, spokenSentence{text: text, frames: n})
	r.frames += n
	dur := time.Duration(n*frameMS) * time.Millisecond
	sp := Spoken{MessageID: r.id, ReplyTo: r.replyTo, Text: text, At: later(p.ahead, now), Duration: dur}
	p.ahead = sp.At.Add(dur)
	if r.timing != nil {
		timing, r.timing = r.timing, nil
		timing.FirstAudio = now
	}
	p.mu.Unlock()
	if p.o.OnSpeaking != nil {
		p.o.OnSpeaking(sp)
	}
	if timing != nil && p.o.OnTiming != nil {
		p.o.OnTiming(*timing)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
