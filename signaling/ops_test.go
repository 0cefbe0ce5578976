package signaling_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// The ops API: live rooms listed, read and ended over HTTP, and their
// Server-Sent Events stream. (The rooms on NATS, the CLI and the /ops/
// page are tested end to end in cmd/parley.)

// fastRooms flushes room state every 50 ms, so tests wait less.
func fastRooms(c *configs.Config) { c.Ops.RoomUpdateInterval = 50 * time.Millisecond }

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name, data string
	room       broker.Room
}

// sseStream reads GET /v1/ops/events.
type sseStream struct {
	t      testing.TB
	events chan sseEvent
	pings  chan struct{}
}

// openOpsEvents opens the ops event stream with an admin key; it is closed
// when the test ends.
func (e *env) openOpsEvents(ak string) *sseStream {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", e.base+"/v1/ops/events", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ak)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		e.t.Fatalf("GET /v1/ops/events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	st := &sseStream{t: e.t, events: make(chan sseEvent, 1000), pings: make(chan struct{}, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(st.events)
		sc := bufio.NewScanner(res.Body)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || data != nil {
					ev.data = strings.Join(data, "\n")
					if ev.name == "room" || ev.name == "room_ended" {
						_ = json.Unmarshal([]byte(ev.data), &ev.room)
					}
					st.events <- ev
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, ":"):
				select {
				case st.pings <- struct{}{}:
				default:
				}
			case strings.HasPrefix(line, "event:"):
				ev.name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
			case strings.HasPrefix(line, "data:"):
				data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
			}
		}
	}()
	e.t.Cleanup(func() {
		cancel()
		res.Body.Close()
		<-done
	})
	return st
}

// next returns the next event, which must be called name.
func (st *sseStream) next(name string) sseEvent {
	st.t.Helper()
	select {
	case ev, ok := <-st.events:
		if !ok {
			st.t.Fatalf("event stream ended, want %q", name)
		}
		if ev.name != name {
			st.t.Fatalf("event %q %s, want %q", ev.name, ev.data, name)
		}
		return ev
	case <-time.After(10 * time.Second):
		st.t.Fatalf("no %q event within 10 s", name)
	}
	return sseEvent{}
}

// until skips events until one named name about cid.
func (st *sseStream) until(name, cid string) sseEvent {
	st.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-st.events:
			if !ok {
				st.t.Fatalf("event stream ended, want %q for %s", name, cid)
			}
			if ev.name == name && ev.room.ConversationID == cid {
				return ev
			}
		case <-timeout:
			st.t.Fatalf("no %q event for %s within 10 s", name, cid)
		}
	}
}

// TestOpsRoomsTenant: an admin key limited to a tenant sees, reads and ends
// only the rooms of its tenant's widgets.
func TestOpsRoomsTenant(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t), fastRooms)
	all, _ := e.newAdminKey("", broker.ScopeOpsRead, broker.ScopeOpsWrite)
	tenant, _ := e.newAdminKey("example", broker.ScopeOpsRead, broker.ScopeOpsWrite)
	demo := e.NewSession(nil)
	e.MustDialWS(demo)
	example := e.MustCreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, nil)
	if _, _, err := e.DialWS(example, "", "Origin", signalingtest.ExampleOrigin); err != nil {
		t.Fatal(err)
	}
	e.WaitRoom(all, demo.ConversationID, "the demo room", func(broker.Room) bool { return true })
	e.WaitRoom(all, example.ConversationID, "the example room", func(broker.Room) bool { return true })

	rooms := e.OpsRooms(tenant, "")
	if len(rooms) != 1 || rooms[0].ConversationID != example.ConversationID || rooms[0].Widget != signalingtest.ExampleID {
		t.Fatalf("tenant key lists %+v, want the example room only", rooms)
	}
	if rooms := e.OpsRooms(tenant, "?widget=wdg_demo"); len(rooms) != 0 {
		t.Fatalf("tenant key with ?widget=wdg_demo lists %+v", rooms)
	}
	tauth := []string{"Authorization", "Bearer " + tenant}
	signalingtest.ExpectErr(t, "tenant GET of another tenant's room", e.Do("GET", "/v1/ops/rooms/"+demo.ConversationID, nil, tauth...), 404, "ROOM_NOT_FOUND")
	signalingtest.ExpectErr(t, "tenant DELETE of another tenant's room", e.Do("DELETE", "/v1/ops/rooms/"+demo.ConversationID, nil, tauth...), 404, "ROOM_NOT_FOUND")
	if r := e.Do("GET", "/v1/ops/rooms/"+example.ConversationID, nil, tauth...); r.Status != 200 {
		t.Fatalf("tenant GET of its room: %d %s", r.Status, r.Raw)
	}
	// Its event stream leaves the other tenant out too.
	st := e.openOpsEvents(tenant)
	if ev := st.next("room"); ev.room.ConversationID != example.ConversationID {
		t.Fatalf("tenant stream: room %s first", ev.room.ConversationID)
	}
	if ev := st.next("ready"); !strings.Contains(ev.data, `"rooms":1`) {
		t.Fatalf("tenant stream ready = %s", ev.data)
	}
	if _, ok := signalingtest.FindRoom(e.OpsRooms(all, ""), demo.ConversationID); !ok {
		t.Fatal("the demo room is gone")
	}
}

