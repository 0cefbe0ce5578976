package media

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// Utterances (utterance.go) with real pion peers, and the capture's edge
// cases (truncation, lost frames) frame by frame.

// uttLog records a leg's speech events and utterances, in the order they
// were reported.
type uttLog struct {
	speechLog
	mu    sync.Mutex
	order []string // "started", "stopped", "barge_in", "utterance"
	utts  []Utterance
}

func (u *uttLog) onSpeech(ev SpeechEvent) {
	u.speechLog.on(ev)
	u.mu.Lock()
	u.order = append(u.order, string(ev.Kind))
	u.mu.Unlock()
}

func (u *uttLog) onUtt(ut Utterance) {
	u.mu.Lock()
	u.order = append(u.order, "utterance")
	u.utts = append(u.utts, ut)
	u.mu.Unlock()
}

// wait waits for n utterances and returns them with the order of all
// callbacks.
func (u *uttLog) wait(t testing.TB, n int) ([]Utterance, []string) {
	t.Helper()
	agenttest.Poll(t, testWait, "utterances", func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.utts) >= n
	})
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.utts), slices.Clone(u.order)
}

// uttDuration is the length of an utterance's PCM.
func uttDuration(u Utterance) time.Duration { return samplesDuration(len(u.PCM)) }

// uttBound is how far an utterance's length may be from pre-roll + burst +
// tail: where the level comes from decoded audio, the codec smears each
// edge of a burst by up to a frame.
const uttBound = 2 * frameDuration

// checkUtterance checks u against the speech events it follows and the
// burst of tone (n frames, after at least preRoll of silence) it holds.
func checkUtterance(t *testing.T, u Utterance, started, stopped SpeechEvent, n int) {
	t.Helper()
	want := preRoll + time.Duration(n)*frameDuration + utteranceTail
	d := uttDuration(u)
	t.Logf("utterance %v (want %v ± %v), pre-roll %v, speech %v", d, want, uttBound, u.PreRoll, u.End.Sub(u.Start))
	switch {
	case u.Rate != 16000 || u.Truncated:
		t.Fatalf("rate %d truncated %v", u.Rate, u.Truncated)
	case !u.Start.Equal(started.At) || !u.End.Equal(stopped.At):
		t.Fatalf("utterance %v–%v, speech %v–%v", u.Start, u.End, started.At, stopped.At)
	case u.PreRoll != preRoll:
		t.Fatalf("pre-roll %v, want %v", u.PreRoll, preRoll)
	case d < want-uttBound || d > want+uttBound:
		t.Fatalf("utterance of %v, want %v ± %v", d, want, uttBound)
	}
	// The pre-roll is (nearly) silent, the burst is the tone (a 10000
	// amplitude sine: RMS 7071).
	pre := int(uttRate * (preRoll - frameDuration) / time.Second)
	body := u.PCM[pre+2*uttRate/50 : pre+(n-1)*uttRate/50]
	if q, l := rms(u.PCM[:pre-uttRate/50]), rms(body); q > 300 || l < 5000 || l > 9000 {
		t.Fatalf("pre-roll RMS %.0f, speech RMS %.0f", q, l)
	}
}

// Two bursts of tone in silence (frames): 0-19 quiet, 20-44 tone (0.5 s),
// 45-114 quiet, 115-154 tone (0.8 s), 155-224 quiet.
var uttParts = []int{20, 25, 70, 40, 70}

// uttHangover is TestUtterance's: the speech ends after 50 quiet frames, or
// when the client's packets stop for 1.2 s (a stall of the sender on a
// loaded machine must not end a speech early: the default ends it after
// 0.6 s).
const uttHangover = time.Second

