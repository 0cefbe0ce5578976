package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/cmd/internal/benchproc"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media/speech"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// BenchmarkVoiceToVoice measures a voice call through the offline speech
// pipeline as the visitor lives it: Parley in-process with the demo echo
// agent (text only: "You said: <text>."), pocketsphinx hearing and flite
// speaking, and a real pion peer as the visitor's browser. Each iteration
// is one turn: the visitor says a phrase (flite's slt voice) and the
// benchmark waits until the spoken reply has finished playing, so turns
// never overlap. Per turn it measures, on the visitor's side, to the
// first packet of the reply received: from the last frame of the phrase
// sent (e2e), and from its last voiced frame sent (voiced: flite's
// phrase ends in quiet, which the VAD already counts towards its
// hangover; tail is that quiet). It reads the server's breakdown from its
// debug line
// "speech: voice turn timing" (turn: end of turn detection, the VAD's
// hangover included; stt; store; agent; tts: first sentence synthesized
// and encoded; total: the VAD's end of speech to the first reply audio
// handed to the leg). The word error rate is of what the pipeline heard
// (the WebSocket's message via voice) against the phrase.
//
//	make bench-speech-call   (go test -run '^$' -bench VoiceToVoice -benchtime 20x ./cmd/parley/)
//
// The sub-benchmarks differ in the demo widget's voice.vad.hangover_ms:
// the default 400 ms and 200 ms, to show what end-of-turn detection costs.
func BenchmarkVoiceToVoice(b *testing.B) {
	for _, ms := range []int{configs.DefaultVADHangoverMS, 200} {
		b.Run(fmt.Sprintf("hangover=%dms", ms), func(b *testing.B) { voiceToVoice(b, ms) })
	}
}

// replyQuiet is how long no agent audio must arrive for a spoken reply to
// count as finished. The echo agent's reply is one sentence, queued whole,
// so its packets come every 20 ms to its end.
const replyQuiet = 300 * time.Millisecond

func voiceToVoice(b *testing.B, hangoverMS int) {
	_, f := signalingtest.RequireSpeech(b)
	// Phrases flite's slt voice says and pocketsphinx hears exactly
	// (docs/BENCHMARKS.md, "Offline speech engines"), said in turn.
	phrases := []string{"what are your opening hours", "hello can you hear me", "where is my order", "tell me a joke"}
	said := make([]phraseAudio, len(phrases))
	for i, p := range phrases {
		said[i] = sayPhrase(b, f, p)
		b.Logf("%q: %d ms of audio, voiced to %d ms", p, 20*len(said[i].frames), 20*(said[i].voiced+1))
	}
	e := startEnv(b, withSpeech, func(c *configs.Config) { c.Widgets[0].Voice.VAD.HangoverMS = hangoverMS })
	s, ws, call := e.voiceSession()
	m := startMic(b, call)
	defer m.stop()

	// One turn first, not counted: the first recognition reads the
	// model from disk if no earlier run left it in the page cache.
	voiceTurn(b, e, ws, call, m, phrases[0], said[0])
	var turns []voiceTurnResult
	for b.Loop() {
		i := len(turns) % len(phrases)
		turns = append(turns, voiceTurn(b, e, ws, call, m, phrases[i], said[i]))
	}

	// Every phrase was one utterance, one visitor turn (a hangover
	// shorter than a pause between words would split it).
	voiceTurns := 0
	for _, msg := range e.History(s) {
		if msg["role"] == "visitor" && msg["via"] == "voice" {
			voiceTurns++
		}
	}
	if want := len(turns) + 1; voiceTurns != want {
		b.Fatalf("%d voice turns logged for %d phrases said: a phrase was split", voiceTurns, want)
	}
	reportVoiceTurns(b, turns)
}

// phraseAudio is a phrase as the visitor's microphone sends it: its 20 ms
// Opus frames, and the index of the last one the VAD counts as voiced
// (flite ends a phrase with a few hundred ms of quiet).
type phraseAudio struct {
	frames [][]byte
	voiced int
}

