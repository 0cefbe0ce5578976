package signaling

import (
	"errors"
	"net/http"
	"strings"

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
	// ErrLegNotFound: the session has no voice leg of that id.
	ErrLegNotFound = errors.New("voice leg not found")
	// ErrGuestNotAllowed: the widget requires a verified visitor identity.
	ErrGuestNotAllowed = errors.New("this widget requires a verified visitor identity")
	// ErrModeNotAllowed: the widget does not offer that mode.
	ErrModeNotAllowed = errors.New("mode not allowed")
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

// wireError is how one error is shown on the wire.
type wireError struct {
	status int
	code   string
}

// wireErrors maps sentinel errors to status and code; the first match wins.
// This table is the only place the HTTP edge decides codes.
var wireErrors = []struct {
	err  error
	wire wireError
}{
	{ErrBadRequest, wireError{http.StatusBadRequest, "BAD_REQUEST"}},
	{ErrPayloadTooLarge, wireError{http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE"}},
	{broker.ErrValidation, wireError{http.StatusUnprocessableEntity, "VALIDATION_FAILED"}},
	{ErrUnknownWidget, wireError{http.StatusUnauthorized, "UNKNOWN_WIDGET_KEY"}},
	{broker.ErrUnknownWidget, wireError{http.StatusUnauthorized, "UNKNOWN_WIDGET_KEY"}},
	{ErrRateLimited, wireError{http.StatusTooManyRequests, "RATE_LIMITED"}},
	{ErrTokenExpired, wireError{http.StatusUnauthorized, "TOKEN_EXPIRED"}},
	{ErrInvalidVisitorToken, wireError{http.StatusUnauthorized, "INVALID_VISITOR_TOKEN"}},
	// A forged or foreign bootstrap token: the same code as one used twice or
	// from another origin.
	{ErrBootstrapTokenInvalid, wireError{http.StatusUnauthorized, "INVALID_VISITOR_TOKEN"}},
	{ErrGuestNotAllowed, wireError{http.StatusForbidden, "GUEST_NOT_ALLOWED"}},
	{ErrModeNotAllowed, wireError{http.StatusForbidden, "MODE_NOT_ALLOWED"}},
	{broker.ErrUnknownKey, wireError{http.StatusUnauthorized, "INVALID_API_KEY"}},
	{broker.ErrKeyDisabled, wireError{http.StatusForbidden, "KEY_DISABLED"}},
	{ErrMissingScope, wireError{http.StatusForbidden, "MISSING_SCOPE"}},
	{ErrWidgetNotFound, wireError{http.StatusNotFound, "WIDGET_NOT_FOUND"}},
	{ErrKeyNotFound, wireError{http.StatusNotFound, "KEY_NOT_FOUND"}},
	{ErrRoomNotFound, wireError{http.StatusNotFound, "ROOM_NOT_FOUND"}},
	{ErrNavTargetUnknown, wireError{http.StatusUnprocessableEntity, "NAV_TARGET_UNKNOWN"}},
	{broker.ErrUnknownUpload, wireError{http.StatusNotFound, "UPLOAD_NOT_FOUND"}},
	{ErrWidgetNotLive, wireError{http.StatusConflict, "WIDGET_NOT_LIVE"}},
	{ErrOriginRequired, wireError{http.StatusUnauthorized, "ORIGIN_REQUIRED"}},
	{ErrOriginNotAllowed, wireError{http.StatusForbidden, "ORIGIN_NOT_ALLOWED"}},
	{ErrChallengeInvalid, wireError{http.StatusUnauthorized, "CHALLENGE_INVALID"}},
	{ErrSessionTokenInvalid, wireError{http.StatusUnauthorized, "SESSION_TOKEN_INVALID"}},
	{broker.ErrBadToken, wireError{http.StatusUnauthorized, "SESSION_TOKEN_INVALID"}},
	{broker.ErrUnknownSession, wireError{http.StatusNotFound, "SESSION_NOT_FOUND"}},
	{broker.ErrSessionEnded, wireError{http.StatusGone, "SESSION_ENDED"}},
	{broker.ErrSessionExpired, wireError{http.StatusUnauthorized, "SESSION_EXPIRED"}},
	{broker.ErrResumeInvalid, wireError{http.StatusUnauthorized, "RESUME_TOKEN_INVALID"}},
	{broker.ErrUnknownConversation, wireError{http.StatusNotFound, "CONVERSATION_NOT_FOUND"}},
	{broker.ErrUnknownVisitor, wireError{http.StatusNotFound, "VISITOR_NOT_FOUND"}},
	{broker.ErrAgentUnavailable, wireError{http.StatusServiceUnavailable, "AGENT_UNAVAILABLE"}},
	{broker.ErrReplyTimeout, wireError{http.StatusGatewayTimeout, "REPLY_TIMEOUT"}},
	{ErrUnsupportedMediaType, wireError{http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE"}},
	{media.ErrBadSDP, wireError{http.StatusBadRequest, "SDP_INVALID"}},
	{media.ErrNoAudio, wireError{http.StatusUnprocessableEntity, "SDP_NO_AUDIO"}},
	{media.ErrBadFragment, wireError{http.StatusBadRequest, "SDP_FRAGMENT_INVALID"}},
	{ErrLegNotFound, wireError{http.StatusNotFound, "LEG_NOT_FOUND"}},
	{media.ErrClosed, wireError{http.StatusNotFound, "LEG_NOT_FOUND"}},
	{ErrVoiceUnavailable, wireError{http.StatusServiceUnavailable, "VOICE_UNAVAILABLE"}},
	{ErrTransportMismatch, wireError{http.StatusConflict, "TRANSPORT_MISMATCH"}},
	{ErrWebhookInvalid, wireError{http.StatusUnauthorized, "WEBHOOK_SIGNATURE_INVALID"}},
	{media.ErrLiveKit, wireError{http.StatusServiceUnavailable, "LIVEKIT_UNAVAILABLE"}},
	{ErrNotFound, wireError{http.StatusNotFound, "NOT_FOUND"}},
	{ErrMethodNotAllowed, wireError{http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED"}},
	{broker.ErrStoreUnwritable, wireError{http.StatusServiceUnavailable, "STORE_UNWRITABLE"}},
	{broker.ErrStoreTimeout, wireError{http.StatusServiceUnavailable, "STORE_TIMEOUT"}},
	{broker.ErrStoreFull, wireError{http.StatusServiceUnavailable, "STORE_FULL"}},
	{broker.ErrNotReady, wireError{http.StatusServiceUnavailable, "NOT_READY"}},
	{broker.ErrClosed, wireError{http.StatusServiceUnavailable, "SHUTTING_DOWN"}},
	{broker.ErrStore, wireError{http.StatusServiceUnavailable, "STORE_UNAVAILABLE"}},
}

var internalError = wireError{http.StatusInternalServerError, "INTERNAL"}

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
	switch {
	case w.status == http.StatusServiceUnavailable:
		return 1013 // try again later
	case w.status >= 500:
		return 1011
	default:
		return 1008 // policy violation
	}
}
