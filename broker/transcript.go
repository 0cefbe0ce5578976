package broker

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// A conversation as a person reads it: the log's events folded into turns
// (a streamed reply is one turn, however many text_delta events it took)
// and markers (a call started, a visitor barged in, another worker took
// over). ConversationTranscript is the one folding of the log: the
// visitor's history (Transcript, History) is its turns, the operator's
// transcript (GET /v1/admin/conversations/{id}, the ops room detail) all
// of it.

// Kinds of TranscriptEntry.
const (
	// EntryTurn is a visitor message, a final transcript of what the
	// visitor said, or an agent reply (Turn).
	EntryTurn = "turn"
	// EntryInterrupt: the visitor spoke over the reply MessageID
	// (Reason barge_in), having heard HeardMS of it (HeardText: the words,
	// when the broker spoke it).
	EntryInterrupt = "interrupt"
	// EntryCallStarted and EntryCallEnded: the conversation went to voice
	// and back (mode_changed, or a session that started in voice or left
	// one); Reason says why (visitor, voice_leg, visitor_hangup, …).
	EntryCallStarted = "call_started"
	EntryCallEnded   = "call_ended"
	// EntryHandOver: a worker of the agent took the conversation over
	// from another (agent_assigned: the old one was lost or left),
	// WorkerID the new one, PreviousWorkerID the one that wrote last.
	EntryHandOver = "hand_over"
	// EntryHandoff: the agent asked for the visitor to be handed over
	// (action handoff; Data as the agent sent it).
	EntryHandoff = "handoff"
	// EntryAction: another agent action (navigate, capture_request, end).
	EntryAction = "action"
	// EntryCapture: the visitor gave contact data (Data: kind, value,
	// source, lead_id).
	EntryCapture = "capture"
	// EntryVisitorJoined and EntryVisitorLeft: a visitor session started
	// (a page load, a resume) or ended (Reason).
	EntryVisitorJoined = "visitor_joined"
	EntryVisitorLeft   = "visitor_left"
)

// TranscriptEntry is one line of a conversation's transcript: a turn or a
// marker. Seq and At are those of the event it comes from (for a reply,
// its first); Events are the seqs of every event folded into it, so a
// reader can show the raw events behind a line.
type TranscriptEntry struct {
	Kind string    `json:"kind"`
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"at"`
	// Turn is the message of a turn: the same object the visitor's
	// history holds. Agent and WorkerID name who wrote an agent turn.
	Turn     *Message `json:"turn,omitempty"`
	Agent    string   `json:"agent,omitempty"`
	WorkerID string   `json:"worker_id,omitempty"`
	// PreviousWorkerID is, on a hand-over, the worker it was taken from.
	PreviousWorkerID string `json:"previous_worker_id,omitempty"`
	// InProgress marks an agent reply still being streamed (text_delta
	// events, no text_done yet): Turn.Body is what came so far.
	InProgress bool `json:"in_progress,omitempty"`

	SessionID    string          `json:"session_id,omitempty"`
	Mode         string          `json:"mode,omitempty"`
	PreviousMode string          `json:"previous_mode,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	MessageID    string          `json:"message_id,omitempty"` // the reply an interrupt cut
	HeardMS      *int64          `json:"heard_ms,omitempty"`
	HeardText    *string         `json:"heard_text,omitempty"`
	Action       string          `json:"action,omitempty"`
	Data         json.RawMessage `json:"data,omitempty"`
	Events       []uint64        `json:"events"`
}

