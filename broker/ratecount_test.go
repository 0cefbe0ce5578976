package broker

import (
	"testing"
	"time"
)

func TestCountRateShared(t *testing.T) {
	a := startBroker(t)
	cfg := a.cfg
	cfg.NATS.URL = a.NATSClientURL()
	creds, err := a.CredsFile(RoleBroker)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATS.CredentialsFile = creds
	cfg.DataDir = t.TempDir()
	b := New(cfg, a.rootLog)
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	now := time.Now()
	for i, br := range []*Broker{a, b, a, b} {
		n, end, err := br.CountRate(t.Context(), "resolve.ip.x", time.Minute, now)
		if err != nil || n != i+1 || !end.After(now) {
			t.Fatalf("count %d = %d, %v, %v", i, n, end, err)
		}
	}
	if _, _, err := a.CountRate(t.Context(), "k", 2*time.Hour, now); err == nil {
		t.Fatal("a window over the maximum was accepted")
	}
}