// TestOpsEventsSSE: GET /v1/ops/events sends a "room" per live room,
// "ready", then "room" as rooms change and "room_ended" when one ends.
func TestOpsEventsSSE(t *testing.T) {
	t.Parallel()
	e := startEnv(t, fastRooms)
	ak, _ := e.newAdminKey("", broker.ScopeOpsRead)
	first := e.NewSession(nil)
	e.MustDialWS(first)
	e.WaitRoom(ak, first.ConversationID, "the first room", func(broker.Room) bool { return true })

	st := e.openOpsEvents(ak)
	if ev := st.next("room"); ev.room.ConversationID != first.ConversationID || ev.room.Mode != "chat" {
		t.Fatalf("first event: %s", ev.data)
	}
	if ev := st.next("ready"); ev.data != `{"rooms":1}` {
		t.Fatalf("ready: %s", ev.data)
	}

	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	if ev := st.until("room", s.ConversationID); ev.room.Widget != "wdg_demo" || len(ev.room.Legs) != 1 {
		t.Fatalf("room event for the new session: %s", ev.data)
	}
	if r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": "voice"}, "Authorization", "Bearer "+s.Token); r.Status != 200 {
		t.Fatalf("mode voice: %d %s", r.Status, r.Raw)
	}
	for ev := st.until("room", s.ConversationID); ev.room.Mode != "voice"; ev = st.until("room", s.ConversationID) {
	}
	if err := ws.Conn.CloseNow(); err != nil {
		t.Fatal(err)
	}
	if ev := st.until("room_ended", s.ConversationID); ev.room.EndedReason != broker.RoomEndedLegsClosed {
		t.Fatalf("room_ended: %s", ev.data)
	}

	// Without ops:read: refused before streaming.
	noOps, _ := e.newAdminKey("", broker.ScopeConfigRead)
	signalingtest.ExpectErr(t, "events without ops:read", e.Do("GET", "/v1/ops/events", nil, "Authorization", "Bearer "+noOps), 403, "MISSING_SCOPE")
}

// waitNoRoom polls the ops API until the room of cid is gone.
func (e *env) waitNoRoom(ak, cid string) {
	e.t.Helper()
	agenttest.Poll(e.t, 10*time.Second, "room "+cid+" to leave the list", func() bool {
		_, ok := signalingtest.FindRoom(e.OpsRooms(ak, ""), cid)
		return !ok
	})
}

func legOf(r broker.Room, transport string) (broker.RoomLeg, bool) {
	i := slices.IndexFunc(r.Legs, func(l broker.RoomLeg) bool { return l.Transport == transport })
	if i < 0 {
		return broker.RoomLeg{}, false
	}
	return r.Legs[i], true
}

func hasParticipant(r broker.Room, kind, id string) bool {
	return slices.ContainsFunc(r.Participants, func(p broker.RoomParticipant) bool {
		return p.Kind == kind && (id == "" || p.ID == id)
	})
}

