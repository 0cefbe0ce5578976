package signaling

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/media"
)

// The ops API: live rooms for operators (admin keys with ops:read, and
// ops:write to end a room). Room state lives in the parley_rooms KV bucket
// and is announced on parley.rooms.<cid>; these endpoints read the same.

// opsRooms returns the rooms a key may see, filtered by the query.
func (s *Server) opsRooms(r *http.Request, key broker.KeyInfo) ([]broker.Room, error) {
	q := r.URL.Query()
	rooms, err := s.rooms.Rooms(r.Context(), q.Get("widget"), q.Get("mode"), q.Get("agent"))
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(rooms, func(room broker.Room) bool { return !s.keySeesWidget(key, room.Widget) }), nil
}

// keySeesWidget reports whether an admin key may see a widget's data.
func (s *Server) keySeesWidget(key broker.KeyInfo, widgetID string) bool {
	if key.Tenant == "" {
		return true
	}
	w, err := s.widgets.WidgetByID(widgetID)
	return err == nil && w.Tenant == key.Tenant
}

// serveOpsRooms: GET /v1/ops/rooms?widget=&mode=&agent=.
func (s *Server) serveOpsRooms(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	rooms, err := s.opsRooms(r, key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	return nil
}

type roomDetail struct {
	Room         broker.Room         `json:"room"`
	RecentEvents []agentbridge.Event `json:"recent_events"`
	// Transcript is the whole conversation as a person reads it.
	Transcript []broker.TranscriptEntry `json:"transcript"`
	// LiveKit is the SFU's own view (participants, tracks) of a room with a
	// livekit voice leg.
	LiveKit *media.LiveKitRoom `json:"livekit,omitempty"`
}

// serveOpsRoom: GET /v1/ops/rooms/{id} — the room, its transcript and its
// recent events.
func (s *Server) serveOpsRoom(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	room, err := s.rooms.Room(r.Context(), r.PathValue("id"))
	if err != nil || !s.keySeesWidget(key, room.Widget) {
		return ErrRoomNotFound
	}
	events, err := s.convs.ReadLog(r.Context(), room.ConversationID, 0)
	if err != nil {
		return err
	}
	detail := roomDetail{Room: room, Transcript: transcriptOf(events, room.Agent), RecentEvents: events}
	if n := s.cfg.Ops.RecentEvents; len(events) > n {
		detail.RecentEvents = events[len(events)-n:]
	}
	if detail.RecentEvents == nil {
		detail.RecentEvents = []agentbridge.Event{}
	}
	if s.livekit != nil && slices.ContainsFunc(room.Legs, func(l broker.RoomLeg) bool { return l.Transport == "livekit" }) {
		if lk, err := s.livekit.RoomState(r.Context(), s.livekit.RoomName(room.ConversationID)); err == nil {
			detail.LiveKit = &lk
		}
	}
	writeJSON(w, http.StatusOK, detail)
	return nil
}

// transcriptOf is a conversation's transcript, never null.
func transcriptOf(events []agentbridge.Event, agent string) []broker.TranscriptEntry {
	if t := broker.ConversationTranscript(events, agent); t != nil {
		return t
	}
	return []broker.TranscriptEntry{}
}

// conversationDetail is a conversation's record, as the list shows it,
// with its transcript.
type conversationDetail struct {
	broker.Conversation
	Transcript []broker.TranscriptEntry `json:"transcript"`
}

// serveAdminConversation: GET /v1/admin/conversations/{id} — a
// conversation, live or not, and its transcript.
func (s *Server) serveAdminConversation(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	conv, err := s.records.Conversation(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if !s.keySeesWidget(key, conv.Widget) {
		return broker.ErrUnknownConversation
	}
	events, err := s.convs.ReadLog(r.Context(), conv.ID, 0)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, conversationDetail{Conversation: conv, Transcript: transcriptOf(events, conv.Agent)})
	return nil
}

type endRoomRequest struct {
	Reason string `json:"reason"`
}

// serveOpsEndRoom: DELETE /v1/ops/rooms/{id} {"reason"} — ends the room's
// voice legs and visitor sessions; the conversation stays.
func (s *Server) serveOpsEndRoom(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	var req endRoomRequest
	if err := decodeOptionalJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Reason) > 200 {
		return fmt.Errorf("%w: reason longer than 200 characters", broker.ErrValidation)
	}
	room, err := s.rooms.Room(r.Context(), r.PathValue("id"))
	if err != nil || !s.keySeesWidget(key, room.Widget) {
		return ErrRoomNotFound
	}
	if err := s.rooms.EndRoom(context.WithoutCancel(r.Context()), room.ConversationID, req.Reason); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// sseHeartbeat keeps idle event streams (and proxies) alive.
const sseHeartbeat = 15 * time.Second

// serveOpsEvents: GET /v1/ops/events — Server-Sent Events: first one
// "room" event per live room, then "room" on every change and
// "room_ended" when a room ends; "shutdown" and the end of the stream when
// the server shuts down. Authenticated like the rest (the /ops/
// page reads it with fetch, which can send the Authorization header).
func (s *Server) serveOpsEvents(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	// Through the request log's statusWriter: a ResponseController finds
	// the Flusher by Unwrap, a type assertion would not.
	rc := http.NewResponseController(w)
	if !s.addLeg() {
		return broker.ErrClosed
	}
	defer s.legWG.Done()
	// A reader 256 updates behind starts over.
	watch, err := broker.WatchRoomChanges(s.rooms.WatchRooms, 256)
	if err != nil {
		return err
	}
	defer watch.Stop()
	updates, lost := watch.Updates, watch.Lost
	rooms, err := s.opsRooms(r, key)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) bool {
		data, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for _, room := range rooms {
		if !send("room", room) {
			return nil
		}
	}
	if !send("ready", map[string]int{"rooms": len(rooms)}) {
		return nil
	}
	ping := time.NewTicker(sseHeartbeat)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.legs.Done():
			// The server is stopping: say so, so the reader reconnects
			// (to another broker, or to this one when it is back).
			send("shutdown", map[string]string{"reason": "server shutting down; reconnect"})
			return nil
		case <-lost:
			s.metrics.opsSlow.Inc()
			send("reset", map[string]string{"reason": "too slow; reconnect"})
			return nil
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		case room := <-updates:
			if !s.keySeesWidget(key, room.Widget) {
				continue
			}
			event := "room"
			if room.EndedReason != "" {
				event = "room_ended"
			}
			if !send(event, room) {
				return nil
			}
		}
	}
}

//go:embed static/ops.html
var opsHTML []byte

// serveOpsPage: GET /ops/ — the operator page (it asks for an admin key).
func (s *Server) serveOpsPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	_, _ = w.Write(opsHTML)
}
