// Package media will hold Parley's WebRTC media path (pion peer connections,
// Opus to and from agents over NATS) and the LiveKit room bridge. It knows no
// HTTP; signaling drives it and broker reaches it through small interfaces.
package media
