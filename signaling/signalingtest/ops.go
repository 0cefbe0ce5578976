package signalingtest

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/parley-rtc/parley/broker"
)

// OpsRooms lists rooms through GET /v1/ops/rooms?query with an admin key.
func (c *Client) OpsRooms(ak, query string) []broker.Room {
	c.T.Helper()
	r := c.Do("GET", "/v1/ops/rooms"+query, nil, "Authorization", "Bearer "+ak)
	if r.Status != http.StatusOK {
		c.T.Fatalf("GET /v1/ops/rooms%s: %d %s", query, r.Status, r.Raw)
	}
	var body struct {
		Rooms []broker.Room `json:"rooms"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &body); err != nil || body.Rooms == nil {
		c.T.Fatalf("GET /v1/ops/rooms%s: %v %s", query, err, r.Raw)
	}
	return body.Rooms
}

// FindRoom is the room of cid in rooms.
func FindRoom(rooms []broker.Room, cid string) (broker.Room, bool) {
	i := slices.IndexFunc(rooms, func(r broker.Room) bool { return r.ConversationID == cid })
	if i < 0 {
		return broker.Room{}, false
	}
	return rooms[i], true
}

// WaitRoom polls the ops API until the room of cid is listed and cond
// holds for it, failing the test with the last room seen after 10 s.
func (c *Client) WaitRoom(ak, cid, what string, cond func(broker.Room) bool) broker.Room {
	c.T.Helper()
	var last broker.Room
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		room, ok := FindRoom(c.OpsRooms(ak, ""), cid)
		if ok && cond(room) {
			return room
		}
		last = room
		if time.Now().After(deadline) {
			data, _ := json.Marshal(last)
			c.T.Fatalf("timed out waiting for room %s: %s; last seen: %s", cid, what, data)
		}
		<-tick.C
	}
}
