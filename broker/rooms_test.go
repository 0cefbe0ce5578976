package broker

import (
	"errors"
	"testing"
)

// startPeer starts a second broker on a's NATS, with its own data
// directory; it is closed when the test ends.
func startPeer(t *testing.T, a *Broker) *Broker {
	t.Helper()
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
	return b
}

// roomLegs returns the legs of a conversation's stored room, or nil when
// no room is stored.
func roomLegs(t *testing.T, b *Broker, cid string) []RoomLeg {
	t.Helper()
	room, err := b.Room(t.Context(), cid)
	if errors.Is(err, ErrUnknownConversation) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return room.Legs
}

// TestRoomLeavesWithEndedSession: a session that ends takes its legs out
// of the room at once, the HTTP leg (which would count it present for a
// minute) and a WebSocket still in its close handshake.
func TestRoomLeavesWithEndedSession(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	b.LegAttached(s, "http_"+s.ID, "http")
	b.LegAttached(s, "ws_1", "websocket")
	b.rooms.flush(t.Context())
	if legs := roomLegs(t, b, s.ConversationID); len(legs) != 2 {
		t.Fatalf("room legs before the end: %+v, want 2", legs)
	}
	if err := b.EndSession(t.Context(), s.ID, "visitor_ended"); err != nil {
		t.Fatal(err)
	}
	b.rooms.flush(t.Context())
	if legs := roomLegs(t, b, s.ConversationID); legs != nil {
		t.Fatalf("the room of an ended session is still stored, legs %+v", legs)
	}
	b.LegDetached(s.ConversationID, "ws_1") // the handshake ends
	b.rooms.flush(t.Context())
	if legs := roomLegs(t, b, s.ConversationID); legs != nil {
		t.Fatalf("a late detach stored the room again: legs %+v", legs)
	}
}

// TestRoomOfConversationDeletedElsewhere: when another broker deletes a
// conversation (retention, an operator), a room this broker still has
// legs in is not stored again: deleted stays deleted.
func TestRoomOfConversationDeletedElsewhere(t *testing.T) {
	a := startBroker(t)
	other := startPeer(t, a)
	s := startSession(t, a)
	a.LegAttached(s, "http_"+s.ID, "http")
	a.LegAttached(s, "ws_1", "websocket")
	a.rooms.flush(t.Context())
	if legs := roomLegs(t, a, s.ConversationID); len(legs) != 2 {
		t.Fatalf("room legs: %+v, want 2", legs)
	}
	if err := other.DeleteConversation(t.Context(), s.ConversationID); err != nil {
		t.Fatal(err)
	}
	if legs := roomLegs(t, a, s.ConversationID); legs != nil {
		t.Fatalf("the deletion left the room: legs %+v", legs)
	}
	// The WebSocket here closes after the deletion; the HTTP leg has not
	// expired yet.
	a.LegDetached(s.ConversationID, "ws_1")
	a.rooms.flush(t.Context())
	if legs := roomLegs(t, a, s.ConversationID); legs != nil {
		t.Fatalf("a broker stored the room of a deleted conversation again: legs %+v", legs)
	}
	a.rooms.mu.Lock()
	_, kept := a.rooms.byCID[s.ConversationID]
	a.rooms.mu.Unlock()
	if kept {
		t.Fatal("the broker still keeps the room of a deleted conversation")
	}
}
