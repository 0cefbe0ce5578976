package media

import (
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"

	"github.com/parley-rtc/parley/agentbridge"
)

// The agent → visitor path: Play queues 20 ms frames (Opus as is, PCM cut
// into 20 ms chunks), and the engine's playout clock (playclock.go) sends
// one per 20 ms as RTP (RFC 3550, Opus payload RFC 7587) on a wall-clock
// schedule.

// resyncAfter is how far behind schedule the pacer may fall before it
// restarts the schedule instead of catching up.
const resyncAfter = 3 * frameDuration

// padAfter is how long a partial PCM frame waits for more samples before
// it is padded with silence and played (the end of an utterance).
const padAfter = 2 * frameDuration

// replyIdle is how long playout must have sent nothing for the next frame
// to start a new reply (SpeechEvent.HeardMS counts the current reply). It
// is longer than a pause between the sentences of one spoken reply, and
// shorter than a visitor's turn between two replies.
const replyIdle = time.Second

// playItem is one 20 ms frame waiting to be played.
type playItem struct {
	opus []byte  // an Opus packet, or
	pcm  []int16 // one frame of PCM samples
}

// playQueue is the bounded queue between Play (any goroutine) and the
// playout clock: a ring of frames under a mutex, and onPush to tell the
// clock a frame waits (audioPath.kick). The ring
// starts small and doubles as frames wait, up to max (an agent playing at
// the pace of speech needs a few slots; one that sends a whole reply at
// once needs many): an idle leg does not hold max slots. When full the
// oldest frame is dropped.
type playQueue struct {
	onPush func() // after frames were queued (nil: nobody is told)
	spf    int    // PCM samples per frame (0 for Opus agents)
	max    int    // the most frames queued

	mu       sync.Mutex
	ring     []playItem
	head, n  int
	acc      []int16   // PCM not yet a whole frame
	lastPush time.Time // when acc last grew
	free     [][]int16 // recycled PCM frames

	// The reply being played (for barge-in): frames taken by the pacer
	// since playout last started after replyIdle or a clear.
	replyFrames int
	replyStart  time.Time // when its first frame was taken
	lastPop     time.Time // when the pacer last took a frame

	// held: a barge-in cut the playout and the visitor is still speaking.
	// Agent frames are dropped until the speech ends (release): the rest
	// of the cut reply, still on its way from the agent, must not play
	// over the visitor and be cut again and again.
	held bool
}

// playQueueStart is how many slots a play queue starts with.
const playQueueStart = 16

func newPlayQueue(size int, f Format) *playQueue {
	q := &playQueue{max: size, ring: make([]playItem, min(size, playQueueStart))}
	if !f.IsOpus() {
		q.spf = f.frameSamples() * f.Channels
		q.acc = make([]int16, 0, 2*q.spf)
	}
	return q
}

// wake tells the playout clock there is something to play.
func (q *playQueue) wake() {
	if q.onPush != nil {
		q.onPush()
	}
}

