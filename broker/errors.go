package broker

import (
	"errors"
	"fmt"
)

// Sentinel errors of the broker. Callers test them with errors.Is; the edge
// (signaling) maps them to wire codes.
var (
	// ErrClosed is returned after the broker has been closed.
	ErrClosed = errors.New("broker: closed")
	// ErrNotReady is returned before Start has finished.
	ErrNotReady = errors.New("broker: not ready")
	// ErrUnknownSession is returned for a session id that does not exist.
	ErrUnknownSession = errors.New("broker: unknown session")
	// ErrBadToken is returned when a session token does not match.
	ErrBadToken = errors.New("broker: session token invalid")
	// ErrSessionEnded is returned for a session that was ended.
	ErrSessionEnded = errors.New("broker: session ended")
	// ErrSessionExpired is returned for a session or resume token past its expiry.
	ErrSessionExpired = errors.New("broker: session expired")
	// ErrResumeInvalid is returned for a resume token that is unknown,
	// already used or belongs to another widget.
	ErrResumeInvalid = errors.New("broker: resume token invalid")
	// ErrConversationClosed is returned for a resume of a conversation an
	// operator closed (DELETE /v1/ops/rooms/{id}): the visitor starts a
	// new one.
	ErrConversationClosed = errors.New("broker: conversation closed")
	// ErrUnknownConversation is returned for a conversation that does not exist.
	ErrUnknownConversation = errors.New("broker: unknown conversation")
	// ErrUnknownVisitor is returned when a widget has no conversation of
	// an identified visitor.
	ErrUnknownVisitor = errors.New("broker: unknown visitor")
	// ErrValidation is wrapped by every error about bad caller input.
	ErrValidation = errors.New("broker: validation failed")
	// ErrAgentUnavailable is returned when no agent worker took the
	// conversation in time; what the visitor sent is kept.
	ErrAgentUnavailable = errors.New("broker: agent unavailable")
	// ErrConversationLimit is returned when the conversation's widget or
	// tenant holds as many live conversations as its cap or fair share
	// allows; what the visitor sent is kept, and the conversation is
	// dispatched when the limit allows.
	ErrConversationLimit = errors.New("broker: conversation limit reached")
	// ErrReplyTimeout is returned when an agent did not finish a reply in time.
	ErrReplyTimeout = errors.New("broker: reply timeout")
	// ErrSlowSubscriber ends a live subscription that fell too far behind.
	ErrSlowSubscriber = errors.New("broker: subscriber too slow")
	// ErrNonceUsed is returned when a single-use nonce is presented twice.
	ErrNonceUsed = errors.New("broker: nonce already used")
	// ErrUnknownWidget is returned for a widget key or id that does not exist.
	ErrUnknownWidget = errors.New("broker: unknown widget")
	// ErrUnknownKey is returned for an API key that does not exist.
	ErrUnknownKey = errors.New("broker: unknown API key")
	// ErrKeyDisabled is returned for a revoked API key.
	ErrKeyDisabled = errors.New("broker: API key disabled")
	// ErrUnknownUpload is returned for an upload id the conversation does
	// not have.
	ErrUnknownUpload = errors.New("broker: unknown upload")
	// ErrStore wraps failures of the durable store (JetStream).
	ErrStore = errors.New("broker: store unavailable")
	// ErrStoreTimeout is returned when a store read did not finish in
	// time: the store claims data it does not deliver (lost or corrupt
	// blocks) or is overloaded. It is always logged at ERROR. It wraps
	// ErrStore.
	ErrStoreTimeout = fmt.Errorf("%w: read timed out", ErrStore)
	// ErrStoreFull is returned when JetStream refuses a write for lack of
	// space (nats.max_store or the disk reached). It wraps ErrStore.
	ErrStoreFull = fmt.Errorf("%w: store full", ErrStore)
	// ErrStoreUnwritable is returned by Ready when the last write probe or
	// the last real write to the store failed.
	ErrStoreUnwritable = errors.New("broker: store cannot write")
	// ErrPlacement is returned by Start when nats.replicas asks for more
	// replicas than the NATS server or cluster can place; it is not retried.
	ErrPlacement = errors.New("replicas cannot be placed")
	// ErrNoCredentials is returned when a data directory holds no embedded
	// NATS credentials (no `parley serve` has started on it).
	ErrNoCredentials = errors.New("broker: no NATS credentials")
	// ErrExternalNATS is returned when Parley is asked to issue NATS
	// credentials but runs on an external NATS, whose users it does not
	// manage.
	ErrExternalNATS = errors.New("broker: external NATS: credentials are managed there")
)
