package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// End-to-end tests of issue "Ops: room state…": live rooms on NATS (the
// parley_rooms KV bucket and parley.rooms.<cid>), in the `parley rooms`
// CLI and on the /ops/ page in Chromium. The ops API over HTTP and SSE,
// and /metrics, are tested beside their handlers in signaling.

// fastRooms flushes room state every 50 ms, so tests wait less.
func fastRooms(c *configs.Config) { c.Ops.RoomUpdateInterval = 50 * time.Millisecond }

// roomAnnouncements collects the snapshots announced on parley.rooms.*.
type roomAnnouncements struct {
	mu   sync.Mutex
	seen []announcement
}

type announcement struct {
	at   time.Time
	room broker.Room
}

func (e *env) watchAnnouncements(nc *nats.Conn) *roomAnnouncements {
	e.t.Helper()
	a := &roomAnnouncements{}
	subject := e.app.broker.RoomSubject("*")
	if subject != "parley.rooms.*" {
		e.t.Fatalf("room subject = %q, want parley.rooms.*", subject)
	}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var r broker.Room
		if err := json.Unmarshal(m.Data, &r); err != nil {
			e.t.Errorf("undecodable room snapshot on %s: %v", m.Subject, err)
			return
		}
		if m.Subject != "parley.rooms."+r.ConversationID {
			e.t.Errorf("room %s announced on %s", r.ConversationID, m.Subject)
		}
		a.mu.Lock()
		a.seen = append(a.seen, announcement{at: time.Now(), room: r})
		a.mu.Unlock()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return a
}

// of returns the snapshots of cid announced in [from, to].
func (a *roomAnnouncements) of(cid string, from, to time.Time) []broker.Room {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []broker.Room
	for _, s := range a.seen {
		if s.room.ConversationID == cid && !s.at.Before(from) && !s.at.After(to) {
			out = append(out, s.room)
		}
	}
	return out
}

// TestOpsRoomsOnNATS: what `nats kv watch parley_rooms` and `nats sub
// 'parley.rooms.*'` show: a put when the conversation's room appears,
// snapshots while it lives (coalesced: a burst of 50 messages is at most
// one announcement per room_update_interval) and a delete when it ends.
func TestOpsRoomsOnNATS(t *testing.T) {
	t.Parallel()
	const interval = 200 * time.Millisecond
	e := startEnv(t, func(c *configs.Config) { c.Ops.RoomUpdateInterval = interval })
	nc := e.natsConn()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.KeyValue(ctx, "parley_rooms")
	if err != nil {
		t.Fatalf("KV parley_rooms: %v", err)
	}
	watcher, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watcher.Stop() }()
	// nextKV returns the next change of key (skipping others).
	nextKV := func(key string) jetstream.KeyValueEntry {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case entry := <-watcher.Updates():
				if entry != nil && entry.Key() == key {
					return entry
				}
			case <-timeout:
				t.Fatalf("no change of %s in parley_rooms", key)
			}
		}
	}
	ann := e.watchAnnouncements(nc)

	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	put := nextKV(s.ConversationID)
	var stored broker.Room
	if err := json.Unmarshal(put.Value(), &stored); put.Operation() != jetstream.KeyValuePut || err != nil ||
		stored.ConversationID != s.ConversationID || stored.Widget != "wdg_demo" || stored.Mode != "chat" {
		t.Fatalf("first KV change: %v %s (%v)", put.Operation(), put.Value(), err)
	}
	agenttest.Poll(t, 5*time.Second, "a snapshot on parley.rooms.<cid>", func() bool {
		return len(ann.of(s.ConversationID, time.Time{}, time.Now())) > 0
	})

	// A burst of 50 messages and their echoes, one every 25 ms so that it
	// spans several intervals: hundreds of log events, announced at most
	// once per interval (plus the edges of the window).
	const burst = 50
	before := len(e.readLog(s.ConversationID))
	pace := time.NewTicker(25 * time.Millisecond)
	defer pace.Stop()
	start := time.Now()
	for i := range burst {
		id := fmt.Sprintf("b-%d", i)
		ws.Send(map[string]any{"type": "message", "body": "burst " + id, "client_message_id": id})
		signalingtest.ExpectReply(t, ws, id, "echo: burst "+id)
		<-pace.C
	}
	end := time.Now()
	elapsed := end.Sub(start)
	events := len(e.readLog(s.ConversationID)) - before
	got := len(ann.of(s.ConversationID, start, end))
	bound := int(elapsed/interval) + 2
	t.Logf("burst of %d messages: %d log events over %v, %d room announcements (bound %d)", burst, events, elapsed.Round(time.Millisecond), got, bound)
	if got > bound || got == 0 {
		t.Fatalf("%d room announcements during a %v burst, want 1 to %d (one per %v + 2)", got, elapsed, bound, interval)
	}
	if events < 2*burst {
		t.Fatalf("only %d log events during the burst", events)
	}

	// The visitor leaves: the key is deleted, and the last announcement
	// says why.
	if r := e.Do("DELETE", "/v1/sessions/"+s.ID, nil, "Authorization", "Bearer "+s.Token); r.Status != http.StatusNoContent {
		t.Fatalf("end session: %d %s", r.Status, r.Raw)
	}
	ws.CloseStatus()
	for {
		entry := nextKV(s.ConversationID)
		if entry.Operation() == jetstream.KeyValueDelete || entry.Operation() == jetstream.KeyValuePurge {
			break
		}
	}
	agenttest.Poll(t, 5*time.Second, "the room_ended snapshot", func() bool {
		rooms := ann.of(s.ConversationID, time.Time{}, time.Now())
		return rooms[len(rooms)-1].EndedReason == broker.RoomEndedLegsClosed
	})
	if _, err := kv.Get(ctx, s.ConversationID); err == nil {
		t.Fatal("the room is still in parley_rooms")
	}
}