// TestUtterance: a pion client speaks two bursts with a pause; OnUtterance
// gets one Utterance per burst, after the stopped event, whose Start and
// End are the speech events' At, with 300 ms of pre-roll and the hangover
// (1 s) trimmed to 100 ms: burst + 400 ms ± 40 ms. Decoding is paid only during
// speech (plus the pre-roll at the onset), or not at all where the level
// decoder decodes every frame anyway (no audio level extension, Opus
// agent).
func TestUtterance(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		level bool // the client sends the RFC 6464 extension
		f     Format
	}{
		{"audio_level", true, FormatOpus()},
		{"decode", false, FormatOpus()},
		{"pcm_agent", false, FormatPCM(16000)},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEngine(t, testConfig())
			ul := &uttLog{}
			cl, leg, _ := connectLeg(t, e, clientOpts{audioLevel: c.level},
				LegOptions{AgentFormat: c.f, VAD: VAD{Hangover: uttHangover}, OnSpeech: ul.onSpeech, OnUtterance: ul.onUtt})
			opus := toneAndSilence(t, uttParts...)
			var sent []time.Time
			if c.level {
				frames := make([]rtpFrame, 0, len(opus))
				for part, n := range uttParts {
					for range n {
						lv := quiet
						if part%2 == 1 {
							lv = loud
						}
						frames = append(frames, rtpFrame{payload: opus[len(frames)], level: lv})
					}
				}
				sent = cl.sendRTP(frames)
			} else {
				sent = cl.sendSamples(opus)
			}
			utts, order := ul.wait(t, 2)
			evs := ul.events()
			if want := []string{"started", "stopped", "utterance", "started", "stopped", "utterance"}; !slices.Equal(order, want) {
				for _, ev := range evs {
					t.Logf("%s at %v", ev.Kind, ev.At.Sub(sent[0]))
				}
				t.Fatalf("callbacks %v, want %v", order, want)
			}
			checkUtterance(t, utts[0], evs[0], evs[1], uttParts[1])
			checkUtterance(t, utts[1], evs[2], evs[3], uttParts[3])

			_ = leg.Close() // the counters stand still
			decodes := leg.stats.speechDecodes.Load()
			// Per burst: the onset's 18 frames (pre-roll and MinSpeech),
			// the rest of the burst, and the hangover's 50 quiet frames
			// (with decoded levels, the codec may smear each edge by a
			// frame).
			most := uint64(0)
			for _, n := range []int{uttParts[1], uttParts[3]} {
				most += uint64(18 + n - 3 + int(uttHangover/frameDuration))
				if !c.level {
					most += 2
				}
			}
			t.Logf("%d of %d frames decoded at 16 kHz (speech: at most %d)", decodes, len(opus), most)
			if c.level || !c.f.IsOpus() {
				if decodes == 0 || decodes > most {
					t.Fatalf("%d decodes, want 1..%d", decodes, most)
				}
			} else if st := leg.Stats(); decodes != st.FramesIn {
				// The level decoder's samples are the utterance's: each
				// frame is decoded once.
				t.Fatalf("%d decodes of %d frames", decodes, st.FramesIn)
			}
		})
	}
}

// TestUtteranceNoDecode: without OnUtterance, a client that sends the
// audio level extension costs no decoding at all, speech or not.
func TestUtteranceNoDecode(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	sl := &speechLog{}
	c, leg, _ := connectLeg(t, e, clientOpts{audioLevel: true}, LegOptions{AgentFormat: FormatOpus(), OnSpeech: sl.on})
	opus := toneAndSilence(t, 5, 20, 25)
	frames := make([]rtpFrame, len(opus))
	for i, p := range opus {
		frames[i] = rtpFrame{payload: p, level: quiet}
		if i >= 5 && i < 25 {
			frames[i].level = loud
		}
	}
	c.sendRTP(frames)
	sl.waitKinds(t, SpeechStarted, SpeechStopped)
	if n := leg.stats.speechDecodes.Load(); n != 0 {
		t.Fatalf("%d frames decoded", n)
	}
}

// TestUtteranceTrackEnds: a leg closed mid-speech still hands the
// utterance over, after stopped and before StateClosed; its pre-roll is
// what the visitor had sent before the onset (200 ms).
func TestUtteranceTrackEnds(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	ul := &uttLog{}
	var closedFirst bool
	var rec *recorder
	var mu sync.Mutex
	onUtt := func(u Utterance) {
		mu.Lock()
		closedFirst = rec.has(StateClosed)
		mu.Unlock()
		ul.onUtt(u)
	}
	// A long hangover: the speech is still on when the leg closes.
	c, leg, r := connectLeg(t, e, clientOpts{audioLevel: true}, LegOptions{AgentFormat: FormatOpus(),
		VAD: VAD{Hangover: 5 * time.Second}, OnSpeech: ul.onSpeech, OnUtterance: onUtt})
	mu.Lock()
	rec = r
	mu.Unlock()
	opus := toneAndSilence(t, 10, 30)
	frames := make([]rtpFrame, len(opus))
	for i, p := range opus {
		frames[i] = rtpFrame{payload: p, level: quiet}
		if i >= 10 {
			frames[i].level = loud
		}
	}
	c.sendRTP(frames)
	agenttest.Poll(t, testWait, "every mic frame", func() bool { return leg.Stats().FramesIn >= uint64(len(opus)) })
	_ = leg.Close()
	utts, order := ul.wait(t, 1)
	evs := ul.events()
	mu.Lock()
	defer mu.Unlock()
	u := utts[0]
	switch {
	case !slices.Equal(order, []string{"started", "stopped", "utterance"}):
		t.Fatalf("callbacks %v", order)
	case closedFirst:
		t.Fatal("utterance after StateClosed")
	case !u.Start.Equal(evs[0].At) || !u.End.Equal(evs[1].At) || u.Truncated:
		t.Fatalf("utterance %+v, events %+v", u, evs)
	case u.PreRoll != 200*time.Millisecond || uttDuration(u) != 800*time.Millisecond:
		// No tail: nothing came after the last loud frame.
		t.Fatalf("pre-roll %v, %v of PCM, want 200 ms and 800 ms", u.PreRoll, uttDuration(u))
	}
}

