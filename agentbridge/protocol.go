// Package agentbridge is Parley's agent wire protocol (version 2) and the Go
// SDK that agent authors import.
//
// The protocol is core NATS only, confined to one subject namespace per
// agent (<prefix>.agents.<agent>.>): JSON requests to the broker for
// anything durable (the broker validates an agent's event, stores it in the
// conversation's log and answers once it is stored), JSON events from the
// broker for everything stored, and binary audio frames with metadata in
// headers for anything that must be fast. The broker is the only writer of
// the log. docs/PROTOCOL.md describes it for authors in other languages;
// this file is its Go form.
package agentbridge

import (
	"encoding/json"
	"strings"
	"time"
)

// Version is the protocol version carried in every event's, request's and
// heartbeat's "v" field. Messages with another version are refused.
const Version = 2

// DefaultPrefix is the subject prefix used when none is configured.
const DefaultPrefix = "parley"

// Event types only the broker writes (on parley.conv.<cid>.in.event).
const (
	EventUserMessage    = "user_message"
	EventModeChanged    = "mode_changed"
	EventCapture        = "capture"
	EventSessionStarted = "session_started"
	EventSessionEnded   = "session_ended"
	// EventUserSpeechStarted and EventUserSpeechStopped bracket the
	// visitor's speech on a voice leg (At is the onset, or the end of the
	// last voiced frame; Source says how it was detected).
	EventUserSpeechStarted = "user_speech_started"
	EventUserSpeechStopped = "user_speech_stopped"
	// EventInterrupt tells the agent to stop the reply MessageID (if any):
	// the visitor spoke over it (Reason ReasonBargeIn, HeardMS of it
	// played). That reply counts as interrupted in the log whatever the
	// agent appends to it later.
	EventInterrupt = "interrupt"
	// EventAgentSpeaking: the broker's speech pipeline is about to speak a
	// sentence (Text) of the reply MessageID, from At for DurationMS: the
	// captions of the call. Agents may ignore it.
	EventAgentSpeaking = "agent_speaking"
	// EventMediaState reports a voice leg's connection state (connected,
	// disconnected, failed, closed); agents may ignore it.
	EventMediaState = "media_state"
	// EventAgentAssigned records that a worker took the conversation
	// under an epoch. From it on, agent events of older epochs are ignored
	// (fencing), and a worker that sees a newer epoch than its own has lost
	// the conversation. The Go SDK handles it; handlers never see it.
	EventAgentAssigned = "agent_assigned"
)

// Event types agents may append (the broker stores them on
// parley.conv.<cid>.out.event).
const (
	EventTextDelta  = "text_delta"
	EventTextDone   = "text_done"
	EventTranscript = "transcript"
	EventAgentState = "agent_state"
	EventAction     = "action"
	EventClearAudio = "clear_audio"
)

// Agent states carried by agent_state events.
const (
	StateIdle      = "idle"
	StateThinking  = "thinking"
	StateSpeaking  = "speaking"
	StateListening = "listening"
)

// Actions carried by action events.
const (
	ActionNavigate       = "navigate"
	ActionCaptureRequest = "capture_request"
	ActionHandoff        = "handoff"
	ActionEnd            = "end"
)

// Conversation modes.
const (
	ModeChat  = "chat"
	ModeVoice = "voice"
)

