package media

import (
	"slices"
	"time"
)

// Utterances for speech-to-text (LegOptions.OnUtterance). While the
// visitor is quiet the mic reader only keeps the last frames' Opus packets
// (copies) in a small ring, and decodes nothing for it. When a speech
// starts it decodes the ring at 16 kHz mono as the pre-roll (up to
// preRoll before the onset: the detector decides a few frames late, and
// speech-to-text hears a word's first sound better with a little quiet
// before it), then decodes each frame while the speech lasts. When the
// speech stops, the hangover's quiet tail is trimmed to utteranceTail
// after the last voiced frame (the rest is silence that would only cost
// the recogniser time) and the Utterance is handed over, after OnSpeech's
// stopped event.
//
// Frames are placed by their RTP timestamps: what is missing (a lost
// packet, a DTX pause, a frame that would not decode) is silence. Where
// the visitor's packets carry no audio level, the decoder that measures
// their level (speech.go) already decodes every frame at 16 kHz: the ring
// keeps those samples too, and neither the pre-roll nor the speech is
// decoded twice. Everything here runs on the mic reader goroutine.

const (
	// uttRate is the sample rate of an Utterance: what speech-to-text
	// engines take, and the rate the level decoder already runs at.
	uttRate = levelRate
	// ticksPerSample is one 16 kHz sample in Opus RTP ticks.
	ticksPerSample = opusClock / uttRate
	// preRoll is the most audio before the onset an Utterance begins with.
	preRoll = 300 * time.Millisecond
	// utteranceTail is how much audio after the end of the last voiced
	// frame an Utterance keeps: enough for a word's soft ending below the
	// threshold, far less than the hangover.
	utteranceTail = 100 * time.Millisecond
	// uttInitial is the capacity an utterance's PCM starts with: most
	// turns are a few seconds.
	uttInitial = 3 * uttRate
)

// maxUttSamples is MaxUtterance in samples.
const maxUttSamples = int(MaxUtterance/time.Second) * uttRate

// ringFrame is one recent frame in the capture's ring.
type ringFrame struct {
	ts      uint64  // extended RTP timestamp
	pkt     []byte  // a copy of its Opus packet (buffer reused)
	pcm     []int16 // decoded at 16 kHz, if decoded (buffer reused)
	decoded bool
}

// capture is the utterance being captured, and the ring of recent frames
// its pre-roll is taken from. It is owned by the mic reader.
type capture struct {
	ring    []ringFrame
	head, n int // the oldest frame, the number held
	max     int // samples per Utterance (maxUttSamples; tests may lower it)
	maxGap  int // samples of silence one gap may add (the hangover)

	active  bool
	pcm     []int16
	nextTS  uint64 // RTP time just after the last sample of pcm
	start   time.Time
	preRoll time.Duration
}

// newCapture makes the capture of a visitor track with VAD v (defaults
// applied).
func newCapture(v VAD) *capture {
	// The ring spans the pre-roll before the onset plus the frames the
	// detector needed to decide it was speech (MinSpeech), 20 ms each.
	n := int((preRoll+v.MinSpeech+frameDuration-1)/frameDuration) + 1
	return &capture{
		ring:   make([]ringFrame, n),
		max:    maxUttSamples,
		maxGap: int(ticks(v.Hangover) / ticksPerSample),
	}
}

// at is the i-th frame of the ring, oldest first.
func (c *capture) at(i int) *ringFrame { return &c.ring[(c.head+i)%len(c.ring)] }

// push keeps a frame in the ring, with its 16 kHz samples if pcm is not
// nil, dropping the oldest when full.
func (c *capture) push(f *micFrame, pcm []int16) *ringFrame {
	var r *ringFrame
	if c.n < len(c.ring) {
		r = c.at(c.n)
		c.n++
	} else {
		r = c.at(0)
		c.head = (c.head + 1) % len(c.ring)
	}
	r.ts = f.TS
	r.pkt = append(r.pkt[:0], f.Payload...)
	r.keep(pcm)
	return r
}

// keep stores pcm (nil: not decoded) as the frame's samples.
func (r *ringFrame) keep(pcm []int16) {
	r.decoded = pcm != nil
	if pcm != nil {
		r.pcm = append(r.pcm[:0], pcm...)
	}
}

// add appends one frame's samples at RTP time ts, after the silence of a
// gap since the last frame (at most maxGap).
func (c *capture) add(ts uint64, pcm []int16) {
	gap := 0
	if ts > c.nextTS && len(c.pcm) > 0 {
		gap = min(int((ts-c.nextTS)/ticksPerSample), c.maxGap)
	}
	if n := len(c.pcm) + gap + len(pcm); n > cap(c.pcm) {
		// Double (up to about the maximum): append would grow a long
		// utterance by a quarter at a time, copying it over and over.
		c.pcm = slices.Grow(c.pcm, max(n, min(2*cap(c.pcm), c.max+uttInitial))-len(c.pcm))
	}
	if gap > 0 {
		n := len(c.pcm)
		c.pcm = c.pcm[:n+gap]
		clear(c.pcm[n:])
	}
	c.pcm = append(c.pcm, pcm...)
	c.nextTS = ts + uint64(len(pcm))*ticksPerSample
}

