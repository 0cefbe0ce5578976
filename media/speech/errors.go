package speech

import (
	"errors"
	"strconv"
	"strings"
)

// Code says what kind of failure an *Error is, so that a caller can tell the
// visitor something useful ("speech recognition is down") without parsing
// messages. The broker maps codes to what it says at its own edge.
type Code string

// The codes of *Error, each with a sentinel for errors.Is.
const (
	// CodeUnavailable: the engine is not installed or not configured
	// (a missing binary, model, voice, base URL or key).
	CodeUnavailable Code = "unavailable"
	// CodeDown: the provider could not be reached, or answered 5xx or 429.
	CodeDown Code = "down"
	// CodeTimeout: the engine or provider took longer than its time limit.
	CodeTimeout Code = "timeout"
	// CodeRejected: the input was refused: over a limit, or a provider's
	// 4xx (a bad key, an unknown model).
	CodeRejected Code = "rejected"
	// CodeBadResponse: the provider's answer was not what the protocol
	// promises (not JSON, not audio, empty audio).
	CodeBadResponse Code = "bad_response"
	// CodeFailed: a local tool exited with an error or wrote more than its
	// cap.
	CodeFailed Code = "failed"
	// CodeCanceled: the caller's context was cancelled (a barge-in).
	CodeCanceled Code = "canceled"
)

// Sentinels matching *Error by Code (errors.Is(err, ErrTimeout)).
var (
	ErrUnavailable = errors.New("speech: engine unavailable")
	ErrDown        = errors.New("speech: provider unreachable")
	ErrTimeout     = errors.New("speech: engine too slow")
	ErrRejected    = errors.New("speech: input rejected")
	ErrBadResponse = errors.New("speech: bad response from provider")
	ErrFailed      = errors.New("speech: engine failed")
	ErrCanceled    = errors.New("speech: canceled")
)

// sentinel is the sentinel error of a code (a switch, not a map, so the
// package holds no mutable state).
func sentinel(c Code) error {
	switch c {
	case CodeUnavailable:
		return ErrUnavailable
	case CodeDown:
		return ErrDown
	case CodeTimeout:
		return ErrTimeout
	case CodeRejected:
		return ErrRejected
	case CodeBadResponse:
		return ErrBadResponse
	case CodeFailed:
		return ErrFailed
	case CodeCanceled:
		return ErrCanceled
	}
	return nil
}

// Error is every error the engines return. It never holds a key or the
// audio; Detail is short, plain text, safe to log.
type Error struct {
	Code   Code
	Engine string // "pocketsphinx", "flite", "espeak-ng", "openai"
	Op     string // "transcribe", "synthesize", "check"
	Status int    // the provider's HTTP status, when there was one
	Detail string // what happened, for a log line
	Err    error  // the cause (context.Canceled, an *exec.ExitError, …), may be nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("speech: ")
	b.WriteString(e.Engine)
	if e.Op != "" {
		b.WriteString(" " + e.Op)
	}
	b.WriteString(": " + string(e.Code))
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

// Unwrap gives both the code's sentinel and the cause, so errors.Is works
// with ErrTimeout and with context.DeadlineExceeded alike.
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
