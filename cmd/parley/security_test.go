package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// Helpers for sites, keys and logs that the end-to-end tests here
// share. The security tests themselves (origins, challenges, identities,
// rate limits, secrets in logs) live beside their handlers in signaling.

// withExampleWidget adds pk_example, as configs/parley.example.yaml defines
// it, to the test config's widgets.
func withExampleWidget(t testing.TB) func(*configs.Config) {
	t.Helper()
	w := signalingtest.ExampleWidget(t, filepath.Join("..", "..", "configs", "parley.example.yaml"))
	return func(c *configs.Config) { c.Widgets = append(c.Widgets, w) }
}

// withWidget adds a widget to the test config.
func withWidget(w configs.WidgetConfig) func(*configs.Config) {
	w.Normalize()
	return func(c *configs.Config) { c.Widgets = append(c.Widgets, w) }
}

// newAdminKey creates an admin key straight in the store, as `parley keys
// create` does.
func (e *env) newAdminKey(tenant string, scopes ...string) (string, broker.KeyInfo) {
	e.t.Helper()
	key, info, err := e.app.broker.CreateAdminKey(context.Background(), tenant, "test", scopes)
	if err != nil {
		e.t.Fatalf("create admin key: %v", err)
	}
	return key, info
}

// readLog reads a conversation's whole log.
func (e *env) readLog(cid string) []agentbridge.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := e.app.broker.ReadLog(ctx, cid, 0)
	if err != nil {
		e.t.Fatalf("read log: %v", err)
	}
	return evs
}
