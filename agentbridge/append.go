package agentbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Error codes of the broker's replies to agent requests (AppendReply,
// ReadReply). docs/PROTOCOL.md lists when each is sent.
const (
	CodeBadEvent            = "BAD_EVENT"
	CodeUnsupportedVersion  = "UNSUPPORTED_VERSION"
	CodeTypeNotAllowed      = "TYPE_NOT_ALLOWED"
	CodeTooLarge            = "TOO_LARGE"
	CodeEpochRequired       = "EPOCH_REQUIRED"
	CodeUnknownConversation = "UNKNOWN_CONVERSATION"
	CodeNotHolder           = "NOT_HOLDER"
	CodeStaleEpoch          = "STALE_EPOCH"
	CodeStoreUnavailable    = "STORE_UNAVAILABLE"
	CodeStoreFull           = "STORE_FULL"
	CodeNotReady            = "NOT_READY"
)

// ProtocolError is a coded refusal of an agent request. It is also the
// error the Go SDK returns for one.
type ProtocolError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *ProtocolError) Error() string { return "agentbridge: " + e.Code + ": " + e.Message }

// Retryable reports whether the same request may succeed later unchanged
// (the store was unavailable or the broker not ready).
func (e *ProtocolError) Retryable() bool {
	return e.Code == CodeStoreUnavailable || e.Code == CodeNotReady
}

func refuse(code, format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AppendReply is the broker's answer to an append: the stored event's log
// position, or why it was refused (nothing was stored).
type AppendReply struct {
	Seq       uint64         `json:"seq,omitempty"`
	Duplicate bool           `json:"duplicate,omitempty"`
	Error     *ProtocolError `json:"error,omitempty"`
}

// ReadRequest asks the broker for a conversation's log from FromSeq (0: its
// start), at most Limit events (0: MaxReadEvents).
type ReadRequest struct {
	V              int    `json:"v"`
	ConversationID string `json:"conversation_id"`
	FromSeq        uint64 `json:"from_seq"`
	Limit          int    `json:"limit,omitempty"`
}

// ReadReply carries events in log order, each with its seq and prev_seq.
// More means the log goes on: read again from the last event's seq + 1.
type ReadReply struct {
	Events []Event        `json:"events"`
	More   bool           `json:"more,omitempty"`
	Error  *ProtocolError `json:"error,omitempty"`
}

// Bounds of one read reply.
const (
	MaxReadEvents = 500
	MaxReadBytes  = 512 << 10
)

// Limits bound what an agent may append. The zero value of a field means
// its default.
type Limits struct {
	// MaxDeltaBytes bounds a text_delta's text (default 16 KiB).
	MaxDeltaBytes int
	// MaxReplyBytes bounds a text_done's and a transcript's text (default
	// 64 KiB).
	MaxReplyBytes int
	// MaxActionBytes bounds an action's data (default 16 KiB).
	MaxActionBytes int
}

// Default limits.
const (
	DefaultMaxDeltaBytes  = 16 << 10
	DefaultMaxReplyBytes  = 64 << 10
	DefaultMaxActionBytes = 16 << 10
	// MaxAppendBytes bounds an append request's whole body.
	MaxAppendBytes = 256 << 10
	// MaxMsgIDLen bounds an append's idempotency key.
	MaxMsgIDLen = 200
	// maxReasonLen bounds a text_done's reason.
	maxReasonLen = 64
	// maxIndex bounds a text_delta's index.
	maxIndex = 1 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxDeltaBytes <= 0 {
		l.MaxDeltaBytes = DefaultMaxDeltaBytes
	}
	if l.MaxReplyBytes <= 0 {
		l.MaxReplyBytes = DefaultMaxReplyBytes
	}
	if l.MaxActionBytes <= 0 {
		l.MaxActionBytes = DefaultMaxActionBytes
	}
	return l
}

// IsAgentType reports whether agents may append events of type t.
func IsAgentType(t string) bool {
	switch t {
	case EventTextDelta, EventTextDone, EventTranscript, EventAgentState, EventAction, EventClearAudio:
		return true
	}
	return false
}

// DecodeAgentEvent parses and checks an append request's body. It returns a
// fresh event holding only the envelope and the fields of its type (any
// other field is dropped), or a coded refusal. It checks what can be
// checked without state: that the worker holds the conversation is the
// broker's part.
func DecodeAgentEvent(data []byte, lim Limits) (Event, *ProtocolError) {
	lim = lim.withDefaults()
	if len(data) > MaxAppendBytes {
		return Event{}, refuse(CodeTooLarge, "event is %d bytes, over %d", len(data), MaxAppendBytes)
	}
	var in Event
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&in); err != nil {
		return Event{}, refuse(CodeBadEvent, "not a JSON event: %v", err)
	}
	if dec.More() {
		return Event{}, refuse(CodeBadEvent, "trailing data after the event")
	}
	if in.V != Version {
		return Event{}, refuse(CodeUnsupportedVersion, "v is %d; this broker speaks v%d", in.V, Version)
	}
	if !IsAgentType(in.Type) {
		return Event{}, refuse(CodeTypeNotAllowed, "agents may not append %q events", truncate(in.Type, 40))
	}
	if !validID(in.ConversationID, "conv_") {
		return Event{}, refuse(CodeBadEvent, "conversation_id is not a conversation id")
	}
	if !ValidToken(in.WorkerID) {
		return Event{}, refuse(CodeBadEvent, "worker_id must be 1-128 characters of [A-Za-z0-9_-]")
	}
	if in.Epoch == 0 {
		return Event{}, refuse(CodeEpochRequired, "epoch is required: the epoch of the dispatch the worker accepted")
	}
	out := Event{V: Version, Type: in.Type, ConversationID: in.ConversationID,
		WorkerID: in.WorkerID, Epoch: in.Epoch}
	switch in.Type {
	case EventTextDelta, EventTextDone:
		if !ValidToken(in.MessageID) {
			return Event{}, refuse(CodeBadEvent, "%s needs a message_id of 1-128 characters of [A-Za-z0-9_-]", in.Type)
		}
		if in.ReplyTo != "" && !ValidToken(in.ReplyTo) {
			return Event{}, refuse(CodeBadEvent, "reply_to must be a message id")
		}
		max := lim.MaxReplyBytes
		if in.Type == EventTextDelta {
			max = lim.MaxDeltaBytes
			if in.Index < 0 || in.Index > maxIndex {
				return Event{}, refuse(CodeBadEvent, "index must be 0-%d", maxIndex)
			}
			if in.Text == "" {
				return Event{}, refuse(CodeBadEvent, "text_delta needs text")
			}
			out.Index = in.Index
		} else {
			if len(in.Reason) > maxReasonLen || in.Reason != "" && !ValidToken(in.Reason) {
				return Event{}, refuse(CodeBadEvent, "reason must be a short token")
			}
			out.Interrupted, out.Reason = in.Interrupted, in.Reason
		}
		if err := checkText(in.Type, in.Text, max); err != nil {
			return Event{}, err
		}
		out.MessageID, out.ReplyTo, out.Text = in.MessageID, in.ReplyTo, in.Text
	case EventTranscript:
		if in.MessageID != "" && !ValidToken(in.MessageID) {
			return Event{}, refuse(CodeBadEvent, "message_id must be 1-128 characters of [A-Za-z0-9_-]")
		}
		if in.Via != "" && in.Via != "voice" {
			return Event{}, refuse(CodeBadEvent, `a transcript's via is "voice"`)
		}
		if err := checkText(in.Type, in.Text, lim.MaxReplyBytes); err != nil {
			return Event{}, err
		}
		out.MessageID, out.Text, out.Final, out.Via = in.MessageID, in.Text, in.Final, "voice"
	case EventAgentState:
		switch in.State {
		case StateIdle, StateThinking, StateSpeaking, StateListening:
		default:
			return Event{}, refuse(CodeBadEvent, "state must be idle, thinking, speaking or listening")
		}
		if in.ReplyTo != "" && !ValidToken(in.ReplyTo) {
			return Event{}, refuse(CodeBadEvent, "reply_to must be a message id")
		}
		out.State, out.ReplyTo = in.State, in.ReplyTo
	case EventAction:
		switch in.Action {
		case ActionNavigate, ActionCaptureRequest, ActionHandoff, ActionEnd:
		default:
			return Event{}, refuse(CodeBadEvent, "action must be navigate, capture_request, handoff or end")
		}
		if len(in.Data) > lim.MaxActionBytes {
			return Event{}, refuse(CodeTooLarge, "action data is %d bytes, over %d", len(in.Data), lim.MaxActionBytes)
		}
		data := bytes.TrimSpace(in.Data)
		if len(data) == 0 {
			data = []byte("{}")
		}
		if data[0] != '{' {
			return Event{}, refuse(CodeBadEvent, "action data must be a JSON object")
		}
		out.Action, out.Data = in.Action, json.RawMessage(bytes.Clone(data))
	case EventClearAudio:
	}
	return out, nil
}

