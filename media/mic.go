package media

import (
	"bytes"
	"errors"
	"net"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/agentbridge"
)

// The visitor → agent path: RTP (RFC 3550) carrying Opus (RFC 7587) is
// reordered by the jitter buffer and handed to OnMicFrame, as received or
// decoded to PCM.

// opusClock is the RTP clock of Opus (RFC 7587 §4.1) and opusFrameTicks one
// 20 ms frame in it.
const (
	opusClock      = 48000
	opusFrameTicks = opusClock / 50
)

// maxConceal bounds the frames synthesised for a PCM agent in one gap
// (longer gaps are skipped: the agent sees a jump in Seq).
const maxConceal = 3

// readMic reads the visitor's audio track until it ends (the
// PeerConnection closes, or the LiveKit track is unsubscribed). levelExt is
// the id of the negotiated RFC 6464 audio level header extension (0: none).
// It arms a read deadline whenever the jitter buffer holds packets, so gaps
// are given up on time even if the visitor stops sending, and while the
// visitor speaks, so a speech ends even if no quiet frame comes.
func (l *audioPath) readMic(t *webrtc.TrackRemote, levelExt uint8) {
	buf := make([]byte, maxPacketBytes+100)
	var (
		pkt   rtp.Packet
		ia    = interarrival{clock: opusClock}
		rate  rateMeter
		armed bool
	)
	l.startSpeech()
	defer l.endSpeech()
	for {
		n, _, err := t.Read(buf)
		now := time.Now()
		switch {
		case err == nil:
		case isTimeout(err):
			l.deliver(l.jb.flush(now))
			l.speechIdle(now)
		case errors.Is(err, webrtc.ErrCodecNotFound):
			continue // a payload type we did not negotiate: drop it
		default:
			return // closed
		}
		if err == nil && pkt.Unmarshal(buf[:n]) == nil {
			l.lastRTP.Store(now.UnixNano())
			ia.update(pkt.Timestamp, now)
			storeFloat(&l.stats.jitterMS, ia.ms())
			if bps, ok := rate.add(len(pkt.Payload), now); ok {
				l.stats.bitrateIn.set(bps, now)
			}
			// Padding-only packets (empty payload) go in too: they use a
			// sequence number, and deliver skips them.
			l.deliver(l.jb.push(rtpIn{Seq: pkt.SequenceNumber, TS: pkt.Timestamp, Payload: pkt.Payload, Arrival: now,
				level: packetLevel(&pkt, levelExt)}, now))
		}
		if d, ok := l.readDeadline(); ok {
			_ = t.SetReadDeadline(d)
			armed = true
		} else if armed {
			_ = t.SetReadDeadline(time.Time{})
			armed = false
		}
	}
}

// readDeadline is the earlier of the jitter buffer's and the speech's.
func (l *audioPath) readDeadline() (time.Time, bool) {
	d, ok := l.jb.deadline()
	if s, sok := l.speechDeadline(); sok && (!ok || s.Before(d)) {
		d, ok = s, true
	}
	return d, ok
}

// isTimeout reports a read deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// deliver hands released frames to the agent side, runs voice activity
// detection on them and updates counters.
func (l *audioPath) deliver(frames []micFrame) {
	for i := range frames {
		f := &frames[i]
		if len(f.Payload) == 0 {
			continue
		}
		lv := l.extLevel(f)
		var pcm16 []int16 // the frame at 16 kHz, if decoded for its level
		if l.dec != nil {
			lv = l.deliverPCM(f, lv)
		} else {
			if l.sp != nil && !lv.ok {
				lv, pcm16 = l.decodeLevel(f)
			}
			l.emitMic(f.Seq, f.TS, f.Arrival, bytes.Clone(f.Payload))
		}
		// Captured before the detector sees the frame: the frame that
		// starts a speech is then in the pre-roll, the one that ends it in
		// the utterance.
		l.captureFrame(f, pcm16, lv)
		if lv.ok {
			l.listen(f, lv)
		}
	}
	lost, late, dups := l.jb.counters()
	l.stats.lost.Store(lost)
	l.stats.late.Store(late)
	l.stats.dups.Store(dups)
}

// deliverPCM decodes a frame for a PCM agent, first concealing up to
// maxConceal frames lost just before it (the last one from in-band FEC).
// When VAD runs and lv is not known, it returns the decoded frame's level.
func (l *audioPath) deliverPCM(f *micFrame, lv frameLevel) frameLevel {
	if k := uint64(min(f.LostBefore, maxConceal)); k > 0 && f.Seq >= k {
		for i := k; i >= 1; i-- {
			pcm, err := l.dec.conceal(f.Payload, i == 1)
			if err != nil {
				l.stats.decodeErrors.Add(1)
				continue
			}
			l.emitMic(f.Seq-i, f.TS-i*opusFrameTicks, f.Arrival, pcm)
		}
	}
	pcm, err := l.dec.decode(f.Payload)
	if err != nil {
		l.stats.decodeErrors.Add(1)
		l.log.Debug("media: opus decode", "err", err, "seq", f.Seq)
		return lv
	}
	if l.sp != nil && !lv.ok {
		// Measured before the frame is handed over: it then belongs to
		// the callee.
		lv = frameLevel{dBov: pcmDBov(pcm), source: SourceDecode, ok: true}
	}
	l.emitMic(f.Seq, f.TS, f.Arrival, pcm)
	return lv
}

// emitMic delivers one frame to OnMicFrame.
func (l *audioPath) emitMic(seq, ts uint64, arrival time.Time, payload []byte) {
	if l.stats.framesIn.Add(1) == 1 {
		l.stats.firstFrameAt.Store(time.Now().UnixNano())
	}
	if l.onMic == nil {
		return
	}
	l.onMic(agentbridge.AudioFrame{
		Codec:      l.codec,
		Seq:        seq,
		Timestamp:  ts,
		CapturedAt: arrival,
		Payload:    payload,
	})
}