// Event is one entry of a conversation's durable log. It is a flat JSON
// object: the envelope (v, type, conversation_id, seq, ts) plus the fields
// that its type uses; docs/PROTOCOL.md lists which.
//
// Seq is the event's position in the log (its JetStream stream sequence).
// Writers leave it zero; the log assigns it and every reader sees it.
// PrevSeq is the Seq of the conversation's previous event (0 for its first):
// the broker stores it with the event, so a reader that saw Seq L and gets
// an event whose PrevSeq is not L knows it missed something (Sequencer).
type Event struct {
	V              int       `json:"v"`
	Type           string    `json:"type"`
	ConversationID string    `json:"conversation_id"`
	Seq            uint64    `json:"seq"`
	PrevSeq        uint64    `json:"prev_seq,omitempty"`
	TS             time.Time `json:"ts"`

	// MessageID names a visitor message (user_message) or an agent reply
	// (text_delta, text_done).
	MessageID string `json:"message_id,omitempty"`
	// ReplyTo is the visitor message an agent event answers.
	ReplyTo string `json:"reply_to,omitempty"`
	// SessionID is the visitor session that caused a broker event.
	SessionID string `json:"session_id,omitempty"`
	// ClientMessageID is the visitor's idempotency key for user_message.
	ClientMessageID string `json:"client_message_id,omitempty"`
	// Text is the message body, a streamed delta, a full reply or a transcript.
	Text string `json:"text,omitempty"`
	// Index numbers the text_delta chunks of one reply from 0.
	Index int `json:"index,omitempty"`
	// Mode is the conversation mode (session_started, mode_changed).
	Mode string `json:"mode,omitempty"`
	// PreviousMode is the mode before a mode_changed event.
	PreviousMode string `json:"previous_mode,omitempty"`
	// Via is how a visitor turn came in: "chat" (typed) or "voice"
	// (user_message from a voice leg; transcripts are always voice).
	Via string `json:"via,omitempty"`
	// Attachments are the visitor's uploads attached to a user_message.
	Attachments []Attachment `json:"attachments,omitempty"`
	// LegID names the voice leg a media_state event is about.
	LegID string `json:"leg_id,omitempty"`
	// State is the agent state of an agent_state event.
	State string `json:"state,omitempty"`
	// Action names the action of an action event.
	Action string `json:"action,omitempty"`
	// Data carries action or capture parameters.
	Data json.RawMessage `json:"data,omitempty"`
	// Final marks a final (not partial) transcript.
	Final bool `json:"final,omitempty"`
	// Interrupted marks a reply that was cut short.
	Interrupted bool `json:"interrupted,omitempty"`
	// HeardMS is how much of the interrupted reply's audio the visitor
	// heard before a barge-in cut it (interrupt).
	HeardMS *int64 `json:"heard_ms,omitempty"`
	// HeardText is, on an interrupt, the words of the interrupted reply
	// the visitor heard, when the broker spoke it (the speech pipeline):
	// what was really said. Absent when the agent spoke its own audio.
	HeardText *string `json:"heard_text,omitempty"`
	// DurationMS is how long an agent_speaking sentence plays.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Engine names the speech-to-text engine that heard a user_message
	// via voice ("pocketsphinx", "openai:whisper-1").
	Engine string `json:"engine,omitempty"`
	// At is when the visitor's speech started or stopped, or when a
	// barge-in cut the playout (user_speech_started, user_speech_stopped,
	// interrupt); ts is when the broker stored the event.
	At *time.Time `json:"at,omitempty"`
	// Source is how speech was detected: "audio_level" (the RFC 6464
	// header extension) or "decode" (the level of decoded audio).
	Source string `json:"source,omitempty"`
	// LevelDBov is the loudest 20 ms frame of the speech so far, in dBov.
	LevelDBov float64 `json:"level_dbov,omitempty"`
	// Reason explains a session_ended or interrupt event.
	Reason string `json:"reason,omitempty"`
	// Language is the visitor's language (session_started).
	Language string `json:"language,omitempty"`
	// Widget is the id of the widget the session came through.
	Widget string `json:"widget,omitempty"`
	// Visitor holds verified visitor claims (session_started).
	Visitor map[string]any `json:"visitor,omitempty"`
	// Idle reports, on session_ended, that no visitor session remains.
	Idle bool `json:"idle,omitempty"`
	// WorkerID and Epoch identify the writer of an agent event: the worker
	// that owns the conversation and the dispatch epoch it owns it under.
	WorkerID string `json:"worker_id,omitempty"`
	Epoch    uint64 `json:"epoch,omitempty"`
}

// Attachment is a visitor upload attached to a message. The file is in the
// <prefix>_uploads JetStream object store under UploadID.
type Attachment struct {
	UploadID    string `json:"upload_id"`
	Name        string `json:"file_name"`
	ContentType string `json:"content_type"`
	Size        uint64 `json:"size_bytes"`
}

// IsInbound reports whether the event type is written by the broker.
func (e *Event) IsInbound() bool {
	switch e.Type {
	case EventUserMessage, EventModeChanged, EventCapture, EventSessionStarted,
		EventSessionEnded, EventUserSpeechStarted, EventUserSpeechStopped, EventInterrupt, EventMediaState,
		EventAgentAssigned, EventAgentSpeaking:
		return true
	}
	return false
}

