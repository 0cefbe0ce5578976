package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Conversation is the durable record of a conversation (its log lives in
// the stream). It is kept in the parley_conversations KV bucket.
type Conversation struct {
	ID        string    `json:"id"`
	Widget    string    `json:"widget"`
	Agent     string    `json:"agent"`
	Mode      string    `json:"mode"`
	CreatedAt time.Time `json:"created_at"`
	// FirstSeq is the log position of the conversation's first event.
	FirstSeq uint64 `json:"first_seq"`
	// ActiveSessions counts sessions not yet ended.
	ActiveSessions int `json:"active_sessions"`
	// SessionID, Language and Visitor are those of the latest session:
	// what a dispatch tells the agent (verified visitor claims only).
	SessionID string         `json:"session_id,omitempty"`
	Language  string         `json:"language,omitempty"`
	Visitor   map[string]any `json:"visitor,omitempty"`
	// EngagedAt is when the conversation was first to be dispatched (the
	// visitor's first message or call): a resumed conversation that never
	// was holds no worker until its visitor acts.
	EngagedAt *time.Time `json:"engaged_at,omitempty"`
	// WorkerID and Epoch record the last dispatch.
	WorkerID string `json:"worker_id,omitempty"`
	Epoch    uint64 `json:"epoch"`
	// OwnerEpoch is the epoch at which WorkerID became the holder: its
	// appends carry an epoch from OwnerEpoch to Epoch.
	OwnerEpoch uint64    `json:"owner_epoch,omitempty"`
	AssignedAt time.Time `json:"assigned_at,omitzero"`
	// DeletedAt marks a conversation being deleted (retention or an
	// operator): it is unknown to everything but the deletion.
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
	// ClosedAt marks a conversation an operator closed (EndRoom): it is
	// kept, readable, but no session resumes it.
	ClosedAt *time.Time `json:"closed_at,omitempty"`
}

// Conversation loads a conversation record.
func (b *Broker) Conversation(ctx context.Context, id string) (Conversation, error) {
	c, err := load[Conversation](ctx, b.conversations, id, "conv_", ErrUnknownConversation)
	switch {
	case err == nil && c.DeletedAt != nil:
		return Conversation{}, ErrUnknownConversation
	case errors.Is(err, ErrUnknownConversation) && validID(id, "conv_"):
		b.missInLostStore(bucketConversations, "conversation_id", id)
	case errors.Is(err, ErrStore) && ctx.Err() == nil:
		b.log.Error("store read failed", "store", "KV_"+b.subj.Bucket(bucketConversations), "conversation_id", id, "err", err)
	}
	return c, err
}

// load reads the JSON record id (which must carry prefix) from kv; a
// missing or malformed id is notFound.
func load[T any](ctx context.Context, kv jetstream.KeyValue, id, prefix string, notFound error) (T, error) {
	var v T
	if !validID(id, prefix) {
		return v, notFound
	}
	e, err := kv.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return v, notFound
	case err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)):
		return v, fmt.Errorf("%w: get %s: %w", ErrStoreTimeout, id, err)
	case err != nil:
		return v, fmt.Errorf("%w: get %s: %w", ErrStore, id, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, fmt.Errorf("%w: decode %s: %w", ErrStore, id, err)
	}
	return v, nil
}

func (b *Broker) updateConversation(ctx context.Context, id string, f func(*Conversation) error) (Conversation, error) {
	c, err := update(ctx, b.conversations, id, func(c *Conversation) error {
		if c.DeletedAt != nil {
			return ErrUnknownConversation
		}
		return f(c)
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return c, ErrUnknownConversation
	}
	return c, err
}

// update is a compare-and-set read-modify-write of one JSON value.
func update[T any](ctx context.Context, kv jetstream.KeyValue, key string, f func(*T) error) (T, error) {
	for attempt := 0; ; attempt++ {
		var v T
		e, err := kv.Get(ctx, key)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return v, err
			}
			return v, fmt.Errorf("%w: get %s: %w", ErrStore, key, err)
		}
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			return v, fmt.Errorf("%w: decode %s: %w", ErrStore, key, err)
		}
		if err := f(&v); err != nil {
			return v, err
		}
		data, err := json.Marshal(v)
		if err != nil {
			return v, fmt.Errorf("broker: encode %s: %w", key, err)
		}
		_, err = kv.Update(ctx, key, data, e.Revision())
		if err == nil {
			return v, nil
		}
		if attempt >= 20 || ctx.Err() != nil {
			return v, fmt.Errorf("%w: update %s: %w", ErrStore, key, err)
		}
		// Someone else wrote in between: read again and retry.
	}
}

// putNew stores a value under a key that must not exist yet.
func (b *Broker) putNew(ctx context.Context, kv jetstream.KeyValue, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("broker: encode %s: %w", key, err)
	}
	if _, err := kv.Create(ctx, key, data); err != nil {
		return fmt.Errorf("%w: create %s: %w", ErrStore, key, err)
	}
	return nil
}

// listKeys lists the keys of kv that match filter (">": all). A bucket
// without any is an empty list, not an error; what names the listing in
// the error.
func listKeys(ctx context.Context, kv jetstream.KeyValue, filter, what string) (<-chan string, error) {
	lister, err := kv.ListKeysFiltered(ctx, filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		none := make(chan string)
		close(none)
		return none, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: list %s: %w", ErrStore, what, err)
	}
	return lister.Keys(), nil
}

// ListConversations returns the conversations of the given widgets, newest
// first, at most limit (all when limit <= 0). It reads every record: an
// operator's listing, not a hot path.
func (b *Broker) ListConversations(ctx context.Context, widgetIDs []string, limit int) ([]Conversation, error) {
	want := make(map[string]bool, len(widgetIDs))
	for _, id := range widgetIDs {
		want[id] = true
	}
	keys, err := listKeys(ctx, b.conversations, ">", "conversations")
	if err != nil {
		return nil, err
	}
	out := []Conversation{}
	for k := range keys {
		c, err := load[Conversation](ctx, b.conversations, k, "conv_", ErrUnknownConversation)
		if err == nil && want[c.Widget] && c.DeletedAt == nil {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Conversation) int { return b.CreatedAt.Compare(a.CreatedAt) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
