package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/configs"
)

// Widgets live in the <prefix>_widgets KV bucket under "w.<id>". Every
// broker keeps a cache of all of them, fed by a KV watch, so a lookup by
// public key costs nothing and an edit or key rotation on one broker takes
// effect on all at once.

// WidgetRecord is a widget as stored: its configuration, its identity
// secret (kept to verify signatures, never returned by the API after
// creation) and key rotation state.
type WidgetRecord struct {
	configs.WidgetConfig
	// Secret is the widget's identity secret (WidgetConfig.IdentitySecret
	// is not marshalled).
	Secret string `json:"identity_secret,omitempty"`
	// PreviousKey keeps working until PreviousKeyUntil after a rotation
	// with a grace period.
	PreviousKey      string    `json:"previous_key,omitempty"`
	PreviousKeyUntil time.Time `json:"previous_key_until,omitzero"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

func (r *WidgetRecord) widget() configs.WidgetConfig {
	w := r.WidgetConfig
	w.IdentitySecret = r.Secret
	return w
}

// ValidationError lists the problems of a widget; it wraps ErrValidation.
type ValidationError struct {
	Problems []configs.Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Field + ": " + p.Message
	}
	return "broker: validation failed: " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrValidation) hold.
func (e *ValidationError) Unwrap() error { return ErrValidation }

// widgetCache is every widget, by id and by public key (current and, during
// a grace period, previous).
type widgetCache struct {
	mu    sync.RWMutex
	byID  map[string]*WidgetRecord
	byKey map[string]string // public key → widget id
}

func newWidgetCache() *widgetCache {
	return &widgetCache{byID: make(map[string]*WidgetRecord), byKey: make(map[string]string)}
}

func (c *widgetCache) put(id string, r *WidgetRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delLocked(id)
	c.byID[id] = r
	c.byKey[r.Key] = id
	if r.PreviousKey != "" {
		c.byKey[r.PreviousKey] = id
	}
}

func (c *widgetCache) has(id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.byID[id]
	return ok
}

func (c *widgetCache) putIfAbsent(id string, r *WidgetRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[id]; !ok {
		c.byID[id] = r
		c.byKey[r.Key] = id
		if r.PreviousKey != "" {
			c.byKey[r.PreviousKey] = id
		}
	}
}

func (c *widgetCache) del(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delLocked(id)
}

func (c *widgetCache) delLocked(id string) {
	if old, ok := c.byID[id]; ok {
		if c.byKey[old.Key] == id {
			delete(c.byKey, old.Key)
		}
		if c.byKey[old.PreviousKey] == id {
			delete(c.byKey, old.PreviousKey)
		}
		delete(c.byID, id)
	}
}

// watchWidgets keeps the cache in step with the bucket until the broker
// closes. The first pass (all current values) completes before Start
// returns.
func (b *Broker) watchWidgets(ctx context.Context) error {
	w, err := b.widgets.Watch(b.ctx, "w.*")
	if err != nil {
		return fmt.Errorf("%w: watch widgets: %w", ErrStore, err)
	}
	first := make(chan struct{})
	if !b.goroutine(func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-b.ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // end of the initial values
					if initial {
						initial = false
						close(first)
					}
					continue
				}
				b.applyWidgetEntry(e)
			}
		}
	}) {
		_ = w.Stop()
		return ErrClosed
	}
	select {
	case <-first:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.loadMissingWidgets(ctx)
}

// loadMissingWidgets reads from the bucket the configured widgets that the
// watch's initial values left out. On a 3-node cluster under load the watch
// once reported the end of its initial values without the widget seeded
// just before, and the broker started answering UNKNOWN_WIDGET_KEY for the
// demo widget; the watch delivers the widget later, but readiness must not
// depend on that.
func (b *Broker) loadMissingWidgets(ctx context.Context) error {
	for _, w := range b.cfg.Widgets {
		if b.widgetCache.has(w.ID) {
			continue
		}
		e, err := b.widgets.Get(ctx, "w."+w.ID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			continue // deleted by an operator
		case err != nil:
			return fmt.Errorf("%w: load widget %s: %w", ErrStore, w.ID, err)
		}
		var r WidgetRecord
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			b.log.Warn("ignoring undecodable widget", "widget_id", w.ID, "err", err)
			continue
		}
		b.log.Warn("widget missing from the watch's initial values; loaded directly", "widget_id", w.ID)
		// The watch may have delivered it (or a newer version) meanwhile.
		b.widgetCache.putIfAbsent(w.ID, &r)
	}
	return nil
}

func (b *Broker) applyWidgetEntry(e jetstream.KeyValueEntry) {
	id := strings.TrimPrefix(e.Key(), "w.")
	if e.Operation() != jetstream.KeyValuePut {
		b.widgetCache.del(id)
		return
	}
	var r WidgetRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		b.log.Warn("ignoring undecodable widget", "widget_id", id, "err", err)
		return
	}
	b.widgetCache.put(id, &r)
}

// WidgetByKey returns the widget a public key belongs to. A key replaced by
// a rotation keeps working until its grace period ends.
func (b *Broker) WidgetByKey(key string) (configs.WidgetConfig, error) {
	if key == "" {
		return configs.WidgetConfig{}, ErrUnknownWidget
	}
	c := b.widgetCache
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.byID[c.byKey[key]]
	if !ok || (r.Key != key && !time.Now().Before(r.PreviousKeyUntil)) {
		return configs.WidgetConfig{}, ErrUnknownWidget
	}
	return r.widget(), nil
}

// WidgetByID returns a widget by id.
func (b *Broker) WidgetByID(id string) (WidgetRecord, error) {
	c := b.widgetCache
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.byID[id]
	if !ok {
		return WidgetRecord{}, ErrUnknownWidget
	}
	out := *r
	out.WidgetConfig = r.widget()
	return out, nil
}

// ListWidgets returns the widgets of a tenant ("" for all), by id.
func (b *Broker) ListWidgets(tenant string) []WidgetRecord {
	c := b.widgetCache
	c.mu.RLock()
	out := make([]WidgetRecord, 0, len(c.byID))
	for _, r := range c.byID {
		if tenant == "" || r.Tenant == tenant {
			out = append(out, *r)
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b WidgetRecord) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// seedWidgets stores the configured widgets that the bucket does not have
// yet; stored ones (maybe edited through the admin API) are left alone.
func (b *Broker) seedWidgets(ctx context.Context, widgets []configs.WidgetConfig) error {
	for _, w := range widgets {
		// A seed never brings back a widget an operator deleted: its id
		// is retired (KV Create would succeed over the delete marker).
		switch _, err := b.widgets.Get(ctx, "gone."+w.ID); {
		case err == nil:
			b.log.Warn("config widget skipped: an operator deleted it, and a deleted widget stays deleted; remove it from the config's widgets",
				"widget_id", w.ID)
			continue
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return fmt.Errorf("%w: seed widget %s: %w", ErrStore, w.ID, err)
		}
		now := time.Now().UTC()
		r := WidgetRecord{WidgetConfig: w, Secret: w.IdentitySecret, CreatedAt: now, UpdatedAt: now}
		data, err := json.Marshal(&r)
		if err != nil {
			return fmt.Errorf("broker: encode widget: %w", err)
		}
		if _, err := b.widgets.Create(ctx, "w."+w.ID, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: seed widget %s: %w", ErrStore, w.ID, err)
		}
	}
	return nil
}

// validateWidget normalizes and checks a widget, including that its public
// key is not used by another widget.
func (b *Broker) validateWidget(w *configs.WidgetConfig) error {
	w.Normalize()
	problems := w.Validate()
	if other, err := b.WidgetByKey(w.Key); err == nil && other.ID != w.ID {
		problems = append(problems, configs.Problem{Field: "public_key", Message: "already used by another widget"})
	}
	if d, ok := w.MaxAge(); ok {
		if msg := b.cfg.Retention.CheckWidgetMaxAge(d); msg != "" {
			problems = append(problems, configs.Problem{Field: "conversation_max_age", Message: msg})
		}
	}
	if len(problems) > 0 {
		return &ValidationError{Problems: problems}
	}
	return nil
}

// CreateWidget stores a new widget. Its public key and, unless given, its
// id are generated; an identity secret is generated when generateSecret is
// set and none is given. The secret is returned only here.
func (b *Broker) CreateWidget(ctx context.Context, w configs.WidgetConfig, generateSecret bool) (WidgetRecord, error) {
	if w.Key == "" {
		w.Key = "pk_" + newSecret(18)
	}
	if w.ID == "" {
		w.ID = newID("wdg_")
	}
	if w.IdentitySecret == "" && generateSecret {
		w.IdentitySecret = newSecret(32)
	}
	if err := b.validateWidget(&w); err != nil {
		return WidgetRecord{}, err
	}
	// An id once deleted is never given out again: keys, sessions and
	// leads of the old widget must not carry over to a new one.
	if _, err := b.widgets.Get(ctx, "gone."+w.ID); err == nil {
		return WidgetRecord{}, &ValidationError{Problems: []configs.Problem{{Field: "id", Message: "was used by a deleted widget; choose another"}}}
	}
	now := time.Now().UTC()
	r := WidgetRecord{WidgetConfig: w, Secret: w.IdentitySecret, CreatedAt: now, UpdatedAt: now}
	data, _ := json.Marshal(&r)
	if _, err := b.widgets.Create(ctx, "w."+w.ID, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return WidgetRecord{}, &ValidationError{Problems: []configs.Problem{{Field: "id", Message: "already exists"}}}
		}
		return WidgetRecord{}, fmt.Errorf("%w: create widget: %w", ErrStore, err)
	}
	b.applyWidgetPut(w.ID, &r)
	b.log.Info("widget created", "widget_id", w.ID, "tenant", w.Tenant)
	r.WidgetConfig.IdentitySecret = r.Secret
	return r, nil
}

// UpdateWidget replaces a widget's settings. The id, public key, identity
// secret and creation time stay as they are.
func (b *Broker) UpdateWidget(ctx context.Context, id string, w configs.WidgetConfig) (WidgetRecord, error) {
	return b.updateWidget(ctx, id, func(cur *WidgetRecord) error {
		w.ID, w.Key, w.IdentitySecret = cur.ID, cur.Key, cur.Secret
		if w.Tenant == "" {
			w.Tenant = cur.Tenant
		}
		if err := b.validateWidget(&w); err != nil {
			return err
		}
		cur.WidgetConfig = w
		return nil
	})
}

// updateWidget changes widget id's record with fn (compare-and-set, as
// update) and applies the result to this broker's widget cache.
func (b *Broker) updateWidget(ctx context.Context, id string, fn func(*WidgetRecord) error) (WidgetRecord, error) {
	r, err := update(ctx, b.widgets, "w."+id, func(cur *WidgetRecord) error {
		if err := fn(cur); err != nil {
			return err
		}
		cur.UpdatedAt = time.Now().UTC()
		return nil
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return WidgetRecord{}, ErrUnknownWidget
	case err != nil:
		return WidgetRecord{}, err
	}
	b.applyWidgetPut(id, &r)
	return r, nil
}

// RotateWidgetKey gives a widget a new public key. The old one stops at
// once, or after grace.
func (b *Broker) RotateWidgetKey(ctx context.Context, id string, grace time.Duration) (WidgetRecord, error) {
	r, err := b.updateWidget(ctx, id, func(cur *WidgetRecord) error {
		cur.PreviousKey, cur.PreviousKeyUntil = "", time.Time{}
		if grace > 0 {
			cur.PreviousKey, cur.PreviousKeyUntil = cur.Key, time.Now().UTC().Add(grace)
		}
		cur.Key = "pk_" + newSecret(18)
		return nil
	})
	if err != nil {
		return WidgetRecord{}, err
	}
	b.log.Info("widget key rotated", "widget_id", id, "grace", grace)
	return r, nil
}

// DeleteWidget removes a widget and revokes its secret keys; its
// conversations stay. Its id is never reused.
func (b *Broker) DeleteWidget(ctx context.Context, id string) error {
	w, err := b.WidgetByID(id)
	if err != nil {
		return err
	}
	if _, err := b.widgets.Put(ctx, "gone."+id, []byte(w.Tenant)); err != nil {
		return fmt.Errorf("%w: delete widget: %w", ErrStore, err)
	}
	keys, err := b.ListKeys(ctx, "")
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.WidgetID == id && !k.Disabled {
			if _, err := b.RevokeKey(ctx, k.ID); err != nil {
				return err
			}
		}
	}
	if err := b.widgets.Delete(ctx, "w."+id); err != nil {
		return fmt.Errorf("%w: delete widget: %w", ErrStore, err)
	}
	b.widgetCache.del(id)
	b.log.Info("widget deleted", "widget_id", id)
	return nil
}

// applyWidgetPut updates this broker's cache at once (the watch will
// bring the same value again; other brokers get it from their watch).
func (b *Broker) applyWidgetPut(id string, r *WidgetRecord) {
	cp := *r
	b.widgetCache.put(id, &cp)
}
