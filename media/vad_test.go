package media

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	pmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/thesyncim/gopus"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// Voice activity and barge-in with real pion peers. The client sends in
// real time (one packet per 20 ms), so that event times can be checked
// against when it sent.

// slack bounds how late (wall clock) a packet or an event may be on a
// loaded 2-core machine under -race.
const slack = 60 * time.Millisecond

// Levels (RFC 6464: -dBov) on either side of the default -45 dBov.
const (
	loud  = 30
	quiet = 60
)

// rtpFrame is one packet for sendRTP.
type rtpFrame struct {
	payload []byte
	level   int // RFC 6464 level; -1: no extension
}

// levels makes n packets at level, with distinct fake payloads.
func levels(n, level int) []rtpFrame {
	out := make([]rtpFrame, n)
	for i, p := range fakeOpus(n) {
		out[i] = rtpFrame{payload: p, level: level}
	}
	return out
}

// levelExtID is the id the client's sender negotiated for the audio level.
func (c *client) levelExtID() uint8 {
	for _, e := range c.sender.GetParameters().HeaderExtensions {
		if e.URI == sdp.AudioLevelURI {
			return uint8(e.ID)
		}
	}
	return 0
}

// sendRTP sends frames as RTP in real time (one per 20 ms) with their
// audio level, and returns when each was about to be written.
func (c *client) sendRTP(frames []rtpFrame) []time.Time {
	c.t.Helper()
	id := c.levelExtID()
	pkts := make([]*rtp.Packet, len(frames))
	for i, f := range frames {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: c.seq, Timestamp: c.ts}, Payload: f.payload}
		if f.level >= 0 && id != 0 {
			b, err := rtp.AudioLevelExtension{Level: uint8(f.level)}.Marshal()
			if err != nil {
				c.t.Fatal(err)
			}
			if err := pkt.Header.SetExtension(id, b); err != nil {
				c.t.Fatal(err)
			}
		}
		c.seq++
		c.ts += opusFrameTicks
		pkts[i] = pkt
	}
	return c.paced(len(pkts), func(i int) error { return c.rtpTrack.WriteRTP(pkts[i]) })
}

// sendSamples sends Opus packets in real time on the sample track and
// returns when each was about to be written.
func (c *client) sendSamples(frames [][]byte) []time.Time {
	c.t.Helper()
	return c.paced(len(frames), func(i int) error {
		return c.track.WriteSample(pmedia.Sample{Data: frames[i], Duration: frameDuration})
	})
}

// paced calls write for 0..n-1 in real time, one every 20 ms as a browser
// sends, and returns when each was about to be written (before: the leg
// may read a packet before its write returns).
func (c *client) paced(n int, write func(i int) error) []time.Time {
	c.t.Helper()
	tick := time.NewTicker(frameDuration)
	defer tick.Stop()
	sent := make([]time.Time, 0, n)
	for i := range n {
		if i > 0 {
			<-tick.C
		}
		sent = append(sent, time.Now())
		if err := write(i); err != nil {
			c.t.Fatal(err)
		}
	}
	return sent
}

// speechLog records a leg's speech events, when each was reported and,
// once watching, what the client had received and the leg had sent then.
type speechLog struct {
	mu        sync.Mutex
	evs       []SpeechEvent
	got       []time.Time
	clientGot []int    // c.received() when the event was reported
	framesOut []uint64 // leg.Stats().FramesOut then
	c         *client
	leg       *Leg
}

func (s *speechLog) on(ev SpeechEvent) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evs = append(s.evs, ev)
	s.got = append(s.got, now)
	got, out := -1, uint64(0)
	if s.c != nil {
		got, out = s.c.received(), s.leg.Stats().FramesOut
	}
	s.clientGot = append(s.clientGot, got)
	s.framesOut = append(s.framesOut, out)
}

// watch makes on record c's and leg's counters.
func (s *speechLog) watch(c *client, leg *Leg) {
	s.mu.Lock()
	s.c, s.leg = c, leg
	s.mu.Unlock()
}

func (s *speechLog) events() []SpeechEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.evs)
}

// reported is when event i was reported.
func (s *speechLog) reported(i int) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[i]
}