// pushLocked appends a frame, dropping the oldest when full; it returns
// how many frames were dropped.
func (q *playQueue) pushLocked(it playItem) int {
	dropped := 0
	if q.n == len(q.ring) && len(q.ring) < q.max {
		ring := make([]playItem, min(2*len(q.ring), q.max))
		for i := range q.n {
			ring[i] = q.ring[(q.head+i)%len(q.ring)]
		}
		q.ring, q.head = ring, 0
	}
	if q.n == len(q.ring) {
		q.recycleLocked(q.ring[q.head])
		q.ring[q.head] = playItem{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		dropped = 1
	}
	q.ring[(q.head+q.n)%len(q.ring)] = it
	q.n++
	return dropped
}

// pushOpus queues one Opus packet.
func (q *playQueue) pushOpus(pkt []byte) (dropped int) {
	q.mu.Lock()
	if q.held {
		q.mu.Unlock()
		return 1
	}
	dropped = q.pushLocked(playItem{opus: pkt})
	q.mu.Unlock()
	q.wake()
	return dropped
}

// pushPCM adds little-endian samples and queues every whole frame.
func (q *playQueue) pushPCM(b []byte, now time.Time) (dropped int) {
	q.mu.Lock()
	if q.held {
		q.mu.Unlock()
		return (len(b)/2 + q.spf - 1) / q.spf
	}
	q.acc = appendLEInt16(q.acc, b)
	q.lastPush = now
	var off int
	for ; len(q.acc)-off >= q.spf; off += q.spf {
		fr := q.frameLocked()
		copy(fr, q.acc[off:off+q.spf])
		dropped += q.pushLocked(playItem{pcm: fr})
	}
	q.acc = q.acc[:copy(q.acc, q.acc[off:])]
	q.mu.Unlock()
	q.wake()
	return dropped
}

// padPartial plays a partial PCM frame that has waited padAfter, padded
// with silence.
func (q *playQueue) padPartial(now time.Time) (dropped int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.acc) == 0 || now.Sub(q.lastPush) < padAfter {
		return 0
	}
	fr := q.frameLocked()
	clear(fr[copy(fr, q.acc):])
	q.acc = q.acc[:0]
	return q.pushLocked(playItem{pcm: fr})
}

// partialSince reports when a waiting partial PCM frame last grew.
func (q *playQueue) partialSince() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lastPush, len(q.acc) > 0
}

// frameLocked returns a PCM frame buffer, recycled if possible.
func (q *playQueue) frameLocked() []int16 {
	if n := len(q.free); n > 0 {
		fr := q.free[n-1]
		q.free = q.free[:n-1]
		return fr
	}
	return make([]int16, q.spf)
}

func (q *playQueue) recycleLocked(it playItem) {
	if it.pcm != nil && len(q.free) < 8 {
		q.free = append(q.free, it.pcm)
	}
}

// recycle returns a played frame's buffer.
func (q *playQueue) recycle(it playItem) {
	q.mu.Lock()
	q.recycleLocked(it)
	q.mu.Unlock()
}

// pop takes the oldest frame to send it now. It counts the frame in the
// current reply, or starts a new reply after replyIdle: a frame taken is a
// frame sent, so a cut (under the same lock) knows exactly what was heard.
func (q *playQueue) pop(now time.Time) (playItem, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return playItem{}, false
	}
	it := q.ring[q.head]
	q.ring[q.head] = playItem{}
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	if q.replyFrames == 0 || now.Sub(q.lastPop) > replyIdle {
		q.replyFrames, q.replyStart = 0, now
	}
	q.replyFrames++
	q.lastPop = now
	return it, true
}

// playing reports whether agent audio is playing at now (a reply has begun
// and frames are queued or one was just sent), and since when the reply
// plays.
func (q *playQueue) playing(now time.Time) (since time.Time, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.replyFrames == 0 || (q.n == 0 && now.Sub(q.lastPop) > 2*frameDuration) {
		return time.Time{}, false
	}
	return q.replyStart, true
}

// cut is clear for a barge-in: it also returns how many frames of the
// current reply were sent, and holds the playout until release.
func (q *playQueue) cut() (dropped, heard int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	heard = q.replyFrames
	q.held = true
	return q.clearLocked(), heard
}

// release ends the hold of a barge-in: the visitor stopped speaking.
func (q *playQueue) release() {
	q.mu.Lock()
	q.held = false
	q.mu.Unlock()
}

// len is the number of whole frames queued.
func (q *playQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// clear drops every queued frame and partial PCM, and ends the current
// reply; it returns the frames dropped.
func (q *playQueue) clear() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.clearLocked()
}

