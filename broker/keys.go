package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// API keys: secret keys "sk_…" (a site's server, one widget) and admin keys
// "ak_…" (scoped). A key is shown once, when created; the <prefix>_keys
// bucket holds only its SHA-256 ("k.<hash>") and an index by key id
// ("id.<key id>" → hash).

// Key kinds.
const (
	KeySecret = "secret"
	KeyAdmin  = "admin"
)

// Admin key scopes.
const (
	ScopeConfigRead  = "config:read"
	ScopeConfigWrite = "config:write"
	ScopeKeysWrite   = "keys:write"
	ScopeOpsRead     = "ops:read"
	ScopeOpsWrite    = "ops:write"
	// ScopeDataDelete erases conversations and visitors (privacy
	// requests); ending rooms (ops:write) keeps their data.
	ScopeDataDelete = "data:delete"
)

// Scopes lists every admin scope.
var Scopes = []string{ScopeConfigRead, ScopeConfigWrite, ScopeKeysWrite, ScopeOpsRead, ScopeOpsWrite, ScopeDataDelete}

// KeyInfo describes an API key; it never holds the key itself.
type KeyInfo struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Name       string    `json:"name,omitempty"`
	Tenant     string    `json:"tenant,omitempty"` // admin keys: "" = every tenant
	WidgetID   string    `json:"widget_id,omitempty"`
	Scopes     []string  `json:"scopes,omitempty"`
	Hint       string    `json:"hint"` // first characters, to recognise a key
	CreatedAt  time.Time `json:"created_at"`
	Disabled   bool      `json:"disabled"`
	DisabledAt time.Time `json:"disabled_at,omitzero"`
}

// HasScope reports whether an admin key has scope.
func (k KeyInfo) HasScope(scope string) bool { return slices.Contains(k.Scopes, scope) }

// CreateSecretKey makes a secret key for a widget. The key is returned once.
func (b *Broker) CreateSecretKey(ctx context.Context, widgetID, name string) (string, KeyInfo, error) {
	w, err := b.WidgetByID(widgetID)
	if err != nil {
		return "", KeyInfo{}, err
	}
	return b.createKey(ctx, "sk_", KeyInfo{Kind: KeySecret, Name: name, Tenant: w.Tenant, WidgetID: widgetID})
}

// CreateAdminKey makes an admin key with scopes, limited to tenant unless
// tenant is "". The key is returned once.
func (b *Broker) CreateAdminKey(ctx context.Context, tenant, name string, scopes []string) (string, KeyInfo, error) {
	if len(scopes) == 0 {
		return "", KeyInfo{}, fmt.Errorf("%w: at least one scope is required (%s)", ErrValidation, strings.Join(Scopes, ", "))
	}
	for _, s := range scopes {
		if !slices.Contains(Scopes, s) {
			return "", KeyInfo{}, fmt.Errorf("%w: unknown scope %q (known: %s)", ErrValidation, s, strings.Join(Scopes, ", "))
		}
	}
	scopes = slices.Clone(scopes)
	slices.Sort(scopes)
	return b.createKey(ctx, "ak_", KeyInfo{Kind: KeyAdmin, Name: name, Tenant: tenant, Scopes: slices.Compact(scopes)})
}

func (b *Broker) createKey(ctx context.Context, prefix string, info KeyInfo) (string, KeyInfo, error) {
	if len(info.Name) > 100 {
		return "", KeyInfo{}, fmt.Errorf("%w: name longer than 100 characters", ErrValidation)
	}
	key := prefix + newSecret(32)
	info.ID = newID("key_")
	info.Hint = key[:len(prefix)+4] + "…"
	info.CreatedAt = time.Now().UTC()
	hash := hashHex(key)
	if err := b.putNew(ctx, b.keys, "k."+hash, info); err != nil {
		return "", KeyInfo{}, err
	}
	if _, err := b.keys.Create(ctx, "id."+info.ID, []byte(hash)); err != nil {
		return "", KeyInfo{}, fmt.Errorf("%w: key index: %w", ErrStore, err)
	}
	b.log.Info("api key created", "key_id", info.ID, "kind", info.Kind, "tenant", info.Tenant, "widget_id", info.WidgetID)
	return key, info, nil
}

// VerifyKey finds the key a caller presented. Unknown → ErrUnknownKey;
// revoked → ErrKeyDisabled.
func (b *Broker) VerifyKey(ctx context.Context, key, kind string) (KeyInfo, error) {
	var info KeyInfo
	wantPrefix := map[string]string{KeySecret: "sk_", KeyAdmin: "ak_"}[kind]
	if !strings.HasPrefix(key, wantPrefix) || len(key) > 200 {
		return info, ErrUnknownKey
	}
	e, err := b.keys.Get(ctx, "k."+hashHex(key))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return info, ErrUnknownKey
	case err != nil:
		return info, fmt.Errorf("%w: key: %w", ErrStore, err)
	}
	if err := json.Unmarshal(e.Value(), &info); err != nil || info.Kind != kind {
		return KeyInfo{}, ErrUnknownKey
	}
	if info.Disabled {
		return info, ErrKeyDisabled
	}
	return info, nil
}

// ListKeys returns the keys of a tenant ("" for all), oldest first.
func (b *Broker) ListKeys(ctx context.Context, tenant string) ([]KeyInfo, error) {
	keys, err := listKeys(ctx, b.keys, "k.*", "keys")
	if err != nil {
		return nil, err
	}
	out := []KeyInfo{}
	for k := range keys {
		e, err := b.keys.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		var info KeyInfo
		if json.Unmarshal(e.Value(), &info) == nil && (tenant == "" || info.Tenant == tenant) {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b KeyInfo) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Key returns a key's description by id.
func (b *Broker) Key(ctx context.Context, id string) (KeyInfo, error) {
	hash, err := b.keyHash(ctx, id)
	if err != nil {
		return KeyInfo{}, err
	}
	var info KeyInfo
	e, err := b.keys.Get(ctx, "k."+hash)
	if err != nil {
		return info, ErrUnknownKey
	}
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		return info, fmt.Errorf("%w: decode key: %w", ErrStore, err)
	}
	return info, nil
}

func (b *Broker) keyHash(ctx context.Context, id string) (string, error) {
	if !validID(id, "key_") {
		return "", ErrUnknownKey
	}
	e, err := b.keys.Get(ctx, "id."+id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return "", ErrUnknownKey
	case err != nil:
		return "", fmt.Errorf("%w: key index: %w", ErrStore, err)
	}
	return string(e.Value()), nil
}

// RevokeKey disables a key at once, on every broker (each use reads the
// store). Revoking a revoked key is not an error.
func (b *Broker) RevokeKey(ctx context.Context, id string) (KeyInfo, error) {
	hash, err := b.keyHash(ctx, id)
	if err != nil {
		return KeyInfo{}, err
	}
	info, err := update(ctx, b.keys, "k."+hash, func(k *KeyInfo) error {
		if !k.Disabled {
			k.Disabled, k.DisabledAt = true, time.Now().UTC()
		}
		return nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return KeyInfo{}, ErrUnknownKey
	}
	if err == nil {
		b.log.Info("api key revoked", "key_id", id)
	}
	return info, err
}
