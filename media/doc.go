// Package media is Parley's WebRTC media path, built on pion: it answers a
// visitor's SDP offer (WHIP style, RFC 9725), carries the visitor's
// microphone (Opus over SRTP, RFC 7587 / RFC 3711) to the agent side as
// 20 ms frames, and plays the agent's frames back on one Opus track. It
// knows no HTTP; signaling drives it and broker reaches it through small
// interfaces.
//
// One Engine holds what legs share: a pion API with an Opus-only
// MediaEngine, NACK (RFC 4585), RTCP reports (RFC 3550 §6.4) and
// transport-wide congestion control feedback, and ICE settings (RFC 8445):
// a single UDP port (ICE UDP mux) or an ephemeral port range, 1:1 NAT
// addresses, interface filter, loopback candidates, no mDNS.
//
// A Leg is one visitor connection:
//
//	leg, answer, err := engine.NewLeg(ctx, media.LegOptions{Offer: offer, AgentFormat: f, OnMicFrame: …, OnState: …})
//	leg.Play(frame)      // agent → visitor, paced at 20 ms
//	leg.ClearAudio()     // barge-in
//	leg.Trickle(frag)    // RFC 8840 trickle-ice-sdpfrag: candidates or an ICE restart
//	leg.Renegotiate(ctx, offer)
//	leg.Close()
//
// Mic frames go through a small reorder buffer (released at once when in
// order, gaps given up after Config.JitterWindow) and reach OnMicFrame as
// Opus packets, or as PCM decoded by the pure-Go gopus codec when the agent
// speaks PCM ("pcm_s16le/16000/1"); agent PCM is encoded back to Opus.
package media
