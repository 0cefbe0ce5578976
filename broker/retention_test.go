package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/configs"
)

// TestSweepFinishesOwnUnfinishedDeletion: a deletion whose purge fails
// part-way (a store error) is finished by the same broker's next sweep,
// not a minute later as one left by a broker that died; a deletion another
// broker has just marked (and may be purging) is left to it.
func TestSweepFinishesOwnUnfinishedDeletion(t *testing.T) {
	b := startBrokerWith(t, nil, func(c *configs.Config) {
		fastDispatch(c)
		c.Retention.SweepInterval = time.Hour // the test sweeps
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	mine, others := startSession(t, b).ConversationID, startSession(t, b).ConversationID

	c, err := b.markForDeletion(ctx, mine)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := b.indexConversations(ctx, map[string]bool{mine: true})
	if err != nil {
		t.Fatal(err)
	}
	failed, stop := context.WithCancel(ctx)
	stop() // every store call of the purge fails
	if err := b.purge(failed, c, idx); err == nil {
		t.Fatal("a purge with a cancelled context succeeded")
	}
	if !b.deleting.has(mine) {
		t.Fatal("the failed deletion is not pending")
	}
	if _, err := b.markForDeletion(ctx, others); err != nil { // as another broker would
		t.Fatal(err)
	}

	n, err := b.SweepConversations(ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d deleted, %v; want 1 (the unfinished deletion)", n, err)
	}
	if _, err := b.conversations.Get(ctx, mine); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the unfinished deletion's record: %v, want gone", err)
	}
	if b.deleting.has(mine) {
		t.Error("the finished deletion is still pending")
	}
	if _, err := b.conversations.Get(ctx, others); err != nil {
		t.Errorf("another broker's fresh deletion was taken over: %v", err)
	}
}
