package media

import (
	"math"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// RTCP (RFC 3550 §6) is read on both directions so pion's interceptors
// (NACK responder, report generators) see it; receiver reports about our
// stream also give the round-trip time (RFC 3550 §6.4.1).

// ntpEpochOffset is the seconds from 1900 (NTP) to 1970 (Unix).
const ntpEpochOffset = 2208988800

// readSenderRTCP reads RTCP about the track we send until the PeerConnection
// closes, and keeps Stats.RTTMS from receiver reports.
func (l *Leg) readSenderRTCP() {
	buf := make([]byte, maxPacketBytes)
	for {
		n, _, err := l.sender.Read(buf)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		now := time.Now()
		for _, p := range pkts {
			var reports []rtcp.ReceptionReport
			switch p := p.(type) {
			case *rtcp.ReceiverReport:
				reports = p.Reports
			case *rtcp.SenderReport:
				reports = p.Reports
			}
			for _, r := range reports {
				if rtt, ok := rttFromReport(r, now); ok {
					storeFloat(&l.stats.rttMS, float64(rtt)/float64(time.Millisecond))
				}
			}
		}
	}
}

// readReceiverRTCP drains RTCP about the visitor's stream (sender reports)
// through the interceptors until the PeerConnection closes.
func (l *Leg) readReceiverRTCP(r *webrtc.RTPReceiver) {
	buf := make([]byte, maxPacketBytes)
	for {
		if _, _, err := r.Read(buf); err != nil {
			return
		}
	}
}

// rttFromReport computes the round-trip time from a reception report at
// now: A - LSR - DLSR in 1/65536 s (RFC 3550 §6.4.1, figure 2).
func rttFromReport(r rtcp.ReceptionReport, now time.Time) (time.Duration, bool) {
	if r.LastSenderReport == 0 {
		return 0, false
	}
	a := ntpMiddle(now)
	rtt := a - r.LastSenderReport - r.Delay
	if int32(rtt) < 0 {
		return 0, false // clock skew or a stale report
	}
	return time.Duration(uint64(rtt) * uint64(time.Second) >> 16), true
}

// ntpMiddle is the middle 32 bits of the 64-bit NTP timestamp of t.
func ntpMiddle(t time.Time) uint32 {
	sec := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return uint32((sec<<32 | frac) >> 16 & math.MaxUint32)
}
