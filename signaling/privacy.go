package signaling

import (
	"fmt"
	"net/http"

	"github.com/parley-rtc/parley/broker"
)

// Privacy deletion (data:delete scope): an operator erases a conversation,
// or every conversation of an identified visitor, for a privacy request.
// Deleting data cannot be undone, so it has its own scope rather than
// ops:write (which ends rooms, keeping their data): an ops console can end
// rooms without being able to erase anything. A tenant key deletes only
// its tenant's conversations; anything else answers 404 as if it did not
// exist.

// serveAdminDeleteConversation: DELETE /v1/admin/conversations/{id} —
// 204; the conversation's log, records, leads and uploads are gone and its
// active sessions ended. A conversation already deleted (or of another
// tenant) is 404 CONVERSATION_NOT_FOUND.
func (s *Server) serveAdminDeleteConversation(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	conv, err := s.records.Conversation(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if key.Tenant != "" {
		if wr, err := s.widgets.WidgetByID(conv.Widget); err != nil || wr.Tenant != key.Tenant {
			return broker.ErrUnknownConversation
		}
	}
	if err := s.records.DeleteConversation(r.Context(), conv.ID); err != nil {
		return err
	}
	s.log.Info("conversation deleted by operator", "conversation_id", conv.ID, "widget", conv.Widget, "key_id", key.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type deletedVisitor struct {
	WidgetID             string   `json:"widget_id"`
	DeletedConversations []string `json:"deleted_conversations"`
	DeletedCount         int      `json:"deleted_count"`
}

// serveAdminDeleteVisitor: DELETE /v1/admin/visitors/{user_id}?widget=ID —
// deletes every conversation of an identified visitor (their verified
// user id, the "sub" of their identity) on a widget. 200 with the ids
// deleted; 404 VISITOR_NOT_FOUND when there is none (a second request).
func (s *Server) serveAdminDeleteVisitor(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	wid := r.URL.Query().Get("widget")
	if wid == "" {
		return fmt.Errorf("%w: widget (a widget id) is required", broker.ErrValidation)
	}
	wr, err := s.widgets.WidgetByID(wid)
	if err != nil || (key.Tenant != "" && wr.Tenant != key.Tenant) {
		return ErrWidgetNotFound
	}
	sub := r.PathValue("user_id")
	if sub == "" || len(sub) > 256 {
		return fmt.Errorf("%w: user_id must be 1..256 characters", broker.ErrValidation)
	}
	ids, err := s.records.DeleteVisitor(r.Context(), wr.ID, sub)
	if err != nil {
		return err
	}
	s.log.Info("visitor deleted by operator", "widget", wr.ID, "conversations", len(ids), "key_id", key.ID)
	writeJSON(w, http.StatusOK, deletedVisitor{WidgetID: wr.ID, DeletedConversations: ids, DeletedCount: len(ids)})
	return nil
}