// counters are what the client had received and the leg had sent when
// event i was reported.
func (s *speechLog) counters(i int) (clientGot int, framesOut uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientGot[i], s.framesOut[i]
}

// waitKinds waits for n events and checks their kinds.
func (s *speechLog) waitKinds(t *testing.T, want ...SpeechKind) []SpeechEvent {
	t.Helper()
	agenttest.Poll(t, testWait, "speech events", func() bool { return len(s.events()) >= len(want) })
	evs := s.events()
	got := make([]SpeechKind, len(evs))
	for i, ev := range evs {
		got[i] = ev.Kind
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	return evs
}

// within fails t unless at is in [from, from+d].
func within(t *testing.T, what string, at, from time.Time, d time.Duration) {
	t.Helper()
	if at.Before(from) || at.After(from.Add(d)) {
		t.Fatalf("%s at %+v after the reference, want in [0, %v]", what, at.Sub(from), d)
	}
}

// TestVADAudioLevel: with the RFC 6464 extension negotiated, speech starts
// after MinSpeech of loud packets (a 40 ms blip does not count), a 200 ms
// pause inside it does not end it, Hangover of quiet ends it, and so does
// the visitor going silent (no packets at all).
func TestVADAudioLevel(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	sl := &speechLog{}
	c, leg, rec := connectLeg(t, e, clientOpts{audioLevel: true}, LegOptions{AgentFormat: FormatOpus(), OnSpeech: sl.on})
	if c.levelExtID() == 0 {
		t.Fatal("audio level extension not negotiated")
	}
	var frames []rtpFrame
	for _, part := range [][]rtpFrame{
		levels(10, quiet), levels(2, loud), levels(10, quiet), // 0-21: a blip
		levels(25, loud), levels(10, quiet), // 22-46 speech, 47-56 a pause
		levels(14, loud), levels(1, 12), levels(30, quiet), // 57-71 speech (peak -12 dBov at 71), 72-101 quiet
	} {
		frames = append(frames, part...)
	}
	sent := c.sendRTP(frames)
	evs := sl.waitKinds(t, SpeechStarted, SpeechStopped)
	for _, ev := range evs {
		if ev.Source != SourceAudioLevel {
			t.Fatalf("source %q", ev.Source)
		}
	}
	// started: the onset is the start of frame 22; it is known at frame
	// 24 (60 ms).
	within(t, "started", evs[0].At, sent[22].Add(-frameDuration), slack)
	within(t, "started reported", sl.reported(0), sent[24], slack)
	if evs[0].LevelDBov != -loud || evs[1].LevelDBov != -12 {
		t.Fatalf("levels %v, %v", evs[0].LevelDBov, evs[1].LevelDBov)
	}
	// stopped: the end of frame 71, known 400 ms (20 frames) later.
	within(t, "stopped", evs[1].At, sent[71], slack)
	within(t, "stopped reported", sl.reported(1), sent[91], slack)

	// The visitor stops sending mid-speech: the speech ends by the clock,
	// Hangover (plus idleSlack) after the last loud packet.
	sent = c.sendRTP(levels(5, loud))
	evs = sl.waitKinds(t, SpeechStarted, SpeechStopped, SpeechStarted, SpeechStopped)
	within(t, "started", evs[2].At, sent[0].Add(-frameDuration), slack)
	within(t, "stopped", evs[3].At, sent[4], slack)
	within(t, "stopped reported", sl.reported(3), sent[4].Add(defaultHangover), idleSlack+slack)
	if rec.numFrames() != len(frames)+5 {
		t.Fatalf("mic frames %d, want %d", rec.numFrames(), len(frames)+5)
	}
	if st := leg.Stats(); st.BargeIns != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// toneAndSilence encodes silence, tone, silence (counts of 20 ms frames)
// as one Opus stream, as a browser without the extension would send it.
func toneAndSilence(t testing.TB, counts ...int) [][]byte {
	t.Helper()
	enc, err := gopus.NewEncoder(gopus.EncoderConfig{SampleRate: 48000, Channels: 1, Application: gopus.ApplicationVoIP})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	buf := make([]byte, 1500)
	silence := make([]int16, 960)
	for part, n := range counts {
		for i := range n {
			pcm := silence
			if part%2 == 1 {
				pcm = sine(960, 48000, i*960)
			}
			k, err := enc.EncodeInt16(pcm, buf)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, append([]byte(nil), buf[:k]...))
		}
	}
	return out
}

// TestVADDecode: a client that does not offer the extension (the default
// pion client) gets speech events from the decoded audio, for an Opus
// agent (a decoder just for the level) and a PCM agent (the agent's
// decoded frames are measured).
func TestVADDecode(t *testing.T) {
	t.Parallel()
	for _, f := range []Format{FormatOpus(), FormatPCM(16000)} {
		t.Run(f.Codec, func(t *testing.T) {
			t.Parallel()
			e := newTestEngine(t, testConfig())
			sl := &speechLog{}
			c, leg, _ := connectLeg(t, e, clientOpts{}, LegOptions{AgentFormat: f, OnSpeech: sl.on})
			if c.levelExtID() != 0 {
				t.Fatal("audio level extension negotiated: want none")
			}
			sent := c.sendSamples(toneAndSilence(t, 10, 25, 30)) // tone: frames 10-34
			evs := sl.waitKinds(t, SpeechStarted, SpeechStopped)
			for _, ev := range evs {
				// A 10000-amplitude sine is -13.3 dBov.
				if ev.Source != SourceDecode || ev.LevelDBov < -16 || ev.LevelDBov > -10 {
					t.Fatalf("event %+v", ev)
				}
			}
			// The codec may smear an edge by a frame.
			within(t, "started", evs[0].At, sent[10].Add(-2*frameDuration), slack+frameDuration)
			within(t, "stopped", evs[1].At, sent[34], slack+frameDuration)
			agenttest.Poll(t, testWait, "every mic frame", func() bool { return leg.Stats().FramesIn >= 65 })
			if st := leg.Stats(); st.FramesIn != 65 || st.DecodeErrors != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// replyFrames makes n agent Opus frames tagged with reply r.
func replyFrames(r byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte{0xfc, r, byte(i), byte(i >> 8)}
	}
	return out
}

func play(leg *Leg, frames [][]byte) {
	for _, p := range frames {
		leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: p})
	}
}

// ofReply counts the payloads of reply r the client received.
func ofReply(c *client, r byte) int {
	n := 0
	for _, p := range c.payloads() {
		if len(p) > 1 && p[1] == r {
			n++
		}
	}
	return n
}

// bargeInLeg connects a client with the audio level extension to a leg
// with barge-in on, and starts its mic track. Its hangover is 1 s unless v
// sets one: a sender stalled longer than the hangover on a loaded machine
// is a visitor who stopped sending (wall-clock idle ends the speech), and
// would split one burst of speech in two.
func bargeInLeg(t *testing.T, v VAD) (*client, *Leg, *speechLog) {
	t.Helper()
	if v.Hangover == 0 {
		v.Hangover = time.Second
	}
	e := newTestEngine(t, testConfig())
	sl := &speechLog{}
	c, leg, _ := connectLeg(t, e, clientOpts{audioLevel: true}, LegOptions{AgentFormat: FormatOpus(), VAD: v, OnSpeech: sl.on})
	sl.watch(c, leg)
	c.sendRTP(levels(5, quiet))
	return c, leg, sl
}

// playReply plays reply 1, n frames, on leg and waits until the client
// has received playing frames: the reply is playing.
func playReply(t *testing.T, c *client, leg *Leg, n, playing int) {
	t.Helper()
	play(leg, replyFrames(1, n))
	agenttest.Poll(t, testWait, "the reply playing", func() bool { return c.received() >= playing })
}

// TestBargeIn: the visitor speaks over a long reply; once the speech has
// lasted BargeInMin the playout stops (at most a frame or two reach the
// client after the cut), barge_in says how much of the reply was sent,
// and the agent's next reply plays normally.
func TestBargeIn(t *testing.T) {
	t.Parallel()
	c, leg, sl := bargeInLeg(t, VAD{BargeIn: true})
	const long = 250 // 5 s
	playReply(t, c, leg, long, 25)

	sent := c.sendRTP(append(levels(30, loud), levels(25, quiet)...))
	evs := sl.waitKinds(t, SpeechStarted, SpeechBargeIn, SpeechStopped)
	cut := evs[1]
	// Frame 14 completes 300 ms of speech.
	within(t, "barge-in", cut.At, sent[14], slack)
	if cut.Source != SourceAudioLevel || cut.LevelDBov != -loud {
		t.Fatalf("barge-in %+v", cut)
	}

	play(leg, replyFrames(2, 10))
	agenttest.Poll(t, testWait, "the next reply", func() bool { return ofReply(c, 2) == 10 })
	clientAtCut, outAtCut := sl.counters(1)
	heard := int(cut.HeardMS / 20)
	st := leg.Stats()
	got := ofReply(c, 1)
	t.Logf("heard %d ms; reply frames: %d sent, %d at the client (%d when cut); barge-in %v after the visitor's onset",
		cut.HeardMS, heard, got, clientAtCut, cut.At.Sub(evs[0].At))
	switch {
	case cut.HeardMS%20 != 0 || heard < 25 || heard >= long:
		t.Fatalf("HeardMS %d", cut.HeardMS)
	case st.FramesOut != uint64(heard)+10 || outAtCut+1 < uint64(heard) || outAtCut > uint64(heard):
		// At the cut, the last frame taken may still be being written.
		t.Fatalf("frames out %d (%d at the cut), want %d + 10", st.FramesOut, outAtCut, heard)
	case got-clientAtCut > 2:
		t.Fatalf("%d reply frames reached the client after the cut", got-clientAtCut)
	case got < heard-1 || got > heard:
		t.Fatalf("client got %d reply frames, %d were sent", got, heard)
	case st.Dropped != uint64(long-heard) || st.BargeIns != 1:
		t.Fatalf("stats %+v", st)
	case cut.Dropped != long-heard:
		// The whole reply was queued before the cut: it dropped the rest.
		t.Fatalf("barge-in dropped %d frames, want %d", cut.Dropped, long-heard)
	}
}

// TestBargeInCough: 100 ms of sound over the reply is speech, but not a
// barge-in: the whole reply plays.
func TestBargeInCough(t *testing.T) {
	t.Parallel()
	c, leg, sl := bargeInLeg(t, VAD{BargeIn: true})
	const n = 100 // 2 s
	playReply(t, c, leg, n, 10)
	c.sendRTP(append(levels(5, loud), levels(25, quiet)...))
	sl.waitKinds(t, SpeechStarted, SpeechStopped)
	if _, out := sl.counters(0); out >= n {
		t.Fatalf("the reply had ended (%d frames out) when the cough started", out)
	}
	agenttest.Poll(t, testWait, "the whole reply", func() bool { return ofReply(c, 1) == n })
	sl.waitKinds(t, SpeechStarted, SpeechStopped)
	if st := leg.Stats(); st.Dropped != 0 || st.BargeIns != 0 || st.FramesOut != n {
		t.Fatalf("stats %+v", st)
	}
}

// TestBargeInNoAgentAudio: speech while nothing plays cuts nothing, and
// with barge-in off speech over the reply does not cut it either.
func TestBargeInNoAgentAudio(t *testing.T) {
	t.Parallel()
	t.Run("silent agent", func(t *testing.T) {
		t.Parallel()
		c, leg, sl := bargeInLeg(t, VAD{BargeIn: true})
		c.sendRTP(append(levels(30, loud), levels(25, quiet)...))
		sl.waitKinds(t, SpeechStarted, SpeechStopped)
		if st := leg.Stats(); st.BargeIns != 0 || st.FramesOut != 0 {
			t.Fatalf("stats %+v", st)
		}
		// The agent speaks after the visitor: it plays.
		play(leg, replyFrames(1, 10))
		agenttest.Poll(t, testWait, "the reply", func() bool { return ofReply(c, 1) == 10 })
	})
	t.Run("barge-in off", func(t *testing.T) {
		t.Parallel()
		c, leg, sl := bargeInLeg(t, VAD{})
		const n = 75
		playReply(t, c, leg, n, 5)
		c.sendRTP(append(levels(30, loud), levels(25, quiet)...))
		sl.waitKinds(t, SpeechStarted, SpeechStopped)
		agenttest.Poll(t, testWait, "the whole reply", func() bool { return ofReply(c, 1) == n })
		if st := leg.Stats(); st.BargeIns != 0 || st.Dropped != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}
