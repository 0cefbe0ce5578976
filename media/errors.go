package media

import "errors"

// Sentinel errors returned by media. They are wrapped with a reason
// (fmt.Errorf("%w: …")); test with errors.Is. Mapping them to HTTP status
// codes is the caller's job (signaling), done in one place at that edge.
var (
	// ErrBadSDP: the SDP could not be parsed, is not an offer (for example
	// a=setup:active, which only an answer carries, RFC 8842 §5.3), or pion
	// rejected it.
	ErrBadSDP = errors.New("media: bad SDP")
	// ErrNoAudio: the offer has no audio m-line, or none that offers Opus
	// (RFC 7587).
	ErrNoAudio = errors.New("media: offer has no Opus audio")
	// ErrBadFormat: an agent audio format string is not one media supports.
	ErrBadFormat = errors.New("media: bad audio format")
	// ErrBadFragment: a trickle-ice-sdpfrag body (RFC 8840) could not be
	// parsed or one of its candidates was rejected.
	ErrBadFragment = errors.New("media: bad ICE fragment")
	// ErrICESessionChanged: an ICE update was made for an ICE session that
	// is no longer the leg's (it restarted since; RFC 9725 §4.3.1).
	ErrICESessionChanged = errors.New("media: not the leg's current ICE session")
	// ErrBadConfig: the engine Config is invalid.
	ErrBadConfig = errors.New("media: bad config")
	// ErrClosed: the engine or leg is closed.
	ErrClosed = errors.New("media: closed")
	// ErrLiveKit: the LiveKit server could not be reached, refused a call,
	// or the bridge could not join or publish in a room.
	ErrLiveKit = errors.New("media: LiveKit unavailable")
	// ErrNoRoom: LiveKit has no room of that name.
	ErrNoRoom = errors.New("media: LiveKit room not found")
)
