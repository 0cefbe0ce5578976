package signaling

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
)

type postMessageRequest struct {
	Body            *string  `json:"body"`
	ClientMessageID string   `json:"client_message_id"`
	Wait            bool     `json:"wait"`
	UploadIDs       []string `json:"upload_ids"`
}

type replyBody struct {
	MessageID   string `json:"message_id"`
	Body        string `json:"body"`
	Interrupted bool   `json:"interrupted,omitempty"`
}

type postMessageResponse struct {
	UserMessageID   string     `json:"user_message_id"`
	ConversationID  string     `json:"conversation_id"`
	ClientMessageID string     `json:"client_message_id,omitempty"`
	Seq             uint64     `json:"seq"`
	Duplicate       bool       `json:"duplicate"`
	Reply           *replyBody `json:"reply,omitempty"`
}

// servePostMessage: POST /v1/sessions/{id}/messages (Bearer session token).
// The message is stored before anything is answered; with "wait": true the
// answer is 200 with the agent's complete reply, otherwise 202 with the ids.
func (s *Server) servePostMessage(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	var req postMessageRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Body == nil {
		return fmt.Errorf("%w: body is required", broker.ErrValidation)
	}
	if err := s.convs.ValidateMessage(*req.Body, req.ClientMessageID); err != nil {
		return err
	}
	if err := s.limit(w, r, limitMessages, sess.Widget); err != nil {
		return err
	}
	s.rooms.LegAttached(sess, "http_"+sess.ID, "http")
	var sub *broker.Subscription
	if req.Wait {
		// Subscribe before posting so the reply cannot be missed.
		var err error
		if sub, err = s.convs.Subscribe(r.Context(), sess.ConversationID); err != nil {
			return err
		}
		defer sub.Close()
	}
	// Storing must not be cut short by a client that goes away.
	posted, err := s.convs.PostMessage(context.WithoutCancel(r.Context()), sess, *req.Body, req.ClientMessageID, agentbridge.ModeChat, req.UploadIDs...)
	if err != nil {
		return err
	}
	resp := postMessageResponse{UserMessageID: posted.MessageID, ConversationID: posted.ConversationID,
		ClientMessageID: posted.ClientMessageID, Seq: posted.Seq, Duplicate: posted.Duplicate}
	if !req.Wait {
		writeJSON(w, http.StatusAccepted, resp)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Chat.ReplyTimeout)
	defer cancel()
	// A shutdown does not wait for the agent: the message is stored, its
	// reply will be in the history.
	defer context.AfterFunc(s.legs, cancel)()
	reply, err := s.convs.AwaitReply(ctx, sub, posted)
	if err != nil {
		if errors.Is(err, broker.ErrReplyTimeout) && r.Context().Err() != nil {
			return nil // the client left
		}
		if errors.Is(err, broker.ErrReplyTimeout) && s.legs.Err() != nil {
			err = fmt.Errorf("%w: the reply will be in the history", broker.ErrClosed)
		}
		writeErrorDetails(w, err, map[string]any{
			"user_message_id": posted.MessageID, "conversation_id": posted.ConversationID, "stored": true,
		})
		return nil
	}
	resp.Reply = &replyBody{MessageID: reply.ID, Body: reply.Body, Interrupted: reply.Interrupted}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