// DispatchRequest asks the workers of an agent to take a conversation.
// It is sent by request/reply to parley.agents.<agent>.dispatch.
type DispatchRequest struct {
	V              int            `json:"v"`
	ConversationID string         `json:"conversation_id"`
	SessionID      string         `json:"session_id,omitempty"`
	Agent          string         `json:"agent"`
	Widget         string         `json:"widget,omitempty"`
	Mode           string         `json:"mode"`
	Language       string         `json:"language,omitempty"`
	Visitor        map[string]any `json:"visitor,omitempty"`
	// ResumeFromSeq is the first log position the worker reads to rebuild
	// the conversation's full context.
	ResumeFromSeq uint64 `json:"resume_from_seq"`
	// HeadSeq is the last log position at dispatch time: events up to it
	// are history, later ones are live.
	HeadSeq uint64 `json:"head_seq"`
	// LastSeq is the conversation's last event known to the dispatching
	// broker (0: not known). A replay must reach it: a read served by a
	// NATS replica that is a few milliseconds behind may end before it,
	// and is then read again.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// Epoch grows with every dispatch of the conversation; a worker stamps
	// it on everything it appends.
	Epoch uint64 `json:"epoch"`
	// Broker is the id of the dispatching broker: the worker sends its
	// appends to AppendTo(agent, Broker), so one broker stores them in the
	// order they were sent, and falls back to Append(agent) when that
	// broker has gone (no responders).
	Broker string    `json:"broker,omitempty"`
	TS     time.Time `json:"ts"`
}

// DispatchReply is a worker's answer to a DispatchRequest.
type DispatchReply struct {
	Accepted bool   `json:"accepted"`
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason,omitempty"`
	// HeartbeatSeq is the Seq of the worker's last heartbeat before it
	// accepted: later heartbeats list the conversation while it is held.
	HeartbeatSeq uint64 `json:"heartbeat_seq,omitempty"`
}

// Heartbeat is published by every worker on parley.agents.<agent>.heartbeat.
type Heartbeat struct {
	V        int    `json:"v"`
	WorkerID string `json:"worker_id"`
	// Seq numbers the worker's heartbeats from 1.
	Seq           uint64    `json:"seq"`
	Agent         string    `json:"agent"`
	Load          int       `json:"load"`
	Capacity      int       `json:"capacity"`
	Conversations []string  `json:"conversations"`
	Draining      bool      `json:"draining,omitempty"`
	IntervalMS    int64     `json:"interval_ms"`
	TS            time.Time `json:"ts"`
	// NATSServerID and NATSClientID name the worker's NATS connection (the
	// server it is connected to, and the client id that server gave it:
	// nats.Conn's ConnectedServerId and GetClientID). A broker that sees
	// that connection close (the server's disconnect event) takes the
	// worker as gone at once rather than after heartbeat_timeout. Both are
	// optional: without them a crash is found by missed heartbeats.
	NATSServerID string `json:"nats_server_id,omitempty"`
	NATSClientID uint64 `json:"nats_client_id,omitempty"`
}

// Audio frame headers. One frame is 20 ms of audio.
const (
	HeaderCodec      = "Parley-Codec"
	HeaderSeq        = "Parley-Seq"
	HeaderTimestamp  = "Parley-Timestamp"
	HeaderCapturedAt = "Parley-Captured-At"
	// HeaderWorker names the worker that sent an agent audio frame; the
	// broker plays only the frames of the worker holding the conversation.
	HeaderWorker = "Parley-Worker"
	// HeaderMsgID is an append's idempotency key (the same header name as
	// JetStream's): an append repeated with the same key within the
	// duplicate window is stored once.
	HeaderMsgID = "Nats-Msg-Id"
)

// CodecOpus is the codec of frames forwarded as received from WebRTC.
const CodecOpus = "opus/48000/2"

// Subjects builds the protocol's subject names under one prefix.
type Subjects struct {
	Prefix string
}

// NewSubjects returns the subjects under prefix, or DefaultPrefix if empty.
func NewSubjects(prefix string) Subjects {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Subjects{Prefix: prefix}
}

// BrokerQueue is the queue group every broker joins on the shared agent
// request subjects (Append, Read), so each request is handled once.
const BrokerQueue = "parley-broker"

// Agent is agent's namespace: every subject agent's credentials may use
// starts with it.
func (s Subjects) Agent(agent string) string { return s.Prefix + ".agents." + agent }

// Dispatch is the request subject the workers of agent listen on.
func (s Subjects) Dispatch(agent string) string { return s.Agent(agent) + ".dispatch" }

// Heartbeat is the subject the workers of agent heartbeat on.
func (s Subjects) Heartbeat(agent string) string { return s.Agent(agent) + ".heartbeat" }

// AllHeartbeats matches the heartbeats of every agent.
func (s Subjects) AllHeartbeats() string { return s.Prefix + ".agents.*.heartbeat" }

// Append is the request subject a worker of agent appends events on; any
// broker answers.
func (s Subjects) Append(agent string) string { return s.Agent(agent) + ".append" }