// sayPhrase is phrase spoken by flite (signalingtest.Say), with its last
// voiced frame: the last above the VAD's default threshold, by the level
// formula of media's decode path (RMS in dBov) on flite's own PCM.
func sayPhrase(b *testing.B, f *speech.Flite, phrase string) phraseAudio {
	a, err := f.Synthesize(context.Background(), phrase)
	if err != nil {
		b.Fatalf("say %q: %v", phrase, err)
	}
	p := phraseAudio{frames: signalingtest.Encode(b, a), voiced: -1}
	spf := a.Rate / 50
	for i := 0; i*spf < len(a.Samples); i++ {
		var sum float64
		fr := a.Samples[i*spf : min((i+1)*spf, len(a.Samples))]
		for _, v := range fr {
			sum += float64(v) * float64(v)
		}
		if 10*math.Log10(sum/float64(len(fr))/(32768*32768)) >= configs.DefaultVADThresholdDBov {
			p.voiced = i
		}
	}
	if p.voiced < 0 || p.voiced >= len(p.frames) {
		b.Fatalf("%q: last voiced frame %d of %d", phrase, p.voiced, len(p.frames))
	}
	return p
}

// voiceTurnResult is one measured turn: e2e from the last frame of the
// phrase sent, voiced from its last voiced frame sent, to the reply's
// first packet received. The stages are the server's, in ms, missing
// (timed false) for a turn the pipeline did not transcribe.
type voiceTurnResult struct {
	e2e, voiced time.Duration
	tail        time.Duration // the phrase's quiet end: last voiced frame sent → last frame sent
	timed       bool
	timing      voiceTurnTiming
	wer         float64
}

// voiceTurnTiming is the server's "speech: voice turn timing" log line.
type voiceTurnTiming struct {
	Msg       string `json:"msg"`
	MessageID string `json:"message_id"`
	TurnMS    int64  `json:"turn_ms"`
	STTMS     int64  `json:"stt_ms"`
	StoreMS   int64  `json:"store_ms"`
	AgentMS   int64  `json:"agent_ms"`
	TTSMS     int64  `json:"tts_ms"`
	TotalMS   int64  `json:"total_ms"`
}

// voiceTurn says phrase (its frames) on the call and waits for the spoken
// reply to finish playing.
func voiceTurn(b *testing.B, e *env, ws *signalingtest.WSClient, call *signalingtest.VoiceClient, m *mic, phrase string, audio phraseAudio) voiceTurnResult {
	b.Helper()
	from := int(call.Received.Load())
	m.say <- audio

	// What the pipeline heard, and the agent's reply to it.
	var heard signalingtest.Frame
	for done := false; !done; {
		fr := ws.Next()
		switch fr.Str("type") {
		case "message":
			if fr.Str("role") == "visitor" && fr.Str("via") == "voice" {
				heard = fr
			}
		case "done":
			done = heard != nil && fr.Str("reply_to") == heard.Str("message_id")
		}
	}
	var sent phraseSent
	select {
	case sent = <-m.ended:
	case <-time.After(30 * time.Second):
		b.Fatal("the phrase was not sent")
	}
	agenttest.Poll(b, 30*time.Second, "the reply's first audio", func() bool { return int(call.Received.Load()) > from })
	arrivals := call.Arrivals(from)
	if len(arrivals) == 0 {
		b.Fatalf("agent audio arrived past the %d packets the client keeps", from)
	}
	if !arrivals[0].After(sent.end) {
		b.Fatalf("agent audio arrived %v before the end of the phrase: turns overlap", sent.end.Sub(arrivals[0]))
	}
	r := voiceTurnResult{e2e: arrivals[0].Sub(sent.end), voiced: arrivals[0].Sub(sent.voiced), tail: sent.end.Sub(sent.voiced),
		wer: speech.WordErrorRate(phrase, heard.Str("body"))}
	agenttest.Poll(b, 60*time.Second, "the reply played to its end", func() bool {
		a := call.Arrivals(from)
		return len(a) > 0 && time.Since(a[len(a)-1]) >= replyQuiet
	})
	if heard.Str("reason") != "" {
		b.Logf("%q was not transcribed: %s", phrase, heard.Str("reason"))
		return r // the pipeline times heard turns only
	}
	agenttest.Poll(b, 10*time.Second, "the turn's timing line", func() bool {
		r.timing, r.timed = turnTiming(e.logs.String(), heard.Str("message_id"))
		return r.timed
	})
	return r
}

// turnTiming finds the timing line of the voice turn id in logs.
func turnTiming(logs, id string) (voiceTurnTiming, bool) {
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, "voice turn timing") || !strings.Contains(line, id) {
			continue
		}
		var t voiceTurnTiming
		if json.Unmarshal([]byte(line), &t) == nil && t.Msg == "speech: voice turn timing" && t.MessageID == id {
			return t, true
		}
	}
	return voiceTurnTiming{}, false
}