func checkText(typ, text string, max int) *ProtocolError {
	if len(text) > max {
		return refuse(CodeTooLarge, "%s text is %d bytes, over %d", typ, len(text), max)
	}
	if !utf8.ValidString(text) {
		return refuse(CodeBadEvent, "%s text is not valid UTF-8", typ)
	}
	return nil
}

// ValidMsgID reports whether key can be an append's idempotency key.
func ValidMsgID(key string) bool {
	if key == "" || len(key) > MaxMsgIDLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func validID(id, prefix string) bool {
	return len(id) > len(prefix) && id[:len(prefix)] == prefix && ValidToken(id)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// UploadRequest asks the broker for a file the visitor attached to one of
// the agent's conversations. The broker answers with a stream of messages
// to the request's reply subject: the file's bytes in order, at most
// UploadChunkBytes each, with HeaderUploadOffset and HeaderUploadSize; the
// first also carries Content-Type and HeaderFileName, the last
// HeaderUploadLast. A refusal is one message with HeaderError (its code)
// and a JSON {"error":{…}} body.
type UploadRequest struct {
	V              int    `json:"v"`
	ConversationID string `json:"conversation_id"`
	UploadID       string `json:"upload_id"`
}

// Headers of an upload reply stream.
const (
	HeaderUploadOffset = "Parley-Offset"
	HeaderUploadSize   = "Parley-Size"
	HeaderUploadLast   = "Parley-Last"
	HeaderFileName     = "Parley-File-Name"
	HeaderError        = "Parley-Error"
)

// UploadChunkBytes bounds one message of an upload reply stream.
const UploadChunkBytes = 256 << 10

// CodeUnknownUpload refuses an upload the conversation does not have.
const CodeUnknownUpload = "UNKNOWN_UPLOAD"
