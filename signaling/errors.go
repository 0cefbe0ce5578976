package signaling

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/media"
)

// Sentinel errors of the HTTP edge.
var (
	// ErrBadRequest: the body is not the JSON the endpoint expects.
	ErrBadRequest = errors.New("bad request")
	// ErrPayloadTooLarge: the body exceeds the endpoint's limit.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrUnknownWidget: no widget has this public key.
	ErrUnknownWidget = errors.New("unknown widget key")
	// ErrWidgetNotLive: the widget exists but is not live.
	ErrWidgetNotLive = errors.New("widget is not live")
	// ErrOriginRequired: a public endpoint was called without Origin.
	ErrOriginRequired = errors.New("an Origin header is required")
	// ErrOriginNotAllowed: the Origin is not allowed for the widget.
	ErrOriginNotAllowed = errors.New("origin not allowed for this widget")
	// ErrChallengeInvalid: the session challenge is malformed, forged,
	// expired, for another widget or origin, or already used.
	ErrChallengeInvalid = errors.New("challenge invalid")
	// ErrSessionTokenInvalid: the session token is missing or wrong.
	ErrSessionTokenInvalid = errors.New("session token invalid")
	// ErrNotFound: no such route.
	ErrNotFound = errors.New("not found")
	// ErrMethodNotAllowed: the route exists, the method does not.
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrUnsupportedMediaType: the body's Content-Type is not one the
	// endpoint takes.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
	// ErrVoiceUnavailable: this server runs without a media engine.
	ErrVoiceUnavailable = errors.New("voice is not available on this server")
	// ErrPreconditionRequired: a PATCH of a voice leg without If-Match
	// (RFC 9725 §4.3.1, RFC 6585 §3).
	ErrPreconditionRequired = errors.New("precondition required")
	// ErrLegNotFound: the session has no voice leg of that id.
	ErrLegNotFound = errors.New("voice leg not found")
	// ErrGuestNotAllowed: the widget requires a verified visitor identity.
	ErrGuestNotAllowed = errors.New("this widget requires a verified visitor identity")
	// ErrModeNotAllowed: the widget does not offer that mode.
	ErrModeNotAllowed = errors.New("mode not allowed")
	// ErrUploadsNotAllowed: the widget does not take attachments.
	ErrUploadsNotAllowed = errors.New("this widget does not accept attachments")
	// ErrMissingScope: the admin key lacks the scope (or tenant) needed.
	ErrMissingScope = errors.New("missing scope")
	// ErrWidgetNotFound: no widget of that id (for this key).
	ErrWidgetNotFound = errors.New("widget not found")
	// ErrKeyNotFound: no API key of that id (for this key).
	ErrKeyNotFound = errors.New("API key not found")
	// ErrTransportMismatch: the voice endpoint is not the widget's
	// voice_transport (a LiveKit token for a webrtc widget, or the reverse).
	ErrTransportMismatch = errors.New("wrong voice transport for this widget")
	// ErrWebhookInvalid: a LiveKit webhook without a valid signature.
	ErrWebhookInvalid = errors.New("webhook signature invalid")
	// ErrRoomNotFound: no live room of that conversation (for this key).
	ErrRoomNotFound = errors.New("room not found")
)

// Reasons a chat WebSocket ends; they never reach an HTTP response.
var (
	// errLegShutdown: the server is shutting down its legs.
	errLegShutdown = errors.New("server shutting down")
	// errLegSlowConsumer: the client did not read its frames fast enough.
	errLegSlowConsumer = errors.New("client too slow")
	// errLegPingTimeout: the client did not answer the liveness ping.
	errLegPingTimeout = errors.New("ping not answered")
	// errLegFeedEnded: the conversation's live feed ended; reconnect.
	errLegFeedEnded = errors.New("live feed ended")
	// errLegSessionEnded: the leg's session ended (a normal end).
	errLegSessionEnded = errors.New("session ended")
	// errLegConversationClosed: an operator closed the conversation.
	errLegConversationClosed = errors.New("conversation closed")
	// errFrameTooLarge: a client frame past the read limit.
	errFrameTooLarge = fmt.Errorf("frame: %w", ErrPayloadTooLarge)
)

