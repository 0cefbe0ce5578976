package agentbridge

import "errors"

var (
	// ErrClosed is returned by operations on a closed worker or conversation.
	ErrClosed = errors.New("agentbridge: closed")
	// ErrInvalidOptions is returned by NewWorker for unusable options.
	ErrInvalidOptions = errors.New("agentbridge: invalid options")
	// ErrReplyDone is returned when writing to a reply that was finished.
	ErrReplyDone = errors.New("agentbridge: reply already done")
	// ErrInterrupted is returned when writing to a reply the broker
	// interrupted (the visitor spoke over it).
	ErrInterrupted = errors.New("agentbridge: reply interrupted")
	// ErrBadFrame is returned for an audio message whose headers are invalid.
	ErrBadFrame = errors.New("agentbridge: bad audio frame")
)