// capturePath is an Opus agent's audio path with VAD and the utterance
// capture (its maximum lowered to 1 s), fed frame by frame through
// deliver, with levels from the audio level extension.
type capturePath struct {
	t0         time.Time
	a          *audioPath
	tone       [][]byte
	hush       []byte
	ts         uint64
	utterances []Utterance
}

func newCapturePath(t testing.TB) *capturePath {
	t.Helper()
	p := &capturePath{t0: time.Now(), a: &audioPath{}, tone: realOpus(t, 50), hush: toneAndSilence(t, 1)[0]}
	if err := p.a.init(testConfig(), FormatOpus(), nil, &lifecycle{}, discardLogger()); err != nil {
		t.Fatal(err)
	}
	if err := p.a.initSpeech(VAD{}, nil, func(u Utterance) { p.utterances = append(p.utterances, u) }); err != nil {
		t.Fatal(err)
	}
	p.a.startSpeech()
	p.a.sp.cap.max = uttRate
	return p
}

// send delivers n frames of tone (voiced) or silence, after lost frames
// that never came.
func (p *capturePath) send(n int, voiced bool, lost int) {
	p.ts += uint64(lost) * frameTicks
	for i := range n {
		f := micFrame{Seq: p.ts / frameTicks, TS: p.ts, Arrival: p.t0.Add(time.Duration(p.ts/frameTicks+1) * frameDuration),
			Payload: p.hush, level: 1 + quiet, LostBefore: lost}
		if voiced {
			f.Payload, f.level = p.tone[i%len(p.tone)], 1+loud
		}
		p.a.deliver([]micFrame{f})
		p.ts += frameTicks
		lost = 0
	}
}

// check fails t unless the utterances have these lengths, the first n-1
// truncated, each starting where the last ended.
func (p *capturePath) check(t *testing.T, want ...time.Duration) []Utterance {
	t.Helper()
	utts := p.utterances
	if len(utts) != len(want) {
		t.Fatalf("%d utterances, want %d", len(utts), len(want))
	}
	for i, u := range utts {
		if d := uttDuration(u); d != want[i] || u.Truncated != (i < len(want)-1) || (i > 0 && !u.Start.Equal(utts[i-1].End)) {
			t.Fatalf("utterance %d: %v truncated %v, %v–%v, want %v", i, d, u.Truncated, u.Start, u.End, want[i])
		}
	}
	if utts[0].PreRoll != 200*time.Millisecond || !utts[0].Start.Equal(p.t0.Add(10*frameDuration)) {
		t.Fatalf("pre-roll %v, start %v", utts[0].PreRoll, utts[0].Start.Sub(p.t0))
	}
	for _, u := range utts[1:] {
		if u.PreRoll != 0 {
			t.Fatalf("a continuation with pre-roll %v", u.PreRoll)
		}
	}
	return utts
}

