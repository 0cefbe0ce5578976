package media

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// audioPath is the audio processing both voice transports share, whatever
// carries the RTP: the visitor → agent path (readMic: jitter buffer, Opus
// passed through or decoded to PCM, OnMicFrame; mic.go) and the agent →
// visitor path (Play, ClearAudio; playout.go), with their counters
// (Stats). A Leg embeds one for its PeerConnection; the LiveKit bridge
// embeds one for its room. The transport runs readMic on the visitor's
// track and stops it; its agent frames are sent on its engine's playout
// clock (playclock.go) from startPlayout to stopPlayout.
type audioPath struct {
	log    *slog.Logger
	format Format
	codec  string // format.String(), the Parley-Codec of mic frames
	onMic  func(agentbridge.AudioFrame)
	stats  legStats

	life    *lifecycle   // the transport's: once it is ending, Play does nothing
	lastRTP atomic.Int64 // unix nanos of the last mic RTP packet (or creation)

	// Mic path, owned by readMic.
	jb  *jitterBuffer
	dec *pcmDecoder // nil for Opus agents
	sp  *speech     // voice activity and barge-in (speech.go); nil when off

	// Agent path: the queue is shared; enc and out are owned by the
	// playout clock's shard while the path is listed (playclock.go).
	pq   *playQueue
	enc  *pcmEncoder // nil for Opus agents
	out  rtpOut
	play player
}

// init sets the path up for agent format f (zero: Opus) with the engine
// settings of cfg (jitter window, playout queue; zero fields take the
// defaults), for the transport whose lifecycle is life.
func (a *audioPath) init(cfg Config, f Format, onMic func(agentbridge.AudioFrame), life *lifecycle, log *slog.Logger) error {
	cfg = cfg.withDefaults()
	if f == (Format{}) {
		f = FormatOpus()
	}
	if err := f.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = discardLogger()
	}
	now := time.Now()
	a.log, a.format, a.codec, a.onMic, a.life = log, f, f.String(), onMic, life
	a.jb = newJitterBuffer(cfg.JitterWindow)
	a.pq = newPlayQueue(cfg.PlayoutQueue, f)
	a.pq.onPush = a.kick
	a.out = newRTPOut()
	a.stats.createdAt = now
	a.lastRTP.Store(now.UnixNano())
	if !f.IsOpus() {
		var err error
		if a.dec, err = newPCMDecoder(f); err != nil {
			return err
		}
		if a.enc, err = newPCMEncoder(f); err != nil {
			return err
		}
	}
	return nil
}

// silent is the silence watchdog of a leg or bridge, called when its timer
// t fires: it reports whether the visitor has sent no audio for limit (and
// logs it), or re-arms t for the time left.
func (a *audioPath) silent(t *time.Timer, limit time.Duration) bool {
	idle := time.Since(time.Unix(0, a.lastRTP.Load()))
	if idle < limit {
		t.Reset(limit - idle)
		return false
	}
	a.log.Info("media: no audio from visitor", "for", idle.Round(time.Millisecond))
	return true
}