// samples is how many samples of pcm lie after RTP time ts (0 if none).
func (c *capture) samples(ts uint64) int {
	if ts >= c.nextTS {
		return 0
	}
	return min(int((c.nextTS-ts)/ticksPerSample), len(c.pcm))
}

// samplesDuration is n samples at uttRate as a duration.
func samplesDuration(n int) time.Duration {
	return time.Duration(n) * time.Second / uttRate
}

// captureFrame keeps a frame for the utterance capture: in the ring and,
// while the visitor speaks, in the utterance (decoded unless pcm, its
// samples from the level decoder, is given). lv is the frame's level.
//
// An utterance is cut at MaxUtterance only on a voiced frame past it: a
// speech that reaches the maximum in a pause waits, so that if it ends
// there it comes whole (trimmed to its tail), and if it goes on it is cut
// in the pause; either way no piece is only silence.
func (a *audioPath) captureFrame(f *micFrame, pcm []int16, lv frameLevel) {
	if a.sp == nil || a.sp.cap == nil {
		return
	}
	c := a.sp.cap
	r := c.push(f, pcm)
	if !c.active {
		return
	}
	if !r.decoded {
		if pcm, ok := a.decode16(f.Payload); ok {
			r.keep(pcm)
		}
	}
	if r.decoded {
		c.add(r.ts, r.pcm)
	}
	if len(c.pcm) > c.max && lv.ok && lv.dBov > a.sp.det.threshold {
		a.truncateUtterance(f.Arrival)
	}
}

// beginUtterance starts capturing the speech that ev (started) reports:
// the ring's frames from preRoll before the onset are its beginning,
// decoded now unless all of them were decoded in turn already.
func (a *audioPath) beginUtterance(ev SpeechEvent) {
	c, onset := a.sp.cap, a.sp.det.onsetTS
	var lo uint64
	if pr := ticks(preRoll); onset > pr {
		lo = onset - pr
	}
	first, all := c.n, true
	for i := c.n - 1; i >= 0 && c.at(i).ts >= lo; i-- {
		first, all = i, all && c.at(i).decoded
	}
	if !all {
		// The decoder has not seen these frames (their level came from
		// the header extension) or not all in turn: start it afresh on
		// them, so that the speech that follows continues their stream.
		if dec := a.decoder16(); dec != nil {
			dec.reset()
		}
		for i := first; i < c.n; i++ {
			r := c.at(i)
			pcm, ok := a.decode16(r.pkt)
			if !ok {
				pcm = nil
			}
			r.keep(pcm)
		}
	}
	c.active, c.start = true, ev.At
	c.pcm, c.nextTS = make([]int16, 0, uttInitial), onset
	for i := first; i < c.n; i++ {
		if r := c.at(i); r.decoded {
			c.add(r.ts, r.pcm)
		}
	}
	c.preRoll = samplesDuration(len(c.pcm) - c.samples(onset))
}

// truncateUtterance hands over the first MaxUtterance of a speech that
// goes on, as cut at the arrival of the frame being captured; the rest
// begins the next Utterance.
func (a *audioPath) truncateUtterance(arrival time.Time) {
	c := a.sp.cap
	over := len(c.pcm) - c.max
	end := arrival.Add(-samplesDuration(over))
	u := Utterance{PCM: c.pcm[:c.max:c.max], Rate: uttRate, Start: c.start, End: end, PreRoll: c.preRoll, Truncated: true}
	rest := make([]int16, over, max(over, uttInitial))
	copy(rest, c.pcm[c.max:])
	c.pcm, c.start, c.preRoll = rest, end, 0
	a.sp.onUtt(u)
}

// endUtterance hands over the speech that ev (stopped) ends, its quiet
// tail trimmed to utteranceTail after the last voiced frame.
func (a *audioPath) endUtterance(ev SpeechEvent) {
	c := a.sp.cap
	if !c.active {
		return
	}
	end := a.sp.det.lastVoiceTS + frameTicks + ticks(utteranceTail)
	pcm := c.pcm[:min(len(c.pcm)-c.samples(end), c.max)]
	u := Utterance{PCM: pcm, Rate: uttRate, Start: c.start, End: ev.At, PreRoll: c.preRoll}
	if u.End.Before(u.Start) {
		u.End = u.Start // a continuation cut in the hangover
	}
	c.active, c.pcm = false, nil
	a.sp.onUtt(u)
}