// runParley runs the parley binary and returns its stdout.
func runParley(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(parleyBinary(t), args...)
	cmd.Env = cleanEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("parley %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestRoomsCLI: `parley rooms` lists, shows and watches the rooms of a
// running `parley serve`, straight from its NATS.
func TestRoomsCLI(t *testing.T) {
	dir := t.TempDir()
	_, e, natsURL := serveProc(t, dir)
	watch := startProc(t, "rooms", "--watch", "--json", "--nats-url", natsURL, "--data-dir", dir)
	watchTable := startProc(t, "rooms", "--watch", "--nats-url", natsURL, "--data-dir", dir)
	s, _ := e.chatSession("c-1", "hello cli") // its WebSocket is the room's one leg

	var rooms []broker.Room
	agenttest.Poll(t, 20*time.Second, "the room in parley rooms --json", func() bool {
		rooms = nil
		if err := json.Unmarshal([]byte(runParley(t, "rooms", "--json", "--nats-url", natsURL, "--data-dir", dir)), &rooms); err != nil {
			t.Fatal(err)
		}
		_, ok := signalingtest.FindRoom(rooms, s.ConversationID)
		return ok
	})
	room, _ := signalingtest.FindRoom(rooms, s.ConversationID)
	if room.Widget != "wdg_demo" || room.Mode != "chat" || len(room.Legs) != 1 {
		t.Fatalf("parley rooms --json: %+v", room)
	}
	table := runParley(t, "rooms", "--nats-url", natsURL, "--data-dir", dir, "--widget", "wdg_demo")
	t.Logf("parley rooms:\n%s", table)
	header := regexp.MustCompile(`(?m)^ID\s+WIDGET\s+MODE\s+AGENT\s+LEGS\s+AGE\s+IN/OUT\s+LOSS %$`)
	row := regexp.MustCompile(`(?m)^` + s.ConversationID + `\s+wdg_demo\s+chat\s+echo\S*\s+\S+\s+\d+[smhd]\s+-\s+-$`)
	if !header.MatchString(table) || !row.MatchString(table) {
		t.Fatalf("parley rooms table:\n%s", table)
	}
	if other := runParley(t, "rooms", "--nats-url", natsURL, "--data-dir", dir, "--widget", "wdg_other"); strings.Contains(other, s.ConversationID) {
		t.Fatalf("--widget wdg_other lists the room:\n%s", other)
	}

	show := runParley(t, "rooms", "show", s.ConversationID, "--nats-url", natsURL, "--data-dir", dir)
	t.Logf("parley rooms show:\n%s", show)
	for _, want := range []string{s.ConversationID, "wdg_demo", "chat", "websocket", "visitor", s.ID, "agent", "session_started", "user_message", "hello cli",
		"Conversation:", `visitor (chat): "hello cli"`, `agent echo (chat): "echo: hello cli"`, "-- visitor joined session=" + s.ID} {
		if !strings.Contains(show, want) {
			t.Fatalf("parley rooms show lacks %q:\n%s", want, show)
		}
	}
	var detail struct {
		Room         broker.Room              `json:"room"`
		Transcript   []broker.TranscriptEntry `json:"transcript"`
		RecentEvents []json.RawMessage        `json:"recent_events"`
	}
	if err := json.Unmarshal([]byte(runParley(t, "rooms", "show", "--json", "--nats-url", natsURL, "--data-dir", dir, s.ConversationID)), &detail); err != nil ||
		detail.Room.ConversationID != s.ConversationID || len(detail.RecentEvents) == 0 || len(detail.RecentEvents) > 20 ||
		!slices.ContainsFunc(detail.Transcript, func(e broker.TranscriptEntry) bool { return e.Turn != nil && e.Turn.Body == "echo: hello cli" }) {
		t.Fatalf("parley rooms show --json: %v %+v", err, detail)
	}
	cmd := exec.Command(parleyBinary(t), "rooms", "show", "conv_nosuchroom", "--nats-url", natsURL, "--data-dir", dir)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no live room conv_nosuchroom") {
		t.Fatalf("show of an unknown room: %v\n%s", err, out)
	}

	// --watch: a JSON object per change, the last one the room's end; a
	// new table per change when stdout is not a terminal.
	watch.line(regexp.MustCompile(`^\{"conversation_id":"` + s.ConversationID + `".*"mode":"chat"`))
	watchTable.line(regexp.MustCompile(`^` + s.ConversationID + `\s+wdg_demo\s+chat\s`))
	if r := e.Do("DELETE", "/v1/sessions/"+s.ID, nil, "Authorization", "Bearer "+s.Token); r.Status != http.StatusNoContent {
		t.Fatalf("end session: %d %s", r.Status, r.Raw)
	}
	watch.line(regexp.MustCompile(`^\{"conversation_id":"` + s.ConversationID + `".*"ended_reason":"legs_closed"`))
	watchTable.line(regexp.MustCompile(`^No live rooms\.$`))
}

// TestBrowserOps: the /ops/ page in Chromium: it asks for the admin key,
// shows a new session's room live, follows its mode, opens its detail, and
// drops the row when an operator ends it with the page's End room button.
func TestBrowserOps(t *testing.T) {
	requireChromium(t)
	e := startEnv(t, fastRooms)
	ak, _ := e.newAdminKey("", broker.ScopeOpsRead, broker.ScopeOpsWrite)
	readOnly, _ := e.newAdminKey("", broker.ScopeOpsRead)
	earlier := e.NewSession(nil) // a room that exists before the page
	e.MustDialWS(earlier)
	e.WaitRoom(ak, earlier.ConversationID, "the earlier room", func(broker.Room) bool { return true })

	b := newBrowser(t)
	b.must("open /ops/", chromedp.EmulateViewport(1280, 1000), chromedp.Navigate(e.base+"/ops/"))
	b.must("enter the admin key", chromedp.WaitVisible("#key", chromedp.ByQuery),
		chromedp.SendKeys("#key", ak, chromedp.ByQuery), chromedp.Click("#connect", chromedp.ByQuery))
	rowJS := func(cid string) string {
		return fmt.Sprintf(`document.querySelector('#rooms tbody tr[data-cid=%q]')`, cid)
	}
	cellJS := func(cid, col string) string {
		return fmt.Sprintf(`(%s?.querySelector('[data-col=%q]')?.textContent || "")`, rowJS(cid), col)
	}
	d := opsWait(b, 10*time.Second, "the live table with the earlier room", `window.parleyOps && parleyOps.state === "live" && `+rowJS(earlier.ConversationID)+` !== null`)
	t.Logf("page live with the earlier room in %v", d.Round(time.Millisecond))
	var stored string
	b.mustEval(`sessionStorage.getItem("parley.ops.key") || ""`, &stored)
	if stored != ak {
		t.Fatal("the admin key is not kept in sessionStorage")
	}

	// A new session appears as a row.
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	created := time.Now()
	opsWait(b, 10*time.Second, "the new session's row", rowJS(s.ConversationID)+` !== null && parleyOps.rooms.has(`+jsString(s.ConversationID)+`)`)
	t.Logf("session → row: %v", time.Since(created).Round(time.Millisecond))
	var cells map[string]string
	b.mustEval(fmt.Sprintf(`Object.fromEntries([...%s.querySelectorAll("[data-col]")].map((c) => [c.dataset.col, c.textContent]))`, rowJS(s.ConversationID)), &cells)
	t.Logf("row: %v", cells)
	if cells["widget"] != "wdg_demo" || cells["mode"] != "chat" || !strings.Contains(cells["legs"], "websocket") || !strings.HasPrefix(cells["agent"], "echo") {
		t.Fatalf("row cells = %v", cells)
	}

	// The mode follows the conversation.
	if r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": "voice"}, "Authorization", "Bearer "+s.Token); r.Status != 200 {
		t.Fatalf("mode voice: %d %s", r.Status, r.Raw)
	}
	opsWait(b, 10*time.Second, "the MODE cell to say voice", cellJS(s.ConversationID, "mode")+` === "voice"`)

	// The detail panel, and the End room button.
	b.must("open the detail", chromedp.Click(fmt.Sprintf(`#rooms tbody tr[data-cid=%q] button.open`, s.ConversationID), chromedp.ByQuery))
	opsWait(b, 10*time.Second, "the detail with recent events", `document.getElementById("detail").dataset.cid === `+jsString(s.ConversationID)+
		` && document.querySelectorAll("#detail-events tbody tr").length > 0 && document.getElementById("detail-legs").textContent.includes("websocket")`)
	b.screenshot("ops.png")
	b.must("dark mode", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}))
	b.screenshot("ops-dark.png")
	b.must("light mode", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}))

	// With a key that may only read, End room explains the missing scope.
	b.mustEval(`sessionStorage.setItem("parley.ops.key", `+jsString(readOnly)+`); true`, nil)
	b.must("click End room", chromedp.Click("#end-room", chromedp.ByQuery, chromedp.NodeVisible))
	b.must("confirm End room", chromedp.Click("#end-room-confirm", chromedp.ByQuery, chromedp.NodeVisible))
	opsWait(b, 5*time.Second, "the missing scope in words", `document.getElementById("detail-error").textContent.includes("needs a key with the ops:write scope")`)
	b.mustEval(`sessionStorage.setItem("parley.ops.key", `+jsString(ak)+`); true`, nil)
	b.must("click End room", chromedp.Click("#end-room", chromedp.ByQuery, chromedp.NodeVisible))
	b.must("confirm End room", chromedp.Click("#end-room-confirm", chromedp.ByQuery, chromedp.NodeVisible))
	if code, reason := ws.CloseStatus(); reason != "CONVERSATION_CLOSED" {
		t.Fatalf("WebSocket closed with %d %q, want CONVERSATION_CLOSED", code, reason)
	}
	opsWait(b, 10*time.Second, "the row to go", rowJS(s.ConversationID)+` === null && !parleyOps.rooms.has(`+jsString(s.ConversationID)+`)`)
	opsWait(b, 5*time.Second, "the detail to say the room ended", `document.getElementById("detail-status").textContent.includes("ended")`)
	opsWait(b, 5*time.Second, "the change announced", `document.getElementById("announce").textContent.includes("ended")`)
	if b.consoleHas("exception") {
		t.Fatal("exceptions in the page")
	}
}

func jsString(s string) string {
	data, _ := json.Marshal(s)
	return string(data)
}

// opsWait polls the JavaScript expression cond on the ops page until it is
// true and returns how long that took; on timeout it fails with the page's
// state.
func opsWait(b *browser, timeout time.Duration, what, cond string) time.Duration {
	b.t.Helper()
	return b.waitJSOr(timeout, what, cond, func() string {
		var state string
		if err := b.eval(`JSON.stringify({url: location.href, state: window.parleyOps && parleyOps.state,
			status: document.getElementById("status").textContent,
			keyError: document.getElementById("key-error").textContent,
			rooms: window.parleyOps && [...parleyOps.rooms.keys()],
			rows: [...document.querySelectorAll("#rooms tbody tr")].map((tr) => tr.textContent),
			detail: document.getElementById("detail").dataset.cid,
			detailStatus: document.getElementById("detail-status").textContent,
			detailError: document.getElementById("detail-error").textContent})`, &state); err != nil {
			state = err.Error()
		}
		return "\nops page: " + state
	})
}
