package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// Lead capture kinds and sources.
var (
	LeadKinds   = []string{"email", "phone", "name"}
	LeadSources = []string{"agent_asked", "volunteered"}
)

// Lead is one piece of contact data a visitor gave. Leads live in the
// <prefix>_leads KV bucket under "l.<widget id>.<conversation id>.<lead id>"
// and reach the agent as a capture event.
type Lead struct {
	ID             string    `json:"id"`
	WidgetID       string    `json:"widget_id"`
	ConversationID string    `json:"conversation_id"`
	SessionID      string    `json:"session_id"`
	Kind           string    `json:"kind"`
	Value          string    `json:"value"`
	Source         string    `json:"source"`
	Seq            uint64    `json:"seq"`
	CreatedAt      time.Time `json:"created_at"`
}

// validateLead checks and canonicalises a lead value.
func validateLead(kind, value, source string) (string, error) {
	value = strings.TrimSpace(value)
	if !slices.Contains(LeadKinds, kind) {
		return "", fmt.Errorf("%w: kind must be one of %s", ErrValidation, strings.Join(LeadKinds, ", "))
	}
	if !slices.Contains(LeadSources, source) {
		return "", fmt.Errorf("%w: source must be one of %s", ErrValidation, strings.Join(LeadSources, ", "))
	}
	switch kind {
	case "email":
		a, err := mail.ParseAddress(value)
		if err != nil || a.Address != value || len(value) > 254 || !strings.Contains(value[strings.LastIndexByte(value, '@')+1:], ".") {
			return "", fmt.Errorf("%w: value is not an email address", ErrValidation)
		}
		value = strings.ToLower(value)
	case "phone":
		digits := 0
		for _, r := range value {
			switch {
			case r >= '0' && r <= '9':
				digits++
			case strings.ContainsRune("+-(). ", r):
			default:
				return "", fmt.Errorf("%w: value is not a phone number", ErrValidation)
			}
		}
		if digits < 6 || digits > 15 || len(value) > 32 || strings.LastIndexByte(value, '+') > 0 {
			return "", fmt.Errorf("%w: value is not a phone number (6 to 15 digits)", ErrValidation)
		}
	case "name":
		if n := utf8.RuneCountInString(value); n < 1 || n > 100 || !utf8.ValidString(value) {
			return "", fmt.Errorf("%w: name must be 1..100 characters", ErrValidation)
		}
		if !SafeName(value) {
			return "", fmt.Errorf("%w: name must not contain control or format characters (line breaks, direction overrides)", ErrValidation)
		}
	}
	return value, nil
}

// Capture stores a lead and tells the agent (a capture event).
func (b *Broker) Capture(ctx context.Context, s Session, kind, value, source string) (Lead, error) {
	value, err := validateLead(kind, value, source)
	if err != nil {
		return Lead{}, err
	}
	l := Lead{ID: newID("lead_"), WidgetID: s.Widget, ConversationID: s.ConversationID, SessionID: s.ID,
		Kind: kind, Value: value, Source: source, CreatedAt: time.Now().UTC()}
	data, _ := json.Marshal(map[string]string{"lead_id": l.ID, "kind": kind, "value": value, "source": source})
	seq, err := b.appendInbound(ctx, agentbridge.Event{Type: agentbridge.EventCapture, ConversationID: s.ConversationID,
		SessionID: s.ID, Data: data}, "", s.Agent)
	if err != nil {
		return Lead{}, err
	}
	l.Seq = seq
	if err := b.putNew(ctx, b.leads, "l."+s.Widget+"."+s.ConversationID+"."+l.ID, l); err != nil {
		return Lead{}, err
	}
	return l, nil
}

// Leads returns the leads of the given widgets, newest first, at most limit.
func (b *Broker) Leads(ctx context.Context, widgetIDs []string, limit int) ([]Lead, error) {
	out := []Lead{}
	for _, wid := range widgetIDs {
		keys, err := listKeys(ctx, b.leads, "l."+wid+".>", "leads")
		if err != nil {
			return nil, err
		}
		for k := range keys {
			var l Lead
			if e, err := b.leads.Get(ctx, k); err == nil && json.Unmarshal(e.Value(), &l) == nil {
				out = append(out, l)
			}
		}
	}
	slices.SortFunc(out, func(a, b Lead) int { return b.CreatedAt.Compare(a.CreatedAt) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Upload is a file a visitor attached, kept in the <prefix>_uploads object
// store under its id; agents read it with any NATS client.
type Upload struct {
	ID             string    `json:"upload_id"`
	Name           string    `json:"file_name"`
	ContentType    string    `json:"content_type"`
	Size           uint64    `json:"size_bytes"`
	ConversationID string    `json:"conversation_id"`
	CreatedAt      time.Time `json:"created_at"`
}

// PutUpload stores a visitor's file for its conversation, under the
// cleaned form of the name the client gave (CleanFileName).
func (b *Broker) PutUpload(ctx context.Context, s Session, name, contentType string, r io.Reader) (Upload, error) {
	name = CleanFileName(name)
	u := Upload{ID: newID("upl_"), Name: name, ContentType: contentType, ConversationID: s.ConversationID, CreatedAt: time.Now().UTC()}
	info, err := b.uploads.Put(ctx, jetstream.ObjectMeta{
		Name:        u.ID,
		Description: name,
		Headers: map[string][]string{
			"Parley-Conversation": {s.ConversationID}, "Parley-Session": {s.ID},
			"Content-Type": {contentType}, "Parley-File-Name": {name},
		},
	}, r)
	if err != nil {
		return Upload{}, fmt.Errorf("%w: store upload: %w", ErrStore, err)
	}
	u.Size = info.Size
	return u, nil
}

// GetUpload describes an upload of the conversation cid.
func (b *Broker) GetUpload(ctx context.Context, cid, id string) (Upload, error) {
	if !validID(id, "upl_") {
		return Upload{}, ErrUnknownUpload
	}
	info, err := b.uploads.GetInfo(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return Upload{}, ErrUnknownUpload
	}
	if err != nil {
		return Upload{}, fmt.Errorf("%w: upload: %w", ErrStore, err)
	}
	if info.Headers.Get("Parley-Conversation") != cid {
		return Upload{}, ErrUnknownUpload
	}
	return Upload{ID: id, Name: info.Headers.Get("Parley-File-Name"), ContentType: info.Headers.Get("Content-Type"),
		Size: info.Size, ConversationID: cid, CreatedAt: info.ModTime}, nil
}
