package broker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/parley-rtc/parley/configs"
)

// TestDeletedSeedWidgetStaysDeleted: a widget of the YAML seed that an
// operator deleted does not come back when the broker starts again (its id
// is retired, as SECURITY.md says).
func TestDeletedSeedWidgetStaysDeleted(t *testing.T) {
	t.Parallel()
	cfg := configs.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:-1"
	start := func() *Broker {
		b := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := start()
	if _, err := b.WidgetByID("wdg_demo"); err != nil {
		t.Fatalf("the seed widget is missing: %v", err)
	}
	if err := b.DeleteWidget(t.Context(), "wdg_demo"); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b = start()
	defer b.Close()
	if w, err := b.WidgetByID("wdg_demo"); err == nil {
		t.Fatalf("the deleted seed widget came back: %+v", w.WidgetConfig.ID)
	}
	if _, err := b.WidgetByKey("pk_demo"); err == nil {
		t.Fatal("the deleted seed widget's key resolves again")
	}
}