// TestUtteranceCapture: a speech longer than the maximum comes as
// truncated pieces that continue each other, and frames lost in the middle
// of a speech are silence in their place. A speech that reaches the
// maximum in a pause is cut there if it goes on, and comes whole if it
// ends in it. (The maximum is lowered to 1 s here; MaxUtterance is 30 s.)
func TestUtteranceCapture(t *testing.T) {
	t.Parallel()
	if maxUttSamples != 30*16000 {
		t.Fatalf("maxUttSamples %d", maxUttSamples)
	}
	t.Run("long", func(t *testing.T) {
		p := newCapturePath(t)
		p.send(10, false, 0) // 200 ms of pre-roll
		p.send(60, true, 0)  // 1.2 s of speech,
		p.send(60, true, 3)  // 60 ms lost, 1.2 s of speech
		// 2.5 s in, a frame past the maximum but in the hangover: the
		// last piece ends with the speech.
		p.send(30, false, 0)
		// 200 ms + 2.46 s + 100 ms = 2.76 s: 1 s, 1 s, 0.76 s.
		utts := p.check(t, time.Second, time.Second, 760*time.Millisecond)
		// The lost frames: 60 ms of silence 1.4 s into the speech (0.4 s
		// into the second piece), between tone on both sides.
		lost := utts[1].PCM[uttRate*4/10 : uttRate*46/100]
		if r := rms(lost); r != 0 {
			t.Fatalf("lost frames at RMS %.0f", r)
		}
		if rms(utts[1].PCM[uttRate*3/10:uttRate*39/100]) < 5000 || rms(utts[1].PCM[uttRate*48/100:uttRate*6/10]) < 5000 {
			t.Fatal("no tone around the lost frames")
		}
	})
	t.Run("pause", func(t *testing.T) {
		p := newCapturePath(t)
		p.send(10, false, 0)
		p.send(35, true, 0)  // to 0.9 s
		p.send(10, false, 0) // a pause to 1.1 s: the maximum is reached in it
		p.send(20, true, 0)  // the speech goes on: cut at 1 s, in the pause
		p.send(30, false, 0)
		// 200 ms + 0.7 + 0.2 + 0.4 s + 100 ms = 1.6 s.
		utts := p.check(t, time.Second, 600*time.Millisecond)
		if q, l := rms(utts[0].PCM[uttRate*92/100:]), rms(utts[1].PCM[uttRate*12/100:uttRate*48/100]); q > 300 || l < 5000 {
			t.Fatalf("RMS %.0f at the cut, %.0f after the pause", q, l)
		}
		if d := utts[0].End.Sub(p.t0); d != time.Second {
			t.Fatalf("cut at %v, want 1 s (the PCM begins with the first frame)", d)
		}

		// A speech that ends in the pause it reaches the maximum in
		// comes whole, its tail clamped to the maximum.
		p = newCapturePath(t)
		p.send(10, false, 0)
		p.send(40, true, 0) // to 1 s: + 100 ms of tail is past it
		p.send(30, false, 0)
		p.check(t, time.Second)
	})
}

// BenchmarkUtterance is the cost of the utterance capture per 20 ms mic
// frame, on the mic reader goroutine, with OnUtterance set. speech_*: the
// visitor speaks in every frame (VAD, the ring and the capture; an
// Utterance is handed over every MaxUtterance); audio_level: the level
// comes from the RFC 6464 extension, so the capture decodes each frame;
// decode: no extension, the level decoder's samples are reused.
// quiet_audio_level: no speech, only the ring's copy of the packet. onset:
// one speech start (the pre-roll ring decoded, per onset, not per frame).
func BenchmarkUtterance(b *testing.B) {
	t0 := time.Now()
	tone := voipOpus(b, 50)
	frame := func(i int, level uint8) micFrame {
		return micFrame{Seq: uint64(i), TS: uint64(i) * frameTicks, Arrival: t0.Add(time.Duration(i+1) * frameDuration),
			Payload: tone[i%len(tone)], level: level}
	}
	// step is deliver's work on one frame, without OnMicFrame.
	step := func(a *audioPath, f *micFrame) {
		lv := a.extLevel(f)
		var pcm []int16
		if !lv.ok {
			lv, pcm = a.decodeLevel(f)
		}
		a.captureFrame(f, pcm, lv)
		if lv.ok {
			a.listen(f, lv)
		}
	}
	for _, c := range []struct {
		name  string
		level uint8
	}{{"speech_audio_level", 1 + loud}, {"speech_decode", 0}, {"quiet_audio_level", 1 + quiet}} {
		b.Run(c.name, func(b *testing.B) {
			a := newCapturePath(b).a
			a.sp.cap.max = maxUttSamples
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				f := frame(i, c.level)
				step(a, &f)
			}
		})
	}
	b.Run("onset", func(b *testing.B) {
		a := newCapturePath(b).a
		a.sp.cap.max = maxUttSamples
		for i := range 20 { // 15 quiet, 3 loud: speech starts
			f := frame(i, 1+quiet)
			if i >= 15 {
				f.level = 1 + loud
			}
			step(a, &f)
		}
		if !a.sp.cap.active {
			b.Fatal("no speech")
		}
		ev := SpeechEvent{Kind: SpeechStarted, At: t0}
		b.ReportAllocs()
		for b.Loop() {
			c := a.sp.cap
			c.active = false
			for i := range c.n { // as when the level came from the extension
				c.at(i).decoded = false
			}
			a.beginUtterance(ev)
		}
	})
}
