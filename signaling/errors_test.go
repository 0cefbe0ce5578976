package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/media"
)

// secretDetail stands for internal detail (addresses, paths, keys) that
// must never reach a client in a 5xx.
const secretDetail = "nats://10.0.0.7:4222 sk_live_SECRET /var/lib/parley"

func TestClassifyEveryWireError(t *testing.T) {
	t.Parallel()
	if len(wireErrors) == 0 {
		t.Fatal("no wire errors")
	}
	for _, m := range wireErrors {
		detail := "detail for " + m.wire.code
		if m.wire.status >= 500 {
			detail = secretDetail
		}
		err := fmt.Errorf("signaling: handler: %w", fmt.Errorf("op: %w: %s", m.err, detail))
		w, msg := classify(err)
		if w != m.wire {
			t.Errorf("%v: classified as %+v, want %+v", m.err, w, m.wire)
			continue
		}
		if m.wire.status >= 500 {
			if msg != publicServerMessage(m.wire.code) || strings.Contains(msg, "10.0.0.7") || strings.Contains(msg, "SECRET") ||
				strings.Contains(msg, m.err.Error()) {
				t.Errorf("%v: 5xx message %q leaks or is not the fixed text", m.err, msg)
			}
			continue
		}
		if msg != detail {
			t.Errorf("%v: message %q, want %q", m.err, msg, detail)
		}
		// The bare sentinel shows its own text, without a package prefix.
		if _, msg := classify(m.err); msg != trimPackage(m.err.Error()) || strings.Contains(msg, ": ") && strings.HasPrefix(msg, "media") {
			t.Errorf("%v: bare message %q", m.err, msg)
		}
	}
}

func TestClassifyStatusesAndCodes(t *testing.T) {
	t.Parallel()
	// The contract with clients, spelled out.
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{ErrBadRequest, 400, "BAD_REQUEST"},
		{ErrPayloadTooLarge, 413, "PAYLOAD_TOO_LARGE"},
		{broker.ErrValidation, 422, "VALIDATION_FAILED"},
		{ErrUnknownWidget, 401, "UNKNOWN_WIDGET_KEY"},
		{ErrWidgetNotLive, 409, "WIDGET_NOT_LIVE"},
		{broker.ErrExternalNATS, 409, "EXTERNAL_NATS"},
		{ErrOriginRequired, 401, "ORIGIN_REQUIRED"},
		{ErrOriginNotAllowed, 403, "ORIGIN_NOT_ALLOWED"},
		{ErrChallengeInvalid, 401, "CHALLENGE_INVALID"},
		{ErrSessionTokenInvalid, 401, "SESSION_TOKEN_INVALID"},
		{broker.ErrBadToken, 401, "SESSION_TOKEN_INVALID"},
		{broker.ErrUnknownSession, 404, "SESSION_NOT_FOUND"},
		{broker.ErrSessionEnded, 410, "SESSION_ENDED"},
		{broker.ErrSessionExpired, 401, "SESSION_EXPIRED"},
		{broker.ErrResumeInvalid, 401, "RESUME_TOKEN_INVALID"},
		{broker.ErrUnknownConversation, 404, "CONVERSATION_NOT_FOUND"},
		{broker.ErrAgentUnavailable, 503, "AGENT_UNAVAILABLE"},
		{broker.ErrReplyTimeout, 504, "REPLY_TIMEOUT"},
		{ErrNotFound, 404, "NOT_FOUND"},
		{ErrMethodNotAllowed, 405, "METHOD_NOT_ALLOWED"},
		{ErrPreconditionRequired, 428, "PRECONDITION_REQUIRED"},
		{media.ErrICESessionChanged, 412, "PRECONDITION_FAILED"},
		{broker.ErrNotReady, 503, "NOT_READY"},
		{broker.ErrClosed, 503, "SHUTTING_DOWN"},
		{broker.ErrStore, 503, "STORE_UNAVAILABLE"},
		{broker.ErrStoreTimeout, 503, "STORE_TIMEOUT"},
		{broker.ErrStoreFull, 503, "STORE_FULL"},
		{broker.ErrStoreUnwritable, 503, "STORE_UNWRITABLE"},
		// Readiness failing because the store is full is about readiness.
		{fmt.Errorf("%w: %w", broker.ErrStoreUnwritable, broker.ErrStoreFull), 503, "STORE_UNWRITABLE"},
	}
	for _, tt := range tests {
		w, _ := classify(fmt.Errorf("x: %w", tt.err))
		if w.status != tt.status || w.code != tt.code {
			t.Errorf("%v: %d %s, want %d %s", tt.err, w.status, w.code, tt.status, tt.code)
		}
	}
}