// AppendTo is the request subject on which one broker (the one that
// dispatched the conversation) stores a worker's appends.
func (s Subjects) AppendTo(agent, broker string) string { return s.Append(agent) + "." + broker }

// AllAppends matches every agent's shared append subject.
func (s Subjects) AllAppends() string { return s.Prefix + ".agents.*.append" }

// AllAppendsTo matches every agent's append subject of one broker.
func (s Subjects) AllAppendsTo(broker string) string { return s.Prefix + ".agents.*.append." + broker }

// Read is the request subject a worker of agent reads a conversation's
// log on (replay and gap refill).
func (s Subjects) Read(agent string) string { return s.Agent(agent) + ".read" }

// Upload is the request subject a worker of agent reads a visitor's
// attachment on (UploadRequest).
func (s Subjects) Upload(agent string) string { return s.Agent(agent) + ".upload" }

// AllUploads matches every agent's upload subject.
func (s Subjects) AllUploads() string { return s.Prefix + ".agents.*.upload" }

// AllReads matches every agent's read subject.
func (s Subjects) AllReads() string { return s.Prefix + ".agents.*.read" }

// ConvEvent is the core subject on which the broker publishes each stored
// event of a conversation of agent, with its seq and prev_seq.
func (s Subjects) ConvEvent(agent, cid string) string {
	return s.Agent(agent) + ".conv." + cid + ".event"
}

// AnyConvEvent matches a conversation's stored events whatever its agent
// (what brokers' live hubs subscribe to; agents are never allowed it).
func (s Subjects) AnyConvEvent(cid string) string {
	return s.Prefix + ".agents.*.conv." + cid + ".event"
}

// InAudio is the core subject of a conversation's visitor audio frames.
func (s Subjects) InAudio(agent, cid string) string {
	return s.Agent(agent) + ".conv." + cid + ".in.audio"
}

// OutAudio is the core subject of a conversation's agent audio frames.
func (s Subjects) OutAudio(agent, cid string) string {
	return s.Agent(agent) + ".conv." + cid + ".out.audio"
}

// Inbox is the inbox prefix a worker of agent must give its NATS
// connection (nats.CustomInboxPrefix): replies to its requests arrive
// under it, inside the agent's namespace.
func (s Subjects) Inbox(agent string) string { return s.Agent(agent) + ".inbox" }

// AgentFromSubject returns the agent token of a subject in an agent's
// namespace.
func (s Subjects) AgentFromSubject(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, s.Prefix+".agents.")
	if !ok {
		return "", false
	}
	agent, _, _ := strings.Cut(rest, ".")
	return agent, ValidToken(agent)
}

// InEvent is the log subject of a conversation's broker events (only the
// broker writes the log).
func (s Subjects) InEvent(cid string) string { return s.Prefix + ".conv." + cid + ".in.event" }

// OutEvent is the log subject of a conversation's agent events, stored by
// the broker after it validated them.
func (s Subjects) OutEvent(cid string) string { return s.Prefix + ".conv." + cid + ".out.event" }

// Events matches both event subjects of a conversation: its whole log.
func (s Subjects) Events(cid string) string { return s.Prefix + ".conv." + cid + ".*.event" }

// Room is the subject room state snapshots of a conversation go to.
func (s Subjects) Room(cid string) string { return s.Prefix + ".rooms." + cid }

// Status is the core subject on which brokers tell each other about a
// conversation's agent assignment (not part of the agent protocol).
func (s Subjects) Status(cid string) string { return s.Prefix + ".status." + cid }

// LogSubjects are the subjects the conversation log stream stores.
func (s Subjects) LogSubjects() []string {
	return []string{s.Prefix + ".conv.*.in.event", s.Prefix + ".conv.*.out.event"}
}

// StreamName is the JetStream stream that holds every conversation log.
func (s Subjects) StreamName() string {
	return strings.ToUpper(strings.ReplaceAll(s.Prefix, "-", "_")) + "_CONV"
}

// Bucket is the name of a KV bucket under the prefix ("parley_sessions").
func (s Subjects) Bucket(name string) string {
	return s.Prefix + "_" + name
}

// ConversationFromSubject extracts the conversation id from a conv subject.
func (s Subjects) ConversationFromSubject(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, s.Prefix+".conv.")
	if !ok {
		return "", false
	}
	cid, _, ok := strings.Cut(rest, ".")
	return cid, ok && cid != ""
}

// ValidToken reports whether s can be used as one NATS subject token
// (an agent name or an id): letters, digits, '_' and '-'.
func ValidToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}