// wireError is how one error is shown on the wire: the HTTP status (0: a
// WebSocket-only reason, never an HTTP response), the code (in an HTTP
// error body, a WebSocket error frame or close reason) and, when it is not
// the one derived from the status (see closeCode), the WebSocket close
// code of a leg it ends.
type wireError struct {
	status int
	code   string
	ws     websocket.StatusCode
}

// wireErrors maps sentinel errors to status, code and close code; the first
// match wins. This table is the only place the HTTP and WebSocket edges
// decide codes.
var wireErrors = []struct {
	err  error
	wire wireError
}{
	{ErrBadRequest, wireError{http.StatusBadRequest, "BAD_REQUEST", 0}},
	{ErrPayloadTooLarge, wireError{http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", websocket.StatusMessageTooBig}},
	{broker.ErrValidation, wireError{http.StatusUnprocessableEntity, "VALIDATION_FAILED", 0}},
	{ErrUnknownWidget, wireError{http.StatusUnauthorized, "UNKNOWN_WIDGET_KEY", 0}},
	{broker.ErrUnknownWidget, wireError{http.StatusUnauthorized, "UNKNOWN_WIDGET_KEY", 0}},
	{ErrRateLimited, wireError{http.StatusTooManyRequests, "RATE_LIMITED", 0}},
	{ErrTokenExpired, wireError{http.StatusUnauthorized, "TOKEN_EXPIRED", 0}},
	{ErrInvalidVisitorToken, wireError{http.StatusUnauthorized, "INVALID_VISITOR_TOKEN", 0}},
	// A forged or foreign bootstrap token: the same code as one used twice or
	// from another origin.
	{ErrBootstrapTokenInvalid, wireError{http.StatusUnauthorized, "INVALID_VISITOR_TOKEN", 0}},
	{ErrGuestNotAllowed, wireError{http.StatusForbidden, "GUEST_NOT_ALLOWED", 0}},
	{ErrIdentityResumeRefused, wireError{http.StatusForbidden, "IDENTITY_RESUME_NOT_ALLOWED", 0}},
	{ErrSessionLimit, wireError{http.StatusTooManyRequests, "SESSION_LIMIT", 0}},
	{ErrModeNotAllowed, wireError{http.StatusForbidden, "MODE_NOT_ALLOWED", 0}},
	{ErrUploadsNotAllowed, wireError{http.StatusForbidden, "UPLOADS_NOT_ALLOWED", 0}},
	{broker.ErrUnknownKey, wireError{http.StatusUnauthorized, "INVALID_API_KEY", 0}},
	{broker.ErrKeyDisabled, wireError{http.StatusForbidden, "KEY_DISABLED", 0}},
	{ErrMissingScope, wireError{http.StatusForbidden, "MISSING_SCOPE", 0}},
	{ErrWidgetNotFound, wireError{http.StatusNotFound, "WIDGET_NOT_FOUND", 0}},
	{ErrKeyNotFound, wireError{http.StatusNotFound, "KEY_NOT_FOUND", 0}},
	{ErrRoomNotFound, wireError{http.StatusNotFound, "ROOM_NOT_FOUND", 0}},
	{ErrNavTargetUnknown, wireError{http.StatusUnprocessableEntity, "NAV_TARGET_UNKNOWN", 0}},
	{broker.ErrUnknownUpload, wireError{http.StatusNotFound, "UPLOAD_NOT_FOUND", 0}},
	{ErrWidgetNotLive, wireError{http.StatusConflict, "WIDGET_NOT_LIVE", 0}},
	{ErrOriginRequired, wireError{http.StatusUnauthorized, "ORIGIN_REQUIRED", 0}},
	{ErrOriginNotAllowed, wireError{http.StatusForbidden, "ORIGIN_NOT_ALLOWED", 0}},
	{ErrChallengeInvalid, wireError{http.StatusUnauthorized, "CHALLENGE_INVALID", 0}},
	{ErrSessionTokenInvalid, wireError{http.StatusUnauthorized, "SESSION_TOKEN_INVALID", 0}},
	{broker.ErrBadToken, wireError{http.StatusUnauthorized, "SESSION_TOKEN_INVALID", 0}},
	{broker.ErrUnknownSession, wireError{http.StatusNotFound, "SESSION_NOT_FOUND", 0}},
	{broker.ErrSessionEnded, wireError{http.StatusGone, "SESSION_ENDED", 0}},
	{broker.ErrSessionExpired, wireError{http.StatusUnauthorized, "SESSION_EXPIRED", 0}},
	{broker.ErrResumeInvalid, wireError{http.StatusUnauthorized, "RESUME_TOKEN_INVALID", 0}},
	{broker.ErrConversationClosed, wireError{http.StatusGone, "CONVERSATION_CLOSED", 0}},
	{broker.ErrUnknownConversation, wireError{http.StatusNotFound, "CONVERSATION_NOT_FOUND", 0}},
	{broker.ErrUnknownVisitor, wireError{http.StatusNotFound, "VISITOR_NOT_FOUND", 0}},
	{broker.ErrAgentUnavailable, wireError{http.StatusServiceUnavailable, "AGENT_UNAVAILABLE", 0}},
	{broker.ErrConversationLimit, wireError{http.StatusServiceUnavailable, "CONVERSATION_LIMIT", 0}},
	{broker.ErrReplyTimeout, wireError{http.StatusGatewayTimeout, "REPLY_TIMEOUT", 0}},
	{ErrUnsupportedMediaType, wireError{http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE", 0}},
	{media.ErrBadSDP, wireError{http.StatusBadRequest, "SDP_INVALID", 0}},
	{media.ErrNoAudio, wireError{http.StatusUnprocessableEntity, "SDP_NO_AUDIO", 0}},
	{media.ErrBadFragment, wireError{http.StatusBadRequest, "SDP_FRAGMENT_INVALID", 0}},
	{ErrPreconditionRequired, wireError{http.StatusPreconditionRequired, "PRECONDITION_REQUIRED", 0}},
	{media.ErrICESessionChanged, wireError{http.StatusPreconditionFailed, "PRECONDITION_FAILED", 0}},
	{ErrLegNotFound, wireError{http.StatusNotFound, "LEG_NOT_FOUND", 0}},
	{media.ErrClosed, wireError{http.StatusNotFound, "LEG_NOT_FOUND", 0}},
	{ErrVoiceUnavailable, wireError{http.StatusServiceUnavailable, "VOICE_UNAVAILABLE", 0}},
	{ErrTransportMismatch, wireError{http.StatusConflict, "TRANSPORT_MISMATCH", 0}},
	{broker.ErrExternalNATS, wireError{http.StatusConflict, "EXTERNAL_NATS", 0}},
	{ErrWebhookInvalid, wireError{http.StatusUnauthorized, "WEBHOOK_SIGNATURE_INVALID", 0}},
	{media.ErrLiveKit, wireError{http.StatusServiceUnavailable, "LIVEKIT_UNAVAILABLE", 0}},
	{ErrNotFound, wireError{http.StatusNotFound, "NOT_FOUND", 0}},
	{ErrMethodNotAllowed, wireError{http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", 0}},
	{broker.ErrStoreUnwritable, wireError{http.StatusServiceUnavailable, "STORE_UNWRITABLE", 0}},
	{broker.ErrStoreTimeout, wireError{http.StatusServiceUnavailable, "STORE_TIMEOUT", 0}},
	{broker.ErrStoreFull, wireError{http.StatusServiceUnavailable, "STORE_FULL", 0}},
	{broker.ErrNotReady, wireError{http.StatusServiceUnavailable, "NOT_READY", 0}},
	{broker.ErrClosed, wireError{http.StatusServiceUnavailable, "SHUTTING_DOWN", 0}},
	{broker.ErrStore, wireError{http.StatusServiceUnavailable, "STORE_UNAVAILABLE", 0}},
	// How a chat WebSocket ends.
	{errLegShutdown, wireError{0, "SHUTTING_DOWN", websocket.StatusGoingAway}},
	{errLegSlowConsumer, wireError{0, "SLOW_CONSUMER", websocket.StatusPolicyViolation}},
	{errLegPingTimeout, wireError{0, "PING_TIMEOUT", websocket.StatusPolicyViolation}},
	{errLegFeedEnded, wireError{0, "RECONNECT", websocket.StatusTryAgainLater}},
	{errLegSessionEnded, wireError{0, "SESSION_ENDED", websocket.StatusNormalClosure}},
	{errLegConversationClosed, wireError{0, "CONVERSATION_CLOSED", websocket.StatusNormalClosure}},
}

var internalError = wireError{status: http.StatusInternalServerError, code: "INTERNAL"}

// classify returns the wire form of err and a message safe to show: the
// detail after the sentinel for caller mistakes, a fixed text otherwise.
func classify(err error) (wireError, string) {
	for _, m := range wireErrors {
		if errors.Is(err, m.err) {
			if m.wire.status >= 500 {
				return m.wire, publicServerMessage(m.wire.code)
			}
			return m.wire, publicMessage(err, m.err)
		}
	}
	return internalError, "internal error"
}

func publicServerMessage(code string) string {
	switch code {
	case "AGENT_UNAVAILABLE":
		return "no agent is available right now; your message is kept and will be answered when one is"
	case "CONVERSATION_LIMIT":
		return "this site's assistant is busy with as many conversations as it may hold right now; your message is kept and will be answered when one ends"
	case "REPLY_TIMEOUT":
		return "the agent did not answer in time; your message is kept"
	case "VOICE_UNAVAILABLE":
		return "this server does not offer voice; use chat"
	case "LIVEKIT_UNAVAILABLE":
		return "the voice service is not reachable right now; use chat or retry shortly"
	case "STORE_TIMEOUT":
		return "the conversation could not be read from storage in time; the operator has been alerted"
	case "STORE_FULL":
		return "the server's storage is full: your message was not kept; retry later"
	case "STORE_UNWRITABLE":
		return "the server cannot store data right now"
	case "SHUTTING_DOWN":
		return "the server is shutting down; retry shortly"
	default:
		return "the service is temporarily unavailable; retry shortly"
	}
}

// publicMessage strips package prefixes: "broker: validation failed: body
// must not be empty" becomes "body must not be empty".
func publicMessage(err, sentinel error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, sentinel.Error()+": "); i >= 0 {
		return msg[i+len(sentinel.Error())+2:]
	}
	return trimPackage(sentinel.Error())
}

// trimPackage drops a "broker: " or "media: " prefix from an error text.
func trimPackage(msg string) string {
	for _, p := range []string{"broker: ", "media: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

// closeCode is the WebSocket close code for an error ending a leg.
func closeCode(err error) int {
	w, _ := classify(err)
	return int(w.closeCode())
}

// closeCode is the table's close code, or the one derived from the status:
// 1013 (try again later) for 503, 1011 for other 5xx, 1008 (policy
// violation) for the rest.
func (w wireError) closeCode() websocket.StatusCode {
	switch {
	case w.ws != 0:
		return w.ws
	case w.status == http.StatusServiceUnavailable:
		return websocket.StatusTryAgainLater
	case w.status >= 500:
		return websocket.StatusInternalError
	default:
		return websocket.StatusPolicyViolation
	}
}