func TestClassifyUnknownErrorsAreInternal(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		errors.New(secretDetail),
		fmt.Errorf("open %s: permission denied", secretDetail),
		io.ErrUnexpectedEOF,
		context.Canceled,
		broker.ErrNonceUsed,      // not mapped: must not leak as a 4xx by accident
		broker.ErrSlowSubscriber, // idem
		nil,
	} {
		w, msg := classify(err)
		if w.status != http.StatusInternalServerError || w.code != "INTERNAL" {
			t.Errorf("%v: %+v, want 500 INTERNAL", err, w)
		}
		if msg != "internal error" {
			t.Errorf("%v: message %q, want the generic one", err, msg)
		}
	}
}

func TestClassifyJoinedAndWrappedTwice(t *testing.T) {
	t.Parallel()
	// errors.Join and %w twice keep the sentinel visible.
	err := fmt.Errorf("a: %w", fmt.Errorf("b: %w", errors.Join(errors.New("other"), fmt.Errorf("%w: gone", broker.ErrSessionEnded))))
	if w, _ := classify(err); w.code != "SESSION_ENDED" {
		t.Fatalf("classified as %+v", w)
	}
}

func TestPublicMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err      error
		sentinel error
		want     string
	}{
		{fmt.Errorf("%w: body must not be empty", broker.ErrValidation), broker.ErrValidation, "body must not be empty"},
		{fmt.Errorf("post: %w", fmt.Errorf("%w: body must not be empty", broker.ErrValidation)), broker.ErrValidation, "body must not be empty"},
		{fmt.Errorf("%w: Content-Type must be application/json", ErrBadRequest), ErrBadRequest, "Content-Type must be application/json"},
		{fmt.Errorf("%w: a: b: c", ErrBadRequest), ErrBadRequest, "a: b: c"},
		{broker.ErrValidation, broker.ErrValidation, "validation failed"},
		{fmt.Errorf("post: %w", broker.ErrSessionEnded), broker.ErrSessionEnded, "session ended"},
		{fmt.Errorf("%w (no detail)", broker.ErrUnknownSession), broker.ErrUnknownSession, "unknown session"},
		{ErrBadRequest, ErrBadRequest, "bad request"},
		{fmt.Errorf("%w: https://evil.example", ErrOriginNotAllowed), ErrOriginNotAllowed, "https://evil.example"},
	}
	for _, tt := range tests {
		if got := publicMessage(tt.err, tt.sentinel); got != tt.want {
			t.Errorf("publicMessage(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestPublicServerMessagesAreFixed(t *testing.T) {
	t.Parallel()
	for _, m := range wireErrors {
		if m.wire.status < 500 {
			continue
		}
		msg := publicServerMessage(m.wire.code)
		if msg == "" || strings.Contains(msg, "broker:") {
			t.Errorf("%s: message %q", m.wire.code, msg)
		}
	}
}

func TestCloseCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want int
	}{
		{broker.ErrAgentUnavailable, 1013},
		{broker.ErrNotReady, 1013},
		{broker.ErrClosed, 1013},
		{broker.ErrStore, 1013},
		{broker.ErrReplyTimeout, 1011},
		{errors.New("boom"), 1011},
		{ErrSessionTokenInvalid, 1008},
		{broker.ErrSessionEnded, 1008},
		{broker.ErrSessionExpired, 1008},
		{ErrBadRequest, 1008},
		{fmt.Errorf("x: %w", ErrOriginNotAllowed), 1008},
	}
	for _, tt := range tests {
		if got := closeCode(tt.err); got != tt.want {
			t.Errorf("closeCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestWriteErrorShape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err     error
		status  int
		code    string
		message string
		details map[string]any
	}{
		{fmt.Errorf("%w: body must not be empty", broker.ErrValidation), 422, "VALIDATION_FAILED", "body must not be empty", map[string]any{"field": "body"}},
		{fmt.Errorf("%w: %s", broker.ErrStore, secretDetail), 503, "STORE_UNAVAILABLE", publicServerMessage("STORE_UNAVAILABLE"), nil},
		{errors.New(secretDetail), 500, "INTERNAL", "internal error", nil},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		writeErrorDetails(rec, tt.err, tt.details)
		if rec.Code != tt.status {
			t.Errorf("%v: status %d, want %d", tt.err, rec.Code, tt.status)
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%v: Content-Type %q", tt.err, ct)
		}
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%v: Cache-Control %q", tt.err, rec.Header().Get("Cache-Control"))
		}
		body := rec.Body.String()
		if strings.Contains(body, "SECRET") || strings.Contains(body, "10.0.0.7") {
			t.Errorf("%v: body leaks detail: %s", tt.err, body)
		}
		var got struct {
			Error struct {
				Code    string         `json:"code"`
				Message string         `json:"message"`
				Details map[string]any `json:"details"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%v: body %q: %v", tt.err, body, err)
		}
		if got.Error.Code != tt.code || got.Error.Message != tt.message {
			t.Errorf("%v: body %s", tt.err, body)
		}
		if (tt.details == nil) != (got.Error.Details == nil) || (tt.details != nil && got.Error.Details["field"] != tt.details["field"]) {
			t.Errorf("%v: details %v, want %v", tt.err, got.Error.Details, tt.details)
		}
		if tt.details == nil && strings.Contains(body, "details") {
			t.Errorf("%v: empty details written: %s", tt.err, body)
		}
	}
	// writeError is writeErrorDetails without details.
	rec := httptest.NewRecorder()
	writeError(rec, ErrNotFound)
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), `"code":"NOT_FOUND"`) {
		t.Errorf("writeError: %d %s", rec.Code, rec.Body)
	}
}

// TestLegEnds: how a chat WebSocket ends, from the one wire error table
// (the close codes and reasons clients see, spelled out).
func TestLegEnds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err    error
		code   int
		reason string
	}{
		{nil, 1000, ""},
		{errLegSessionEnded, 1000, "SESSION_ENDED"},
		{errLegShutdown, 1001, "SHUTTING_DOWN"},
		{errLegSlowConsumer, 1008, "SLOW_CONSUMER"},
		{errLegPingTimeout, 1008, "PING_TIMEOUT"},
		{errFrameTooLarge, 1009, "PAYLOAD_TOO_LARGE"},
		{errLegFeedEnded, 1013, "RECONNECT"},
		{fmt.Errorf("subscribe: %w", broker.ErrClosed), 1013, "SHUTTING_DOWN"},
		{fmt.Errorf("read log: %w", broker.ErrStoreTimeout), 1013, "STORE_TIMEOUT"},
		{errors.New("boom"), 1011, "INTERNAL"},
	}
	for _, tt := range tests {
		if got := endLeg(tt.err); int(got.code) != tt.code || got.reason != tt.reason {
			t.Errorf("endLeg(%v) = %d %q, want %d %q", tt.err, got.code, got.reason, tt.code, tt.reason)
		}
	}
}