// ConversationTranscript folds a conversation's events (its log, in order)
// into its transcript. agent is the conversation's agent, named on agent
// turns ("" leaves it out). Turns follow the rules of Transcript, in the
// same order: a reply is a turn where its text_done is, Events listing its
// text_delta events too. A reply with text_delta events and no text_done
// yet is a turn InProgress, where its first delta is. Events of a worker
// that had lost the conversation are left out (fencing), as are those
// that change nothing a reader sees (agent_state, speech activity,
// captions, media state).
func ConversationTranscript(events []agentbridge.Event, agent string) []TranscriptEntry {
	var out []TranscriptEntry
	var fence agentbridge.Fence
	// mode is the conversation's mode, which an agent reply's Via is;
	// call whether a call is on, for the call markers.
	mode, call := agentbridge.ModeChat, false
	cut := interruptedReplies(events)
	replied := map[string]bool{}
	streaming := map[string]*TranscriptEntry{}
	chunks := map[string]map[int]string{}
	lastWorker := "" // the worker that wrote the last agent event
	// callMarker records a call starting or ending.
	callMarker := func(ev *agentbridge.Event, on bool, previous, reason string) {
		if on == call {
			return
		}
		call = on
		e := TranscriptEntry{Kind: EntryCallEnded, Seq: ev.Seq, At: ev.TS, SessionID: ev.SessionID,
			Mode: agentbridge.ModeChat, PreviousMode: previous, Reason: reason, Events: []uint64{ev.Seq}}
		if on {
			e.Kind, e.Mode = EntryCallStarted, agentbridge.ModeVoice
		}
		out = append(out, e)
	}
	for i := range events {
		ev := &events[i]
		if !fence.Admit(ev) {
			continue // written by a worker that had lost the conversation
		}
		if !ev.IsInbound() && ev.WorkerID != "" {
			lastWorker = ev.WorkerID
		}
		marker := TranscriptEntry{Seq: ev.Seq, At: ev.TS, SessionID: ev.SessionID, Reason: ev.Reason, Events: []uint64{ev.Seq}}
		switch ev.Type {
		case agentbridge.EventSessionStarted:
			marker.Kind, marker.Mode, marker.Reason = EntryVisitorJoined, ev.Mode, ""
			out = append(out, marker)
			if ev.Mode != "" {
				callMarker(ev, ev.Mode == agentbridge.ModeVoice, mode, "")
				mode = ev.Mode
			}
		case agentbridge.EventSessionEnded:
			marker.Kind = EntryVisitorLeft
			out = append(out, marker)
			if ev.Idle {
				callMarker(ev, false, mode, ev.Reason) // nobody is left on the call
			}
		case agentbridge.EventModeChanged:
			if ev.Mode != "" {
				callMarker(ev, ev.Mode == agentbridge.ModeVoice, cmp.Or(ev.PreviousMode, mode), ev.Reason)
				mode = ev.Mode
			}
		case agentbridge.EventUserMessage:
			via := cmp.Or(ev.Via, agentbridge.ModeChat)
			marker.Kind, marker.Reason = EntryTurn, ""
			marker.Turn = &Message{ID: ev.MessageID, Role: RoleVisitor, Body: ev.Text,
				CreatedAt: ev.TS, Seq: ev.Seq, Via: via, Unheard: ev.Reason, Attachments: ev.Attachments}
			out = append(out, marker)
		case agentbridge.EventTranscript:
			if !ev.Final || strings.TrimSpace(ev.Text) == "" {
				continue
			}
			id := ev.MessageID
			if id == "" {
				id = fmt.Sprintf("tr_%d", ev.Seq)
			}
			marker.Kind, marker.Reason = EntryTurn, ""
			marker.Turn = &Message{ID: id, Role: RoleVisitor, Body: ev.Text,
				CreatedAt: ev.TS, Seq: ev.Seq, Via: agentbridge.ModeVoice}
			out = append(out, marker)
		case agentbridge.EventTextDelta:
			if replied[ev.MessageID] {
				continue // written on after the reply was closed
			}
			e := streaming[ev.MessageID]
			if e == nil {
				e = &TranscriptEntry{Kind: EntryTurn, Seq: ev.Seq, At: ev.TS, Agent: agent, WorkerID: ev.WorkerID, InProgress: true,
					Turn: &Message{ID: ev.MessageID, Role: RoleAgent, CreatedAt: ev.TS, Seq: ev.Seq, ReplyTo: ev.ReplyTo, Via: mode}}
				streaming[ev.MessageID] = e
				chunks[ev.MessageID] = map[int]string{}
			}
			if _, seen := chunks[ev.MessageID][ev.Index]; !seen {
				chunks[ev.MessageID][ev.Index] = ev.Text
			}
			e.Events = append(e.Events, ev.Seq)
		case agentbridge.EventTextDone:
			if replied[ev.MessageID] {
				continue
			}
			replied[ev.MessageID] = true
			m := &Message{ID: ev.MessageID, Role: RoleAgent, Body: ev.Text,
				CreatedAt: ev.TS, Seq: ev.Seq, ReplyTo: ev.ReplyTo, Interrupted: ev.Interrupted, Via: mode}
			if c, ok := cut[ev.MessageID]; ok {
				m.Interrupted = true
				if c.heard != nil {
					// The broker spoke it: what the visitor heard is what
					// was said.
					m.Body, m.Written = *c.heard, ev.Text
				}
			}
			e := TranscriptEntry{Kind: EntryTurn, Seq: ev.Seq, At: ev.TS, Agent: agent, WorkerID: ev.WorkerID, Turn: m}
			if s := streaming[ev.MessageID]; s != nil {
				delete(streaming, ev.MessageID)
				e.Events = s.Events
				e.WorkerID = cmp.Or(e.WorkerID, s.WorkerID)
			}
			e.Events = append(e.Events, ev.Seq)
			out = append(out, e)
		case agentbridge.EventInterrupt:
			marker.Kind, marker.MessageID = EntryInterrupt, ev.MessageID
			marker.HeardMS, marker.HeardText = ev.HeardMS, ev.HeardText
			out = append(out, marker)
		case agentbridge.EventAgentAssigned:
			// Written only when the owner changes (the first owner takes
			// a conversation without one).
			marker.Kind, marker.Agent, marker.WorkerID = EntryHandOver, agent, ev.WorkerID
			if lastWorker != ev.WorkerID {
				marker.PreviousWorkerID = lastWorker
			}
			out = append(out, marker)
			lastWorker = ev.WorkerID
		case agentbridge.EventAction:
			marker.Kind, marker.Action, marker.Data = EntryAction, ev.Action, ev.Data
			marker.Agent, marker.WorkerID, marker.Reason = agent, ev.WorkerID, ""
			if ev.Action == agentbridge.ActionHandoff {
				marker.Kind = EntryHandoff
			}
			out = append(out, marker)
		case agentbridge.EventCapture:
			marker.Kind, marker.Data, marker.Reason = EntryCapture, ev.Data, ""
			out = append(out, marker)
		}
	}
	if len(streaming) == 0 {
		return out
	}
	// Replies still streaming, where they began.
	for id, e := range streaming {
		e.Turn.Body = joinChunks(chunks[id])
		out = append(out, *e)
	}
	slices.SortStableFunc(out, func(a, b TranscriptEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// joinChunks joins a reply's text_delta chunks in index order.
func joinChunks(chunks map[int]string) string {
	idx := make([]int, 0, len(chunks))
	for i := range chunks {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var b strings.Builder
	for _, i := range idx {
		b.WriteString(chunks[i])
	}
	return b.String()
}
