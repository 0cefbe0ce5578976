package broker

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
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

// attachHTTPAndWS attaches an HTTP leg and a WebSocket leg ("ws_1") of s
// to its room and fails t unless the stored room then has both.
func attachHTTPAndWS(t *testing.T, b *Broker, s Session) {
	t.Helper()
	b.LegAttached(s, "http_"+s.ID, "http")
	b.LegAttached(s, "ws_1", "websocket")
	b.rooms.flush(t.Context())
	if legs := roomLegs(t, b, s.ConversationID); len(legs) != 2 {
		t.Fatalf("room legs after attaching two: %+v, want 2", legs)
	}
}

// TestRoomLeavesWithEndedSession: a session that ends takes its legs out
// of the room at once, the HTTP leg (which would count it present for a
// minute) and a WebSocket still in its close handshake.
func TestRoomLeavesWithEndedSession(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	attachHTTPAndWS(t, b, s)
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
	attachHTTPAndWS(t, a, s)
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

// TestRoomLegsLeaveWithGracefulStop: a broker that stops gracefully takes
// its legs out of the shared room state as it closes, not when they
// expire (roomStale, 90 s): a room it shares keeps only the other
// broker's legs, a room only it hosted is deleted and announced as ended.
func TestRoomLegsLeaveWithGracefulStop(t *testing.T) {
	a := startBroker(t)
	peer := startPeer(t, a)
	shared, alone := startSession(t, a), startSession(t, a)
	a.LegAttached(shared, "ws_a", "websocket")
	peer.LegAttached(shared, "ws_peer", "websocket")
	peer.LegAttached(shared, "http_"+shared.ID, "http")
	peer.LegAttached(alone, "ws_alone", "websocket")
	a.rooms.flush(t.Context())
	peer.rooms.flush(t.Context())
	if legs := roomLegs(t, a, shared.ConversationID); len(legs) != 3 {
		t.Fatalf("shared room legs before the stop: %+v, want 3", legs)
	}
	if legs := roomLegs(t, a, alone.ConversationID); len(legs) != 1 {
		t.Fatalf("the peer's own room before the stop: %+v, want 1 leg", legs)
	}
	ended := make(chan Room, 16)
	stop, err := a.WatchRooms(func(r Room) {
		if r.ConversationID == alone.ConversationID && r.EndedReason != "" {
			ended <- r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	start := time.Now()
	peer.Close()
	took := time.Since(start)
	// At once: Close has returned, nothing has expired.
	legs := roomLegs(t, a, shared.ConversationID)
	if len(legs) != 1 || legs[0].ID != "ws_a" || legs[0].Broker != a.rooms.id {
		t.Fatalf("shared room legs after the peer stopped: %+v, want only ws_a of broker %s", legs, a.rooms.id)
	}
	if legs := roomLegs(t, a, alone.ConversationID); legs != nil {
		t.Fatalf("the stopped peer's own room is still stored: legs %+v", legs)
	}
	select {
	case r := <-ended:
		if r.EndedReason != RoomEndedBrokerStopped {
			t.Fatalf("room ended with %q, want %q", r.EndedReason, RoomEndedBrokerStopped)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the end of the stopped peer's room was not announced")
	}
	t.Logf("peer Close took %v; its legs were gone when it returned", took.Round(time.Millisecond))
	// Nothing of it comes back with the next flush of the broker left.
	a.rooms.flush(t.Context())
	if legs := roomLegs(t, a, shared.ConversationID); len(legs) != 1 {
		t.Fatalf("shared room legs after a flush: %+v", legs)
	}
}

// TestRoomLegsOfACrashedBrokerExpire: a broker that died without closing
// (no release) leaves its legs behind; they go once older than roomStale,
// dropped by the next write of another broker to the room, and a room
// nobody refreshes is deleted when rooms are listed.
func TestRoomLegsOfACrashedBrokerExpire(t *testing.T) {
	b := startBroker(t)
	shared, orphan := startSession(t, b), startSession(t, b)
	old := time.Now().UTC().Add(-roomStale - time.Minute)
	put := func(cid string) {
		room := Room{ConversationID: cid, Widget: shared.Widget, Agent: shared.Agent, Mode: "chat", StartedAt: old,
			UpdatedAt: old, Broker: "brk_crashed", Legs: []RoomLeg{{Broker: "brk_crashed", Seen: old, ID: "ws_dead",
				Kind: "chat", Transport: "websocket", SessionID: "ses_dead", Since: old}}}
		data, _ := json.Marshal(room)
		if _, err := b.roomsKV.Put(t.Context(), cid, data); err != nil {
			t.Fatal(err)
		}
	}
	put(shared.ConversationID)
	put(orphan.ConversationID)

	b.LegAttached(shared, "ws_live", "websocket")
	b.rooms.flush(t.Context())
	if legs := roomLegs(t, b, shared.ConversationID); len(legs) != 1 || legs[0].ID != "ws_live" {
		t.Fatalf("legs after a live broker wrote the room: %+v, want only ws_live", legs)
	}
	rooms, err := b.Rooms(t.Context(), "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rooms {
		if r.ConversationID == orphan.ConversationID {
			t.Fatalf("a room only a crashed broker wrote is listed: %+v", r)
		}
	}
	if legs := roomLegs(t, b, orphan.ConversationID); legs != nil {
		t.Fatalf("a room only a crashed broker wrote is still stored: %+v", legs)
	}
}