// reportVoiceTurns reports p50, p95, p99 and mean of the end-to-end
// latencies and of each stage (with 20 turns p95 is the second slowest,
// p99 the slowest; the field quotes p50 and p95), the part of voiced
// outside the server's total (outside: loopback both ways, the jitter
// buffer and the playout's pacing), and the word error rate.
func reportVoiceTurns(b *testing.B, turns []voiceTurnResult) {
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	var e2e, voiced, tail, outside []time.Duration
	stages := map[string][]time.Duration{}
	order := []string{"turn", "stt", "store", "agent", "tts", "total"}
	wer, exact := 0.0, 0
	for _, t := range turns {
		e2e, voiced, tail = append(e2e, t.e2e), append(voiced, t.voiced), append(tail, t.tail)
		wer += t.wer
		if t.wer == 0 {
			exact++
		}
		if !t.timed {
			continue
		}
		tt := t.timing
		for i, v := range []int64{tt.TurnMS, tt.STTMS, tt.StoreMS, tt.AgentMS, tt.TTSMS, tt.TotalMS} {
			stages[order[i]] = append(stages[order[i]], ms(v))
		}
		outside = append(outside, t.voiced-ms(tt.TotalMS))
	}
	summary(b, e2e, "e2e-")
	summary(b, voiced, "voiced-")
	summary(b, tail, "tail-")
	for _, st := range order {
		summary(b, stages[st], st+"-")
	}
	summary(b, outside, "outside-")
	b.ReportMetric(wer/float64(len(turns)), "wer-mean")
	b.ReportMetric(float64(exact)/float64(len(turns)), "heard-exact")
}

// summary reports p50, p95, p99 (nearest rank) and mean of ds in milliseconds.
func summary(b *testing.B, ds []time.Duration, prefix string) {
	if len(ds) == 0 {
		b.Fatalf("%s: no samples", prefix)
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(agenttest.Percentile(ds, 0.50)), prefix+"p50-ms")
	b.ReportMetric(ms(agenttest.Percentile(ds, 0.95)), prefix+"p95-ms")
	b.ReportMetric(ms(agenttest.Percentile(ds, 0.99)), prefix+"p99-ms")
	b.ReportMetric(ms(sum/time.Duration(len(ds))), prefix+"mean-ms")
}

// mic plays the visitor's microphone: a frame every 20 ms, silence unless
// it was given a phrase to say, with no gap between them, as a browser
// sends. Its goroutine is the benchmark's, ended by stop.
type mic struct {
	say   chan phraseAudio // a phrase to send next
	ended chan phraseSent  // when each phrase was sent
	quit  chan struct{}
	done  chan struct{}
}

func startMic(b *testing.B, call *signalingtest.VoiceClient) *mic {
	m := &mic{say: make(chan phraseAudio, 1), ended: make(chan phraseSent, 1), quit: make(chan struct{}), done: make(chan struct{})}
	silence := signalingtest.Quiet(b, 1)[0]
	go m.run(b, call, silence) // owned: stop
	return m
}

// phraseSent is when a phrase's last voiced frame and its last frame were
// sent.
type phraseSent struct{ voiced, end time.Time }

// stop ends the microphone and waits for its goroutine.
func (m *mic) stop() {
	close(m.quit)
	<-m.done
}

// run sends frame i at i × 20 ms after the first (late frames go at once
// until the schedule is caught up, as signalingtest.Paced does).
func (m *mic) run(b *testing.B, call *signalingtest.VoiceClient, silence []byte) {
	defer close(m.done)
	begin := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var (
		phrase phraseAudio
		next   int // of phrase.frames
		sent   phraseSent
	)
	for i := 0; ; i++ {
		if !benchproc.Pace(timer, begin.Add(time.Duration(i)*20*time.Millisecond), m.quit) {
			return
		}
		if next == len(phrase.frames) {
			select {
			case phrase = <-m.say:
				next = 0
			default:
			}
		}
		frame, at := silence, -1
		if next < len(phrase.frames) {
			frame, at = phrase.frames[next], next
			next++
		}
		if err := call.Track.WriteSample(signalingtest.SampleOf(frame)); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			b.Errorf("mic: write sample: %v", err)
			return
		}
		if at == phrase.voiced {
			sent.voiced = time.Now()
		}
		if at >= 0 && next == len(phrase.frames) {
			sent.end = time.Now()
			select {
			case m.ended <- sent:
			case <-m.quit:
				return
			}
		}
	}
}
