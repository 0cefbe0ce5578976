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
//	leg, answer, err := engine.NewLeg(ctx, media.LegOptions{Offer: offer, AgentFormat: f, OnMicFrame: …, OnState: …,
//		VAD: media.VAD{BargeIn: true}, OnSpeech: …, OnUtterance: …})
//	leg.Play(frame)      // agent → visitor, paced at 20 ms
//	leg.ClearAudio()     // barge-in
//	leg.Trickle(frag)    // RFC 8840 trickle-ice-sdpfrag: candidates or an ICE restart
//	leg.Renegotiate(ctx, offer)
//	leg.ICESession()     // the tag of the current ICE session, new at each restart
//	leg.TrickleIf(ctx, frag, match) // only for the ICE session match accepts (WHIP If-Match)
//	leg.Close()
//
// The answer takes the offer's audio m-line and rejects the others (video,
// as WHIP clients offer it by default) in the form offerers accept: port
// 0, the offer's mid, a=inactive, out of BUNDLE (reject.go).
//
// Mic frames go through a small reorder buffer (released at once when in
// order, gaps given up after Config.JitterWindow) and reach OnMicFrame as
// Opus packets, or as PCM decoded by the pure-Go gopus codec when the agent
// speaks PCM ("pcm_s16le/16000/1"); agent PCM is encoded back to Opus.
//
// Voice activity (vad.go, speech.go): with OnSpeech set or barge-in on,
// every mic frame gets a level, from the RFC 6464 audio level header
// extension (registered in the MediaEngine, so browsers negotiate it; it
// costs a byte of the RTP header) or, when a packet carries none, from
// its decoded audio (a PCM agent's frames are decoded anyway; for an Opus
// agent a 16 kHz gopus decoder is made on first need). Hysteresis
// (MinSpeech, Hangover, in media time) turns levels into started/stopped.
// Barge-in: while agent audio plays, speech that has lasted BargeInMin
// clears the playout queue, so at most the frame being written follows,
// and reports how much of the reply was sent (the playout clock counts
// the frames it takes, under the queue's lock).
//
// Utterances (utterance.go): with OnUtterance set, the reader keeps the
// last ~300 ms of the visitor's Opus packets in a small ring; at speech
// start it decodes them at 16 kHz mono as pre-roll, then decodes each
// frame while the speech lasts (reusing the level decoder's samples where
// it decodes anyway), and at stopped hands over the PCM with the quiet
// tail trimmed to 100 ms. The other way, a SpeechEncoder (speechenc.go)
// turns text-to-speech PCM into 20 ms Opus packets to Play.
//
// A Bridge (LiveKit.NewBridge) is the same voice leg through a LiveKit room
// instead of a direct PeerConnection; the broker cannot tell the two apart.
//
// # Goroutines
//
// Every goroutine has an owner that stops it and waits for it. A Leg and a
// Bridge each run one state loop (run) and start their other goroutines
// (readMic; a Leg's RTCP readers) through one shared lifecycle
// (lifecycle.go): stop closes quit once, with the first reason; run then
// drains (no goroutine may start any more, the PeerConnection is closed or
// the room left, every goroutine is waited for), reports StateClosed
// exactly once and closes Done. Close is stop plus a wait for Done.
// Agent audio is sent by a playout clock (playclock.go): the Engine's,
// one shard goroutine per CPU for all its legs, or a Bridge's own (a
// LiveKit SDK track can block a write while the SDK reconnects). A shard's
// goroutine runs only while one of its paths has audio to play. The drain
// takes the leg off the clock (stopPlayout) after closing the connection,
// so that a frame being written returns. Engine.Close and LiveKit.Close
// close their live legs and bridges; Engine.Close then stops its clock's
// shards and waits for them, as a Bridge does with its own. pion's
// and LiveKit's callbacks only hand events to run or start readers through
// the lifecycle; they never block past quit. Voice activity and barge-in
// run on readMic (no goroutine of their own), so OnSpeech and OnUtterance
// are called from it, in order, and a visitor track that ends mid-speech
// reports stopped, and hands its utterance over, before readMic returns
// (so before StateClosed).
//
// # Lock order
//
//   - Leg.negMu, then lifecycle.mu (a leg's or a bridge's).
//   - player.mu (a leg on the playout clock), then playQueue.mu: a shard
//     holds a leg's player.mu while it takes and sends a frame.
//   - lifecycle.mu, transports.mu (an Engine's legs, a LiveKit's bridges),
//     clockShard.mu and playQueue.mu are leaves: nothing else is locked
//     while one is held.
//   - No lock is held while calling OnState, OnMicFrame, OnSpeech or
//     OnUtterance, or while closing a PeerConnection or leaving a LiveKit
//     room. A barge-in takes only playQueue.mu (to cut the queue), then
//     calls OnSpeech.
package media