// TestOpsRoomLifecycle: a conversation's room through the ops API, from
// its WebSocket to a voice call with media counters, filtered, in detail
// with its recent events, and ended by an operator.
func TestOpsRoomLifecycle(t *testing.T) {
	e := startEnv(t, voiceConfig, fastRooms)
	ak, _ := e.newAdminKey("", broker.ScopeOpsRead, broker.ScopeOpsWrite)
	readOnly, _ := e.newAdminKey("", broker.ScopeOpsRead)
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)

	room := e.WaitRoom(ak, s.ConversationID, "a chat room with the WebSocket leg and the visitor", func(r broker.Room) bool {
		l, ok := legOf(r, "websocket")
		return r.Mode == "chat" && ok && l.Kind == "chat" && l.SessionID == s.ID && hasParticipant(r, "visitor", s.ID)
	})
	if room.Widget != "wdg_demo" || room.Agent != configs.DefaultAgent || room.StartedAt.IsZero() || room.Broker == "" {
		t.Fatalf("room = %+v", room)
	}
	ws.Send(map[string]any{"type": "message", "body": "hello ops", "client_message_id": "o-1"})
	signalingtest.ExpectReply(t, ws, "o-1", "echo: hello ops")
	room = e.WaitRoom(ak, s.ConversationID, "the agent worker as a participant, idle after its reply", func(r broker.Room) bool {
		return hasParticipant(r, "agent", r.WorkerID) && r.WorkerID != "" && r.AgentState == "idle"
	})
	t.Logf("chat room: agent %s state %q worker %s, participants %+v", room.Agent, room.AgentState, room.WorkerID, room.Participants)

	// A voice call: mode voice, a webrtc leg whose counters move while
	// frames flow.
	c := e.NewVoiceClient(s)
	c.WaitConnected()
	sent := make(chan struct{})
	frames := signalingtest.Speech(t, 2, 800, 200) // 2 s of audio
	go func() {
		defer close(sent)
		c.Send(frames)
	}()
	room = e.WaitRoom(ak, s.ConversationID, "mode voice with a webrtc leg whose frames flow", func(r broker.Room) bool {
		l, ok := legOf(r, "webrtc")
		return r.Mode == "voice" && ok && l.Kind == "voice" && l.Media != nil && l.Media.FramesIn > 0 && l.Media.InFPS > 0
	})
	l, _ := legOf(room, "webrtc")
	t.Logf("voice leg media while sending: %+v", *l.Media)
	<-sent
	if l.Media.InFPS > 80 || l.Media.LossPct < 0 || l.Media.LossPct > 100 {
		t.Fatalf("implausible media stats %+v", *l.Media)
	}

	// Filters.
	for _, tc := range []struct {
		query string
		want  bool
	}{
		{"?mode=voice&widget=wdg_demo", true},
		{"?mode=voice&widget=wdg_demo&agent=" + configs.DefaultAgent, true},
		{"?mode=chat", false},
		{"?widget=wdg_other", false},
		{"?agent=nobody", false},
	} {
		if _, ok := signalingtest.FindRoom(e.OpsRooms(ak, tc.query), s.ConversationID); ok != tc.want {
			t.Errorf("GET /v1/ops/rooms%s lists the room: %v, want %v", tc.query, ok, tc.want)
		}
	}

	// Detail: the room and its recent events.
	auth := []string{"Authorization", "Bearer " + ak}
	r := e.Do("GET", "/v1/ops/rooms/"+s.ConversationID, nil, auth...)
	var detail struct {
		Room         broker.Room `json:"room"`
		RecentEvents []struct {
			Type string `json:"type"`
			Seq  uint64 `json:"seq"`
		} `json:"recent_events"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &detail); r.Status != http.StatusOK || err != nil {
		t.Fatalf("room detail: %d %v %s", r.Status, err, r.Raw)
	}
	var types []string
	for _, ev := range detail.RecentEvents {
		types = append(types, ev.Type)
	}
	if detail.Room.ConversationID != s.ConversationID || len(types) > e.cfg.Ops.RecentEvents ||
		!slices.Contains(types, "user_message") || !slices.Contains(types, "mode_changed") {
		t.Fatalf("room detail: room %s, recent events %q", detail.Room.ConversationID, types)
	}

	// Ending the room takes ops:write.
	signalingtest.ExpectErr(t, "DELETE with ops:read only", e.Do("DELETE", "/v1/ops/rooms/"+s.ConversationID, nil,
		"Authorization", "Bearer "+readOnly), http.StatusForbidden, "MISSING_SCOPE")
	if r := e.Do("DELETE", "/v1/ops/rooms/"+s.ConversationID, map[string]any{"reason": "test over"}, auth...); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE room: %d %s", r.Status, r.Raw)
	}
	if code, reason := ws.CloseStatus(); reason != "CONVERSATION_CLOSED" {
		t.Fatalf("WebSocket closed with %d %q, want CONVERSATION_CLOSED", code, reason)
	}
	// Ended means ended: the visitor's resume token no longer resumes it,
	// nor does a proven identity; a new session starts a new conversation.
	for range 2 { // every try, not only the first
		signalingtest.ExpectErr(t, "resume of the closed conversation", e.Do("POST", "/v1/sessions",
			map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": e.Resolve(signalingtest.DemoOrigin), "resume_token": s.ResumeToken},
			"Origin", signalingtest.DemoOrigin), http.StatusGone, "CONVERSATION_CLOSED")
	}
	if fresh := e.NewSession(nil); fresh.ConversationID == s.ConversationID {
		t.Fatalf("a new session resumed the closed conversation")
	}
	agenttest.Poll(t, 10*time.Second, "the voice leg to hang up", func() bool {
		_, ok := e.b.Voice(s.ID)
		return !ok
	})
	e.waitNoRoom(ak, s.ConversationID)
	signalingtest.ExpectErr(t, "GET the ended room", e.Do("GET", "/v1/ops/rooms/"+s.ConversationID, nil, auth...), http.StatusNotFound, "ROOM_NOT_FOUND")
	signalingtest.ExpectErr(t, "DELETE the ended room", e.Do("DELETE", "/v1/ops/rooms/"+s.ConversationID, nil, auth...), http.StatusNotFound, "ROOM_NOT_FOUND")
	signalingtest.ExpectErr(t, "GET an unknown room", e.Do("GET", "/v1/ops/rooms/conv_nosuchroom", nil, auth...), http.StatusNotFound, "ROOM_NOT_FOUND")
	signalingtest.ExpectErr(t, "GET without a key", e.Do("GET", "/v1/ops/rooms", nil), http.StatusUnauthorized, "INVALID_API_KEY")
	noOps, _ := e.newAdminKey("", broker.ScopeConfigRead)
	signalingtest.ExpectErr(t, "GET without ops:read", e.Do("GET", "/v1/ops/rooms", nil, "Authorization", "Bearer "+noOps), http.StatusForbidden, "MISSING_SCOPE")
}
