package assistant

import (
	"errors"
	"strconv"
	"strings"
)

// Code says what kind of failure an *Error is; the agent logs it and tells
// the visitor only that it cannot answer now.
type Code string

// The codes of *Error.
const (
	// CodeDown: the endpoint could not be reached, cut the stream, or
	// answered 5xx or 429.
	CodeDown Code = "down"
	// CodeTimeout: the endpoint kept the reply waiting longer than the
	// timeout (before it started, or between two pieces).
	CodeTimeout Code = "timeout"
	// CodeRejected: the endpoint answered 4xx (a bad key, an unknown
	// model).
	CodeRejected Code = "rejected"
	// CodeBadResponse: the answer was not the protocol's (not an event
	// stream of JSON chunks, no text, no [DONE]).
	CodeBadResponse Code = "bad_response"
	// CodeCanceled: the caller cancelled (a barge-in, a shutdown).
	CodeCanceled Code = "canceled"
)

// Sentinels matching *Error by Code (errors.Is(err, ErrTimeout)).
var (
	ErrDown        = errors.New("assistant: endpoint unreachable")
	ErrTimeout     = errors.New("assistant: endpoint too slow")
	ErrRejected    = errors.New("assistant: request rejected")
	ErrBadResponse = errors.New("assistant: bad response from endpoint")
	ErrCanceled    = errors.New("assistant: canceled")
)

// sentinel is the sentinel error of a code.
func sentinel(c Code) error {
	switch c {
	case CodeDown:
		return ErrDown
	case CodeTimeout:
		return ErrTimeout
	case CodeRejected:
		return ErrRejected
	case CodeBadResponse:
		return ErrBadResponse
	case CodeCanceled:
		return ErrCanceled
	}
	return nil
}

// Error is every failure of Client.Stream. It never holds the key or the
// conversation; Detail is one short line, safe to log.
type Error struct {
	Code   Code
	Status int    // the endpoint's HTTP status, when there was one
	Detail string // what happened
	Err    error  // the cause (context.Canceled, …), may be nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("assistant: chat completion: " + string(e.Code))
	if e.Status != 0 {
		b.WriteString(" (HTTP " + strconv.Itoa(e.Status) + ")")
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap gives both the code's sentinel and the cause.
func (e *Error) Unwrap() []error {
	var out []error
	if s := sentinel(e.Code); s != nil {
		out = append(out, s)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// CodeOf returns err's Code, or "" when err is not (or wraps no) *Error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