func (q *playQueue) clearLocked() int {
	q.replyFrames = 0
	n := q.n
	for q.n > 0 {
		q.recycleLocked(q.ring[q.head])
		q.ring[q.head] = playItem{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
	}
	q.acc = q.acc[:0]
	return n
}

// Play queues one agent frame for the visitor without blocking. Opus frames
// (Codec "opus/48000/2", or any "opus/48000/…") are sent as they are; PCM
// frames must match the leg's AgentFormat and may be any whole number of
// samples (they are cut into 20 ms and encoded to Opus). Frames of another
// codec are dropped and counted in Stats.Rejected; past Config.PlayoutQueue
// frames the oldest are dropped and counted in Stats.Dropped. Play keeps
// f.Payload of Opus frames until they are sent: the caller must not modify
// it afterwards. Play on a closed leg does nothing.
func (l *audioPath) Play(f agentbridge.AudioFrame) {
	if l.life.isEnding() {
		return
	}
	var dropped int
	switch {
	case f.Codec == agentbridge.CodecOpus || strings.HasPrefix(f.Codec, "opus/48000"):
		if len(f.Payload) == 0 || len(f.Payload) > maxPacketBytes {
			l.stats.rejected.Add(1)
			return
		}
		dropped = l.pq.pushOpus(f.Payload)
	case l.enc != nil && l.isAgentCodec(f.Codec):
		if len(f.Payload)%2 != 0 {
			l.stats.rejected.Add(1)
			return
		}
		dropped = l.pq.pushPCM(f.Payload, time.Now())
	default:
		l.stats.rejected.Add(1)
		return
	}
	if dropped > 0 {
		l.stats.dropped.Add(uint64(dropped))
	}
}

// PlaySpeech queues Opus packets of speech the broker synthesized (a
// sentence, from SpeechEncoder) in one go, and returns how many were
// queued: none while a barge-in holds the playout (the sentence was cut
// before it could play), all otherwise. Past Config.PlayoutQueue frames
// the oldest are dropped, counted in Stats.Dropped. It never blocks on
// the playout. Packets must be valid Opus; they are kept until sent.
func (l *audioPath) PlaySpeech(pkts [][]byte) (queued int) {
	if l.life.isEnding() {
		return 0
	}
	q := l.pq
	q.mu.Lock()
	if q.held {
		q.mu.Unlock()
		l.stats.dropped.Add(uint64(len(pkts)))
		return 0
	}
	dropped := 0
	for _, p := range pkts {
		if len(p) == 0 || len(p) > maxPacketBytes {
			l.stats.rejected.Add(1)
			continue
		}
		dropped += q.pushLocked(playItem{opus: p})
		queued++
	}
	q.mu.Unlock()
	q.wake()
	if dropped > 0 {
		l.stats.dropped.Add(uint64(dropped))
	}
	return queued
}

// isAgentCodec reports whether codec names the leg's PCM format.
func (l *audioPath) isAgentCodec(codec string) bool {
	if codec == l.codec {
		return true
	}
	f, err := ParseFormat(codec)
	return err == nil && f == l.format
}

// ClearAudio drops every queued agent frame (and buffered PCM), counted in
// Stats.Dropped: after the frame being written now, nothing queued before
// the call is played (barge-in). The next frame played starts a new reply
// (SpeechEvent.HeardMS).
func (l *audioPath) ClearAudio() {
	if n := l.pq.clear(); n > 0 {
		l.stats.dropped.Add(uint64(n))
	}
}

// rtpOut is the pacer's RTP sequence and media clock for the agent track.
type rtpOut struct {
	seq      uint16
	ts       uint32
	marker   bool
	lastSent time.Time
}

// newRTPOut starts sequence and timestamp at random values (RFC 3550 §5.1).
func newRTPOut() rtpOut {
	return rtpOut{seq: uint16(rand.Uint32()), ts: rand.Uint32(), marker: true}
}

// resume starts a talkspurt at now: the media clock jumps over the silence
// since the last frame and the marker bit is set (RFC 3551 §4.1).
func (o *rtpOut) resume(now time.Time) {
	o.marker = true
	if o.lastSent.IsZero() {
		return
	}
	if gap := now.Sub(o.lastSent) - frameDuration; gap > 0 {
		o.ts += uint32(gap.Nanoseconds() * opusClock / int64(time.Second))
	}
}

// rtpWriter is where the pacer writes: the leg's track, or the track the
// LiveKit bridge publishes.
type rtpWriter interface {
	WriteRTP(p *rtp.Packet) error
}
