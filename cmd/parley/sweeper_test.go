package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// endedEvents returns the session_ended events of a conversation by
// session id.
func (s store) endedEvents(cid string) map[string][]agentbridge.Event {
	out := map[string][]agentbridge.Event{}
	for _, ev := range s.events(cid) {
		if ev.Type == agentbridge.EventSessionEnded {
			out[ev.SessionID] = append(out[ev.SessionID], ev)
		}
	}
	return out
}

// activeSessions returns active_sessions of every conversation, as the
// admin API lists them.
func (e *env) activeSessions(ak string) map[string]float64 {
	e.t.Helper()
	r := e.Do("GET", "/v1/admin/conversations?limit=1000", nil, "Authorization", "Bearer "+ak)
	if r.Status != http.StatusOK {
		e.t.Fatalf("conversations: %d %s", r.Status, r.Raw)
	}
	out := map[string]float64{}
	for _, c := range r.Body["conversations"].([]any) {
		m := c.(map[string]any)
		out[m["id"].(string)], _ = m["active_sessions"].(float64)
	}
	return out
}

// TestIdleSessionsSwept: with two brokers on one NATS, sessions whose
// visitors left end after sessions.idle_timeout ("idle"), a session with a
// WebSocket open on the other broker stays until its TTL ("expired", and
// the socket closes); session_ended is written exactly once per session,
// the conversations count no active session, the agent releases them, and
// the session records leave the store ttl + record_grace later.
func TestIdleSessionsSwept(t *testing.T) {
	shared := sharedNATS(t, noEcho, fastRooms, func(c *configs.Config) {
		c.Sessions.IdleTimeout = time.Second
		c.Sessions.SweepInterval = 100 * time.Millisecond
		c.Sessions.TTL = 5 * time.Second
		c.Sessions.RecordGrace = time.Second
	})
	a, b := startEnv(t, shared), startEnv(t, shared)
	worker := a.startWorker()
	st := a.store()
	ak, _ := a.newAdminKey("", broker.ScopeOpsRead)

	const left = 5
	var gone []session
	for i := range left {
		s := a.NewSession(nil)
		ws := a.MustDialWS(s)
		// Over the WebSocket: an HTTP request counts as presence for a
		// minute.
		ws.Send(map[string]any{"type": "message", "body": "hello", "client_message_id": fmt.Sprint("c", i)})
		ws.Until("done")
		ws.Conn.CloseNow()
		gone = append(gone, s)
	}
	stay := a.NewSession(nil)
	stayWS := b.MustDialWS(stay) // its leg lives on the other broker
	stayWS.Send(map[string]any{"type": "message", "body": "still here", "client_message_id": "s1"})
	stayWS.Until("done")
	start := time.Now()

	agenttest.Poll(t, 15*time.Second, "session_ended for every session whose visitor left", func() bool {
		for _, s := range gone {
			if len(st.endedEvents(s.ConversationID)[s.ID]) == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("idle sessions ended %v after the visitors left (idle_timeout 1s, sweep 100ms)", time.Since(start).Round(10*time.Millisecond))
	if n := len(st.endedEvents(stay.ConversationID)[stay.ID]); n != 0 && time.Since(start) < 3*time.Second {
		t.Fatalf("the session with a WebSocket open on the other broker was ended %d times", n)
	}
	if code, reason := stayWS.CloseStatus(); !strings.Contains(reason, "SESSION_ENDED") {
		t.Fatalf("the open WebSocket closed with %d %q, want SESSION_ENDED at its TTL", code, reason)
	}
	agenttest.Poll(t, 10*time.Second, "no conversation counts an active session, the agent holds none", func() bool {
		for _, n := range a.activeSessions(ak) {
			if n != 0 {
				return false
			}
		}
		return len(worker.Conversations()) == 0
	})
	// Both brokers swept all along: still exactly one session_ended each.
	for _, s := range append(gone, stay) {
		evs := st.endedEvents(s.ConversationID)[s.ID]
		want := broker.EndReasonIdle
		if s.ID == stay.ID {
			want = broker.EndReasonExpired
		}
		if len(evs) != 1 || evs[0].Reason != want || !evs[0].Idle {
			t.Fatalf("session %s: session_ended events %+v, want one, reason %s, idle", s.ID, evs, want)
		}
	}
	r := a.Do("GET", "/v1/sessions/"+gone[0].ID+"/history", nil, "Authorization", "Bearer "+gone[0].Token)
	signalingtest.ExpectErr(t, "an idle-ended session's token", r, 410, "SESSION_ENDED")

	agenttest.Poll(t, 20*time.Second, "session records gone after ttl + record_grace", func() bool {
		return len(st.keys("sessions", ">")) == 0
	})
	t.Logf("session records gone %v after start (ttl 5s + grace 1s)", time.Since(start).Round(10*time.Millisecond))
	for _, e := range []*env{a, b} {
		if logs := e.logs.String(); strings.Contains(logs, "sweep failed") {
			t.Fatalf("a sweep failed: %s", tail(logs, 2000))
		}
	}
	if n := len(st.keys("conversations", ">")); n != left+1 {
		t.Fatalf("conversation records: %d, want %d (they follow retention, not the session TTL)", n, left+1)
	}
}

// TestRetentionSweep: a widget whose conversation_max_age is shorter than
// the deployment's loses its conversations once their last activity is that
// old, whole (log, records, leads, uploads), deleted once although two
// brokers sweep; a conversation of that widget with a live session stays,
// and so does one of a widget keeping the default.
func TestRetentionSweep(t *testing.T) {
	short := configs.WidgetConfig{Key: "pk_short", AllowDevOrigins: true, ConversationMaxAge: "2s"}
	shared := sharedNATS(t, fastRooms, func(c *configs.Config) {
		c.Retention.SweepInterval = 100 * time.Millisecond
		c.Retention.ConversationMaxAge = time.Hour
	})
	a, b := startEnv(t, shared, withWidget(short)), startEnv(t, shared, withWidget(short))
	st := a.store()

	old := a.MustCreateSession("pk_short", testOrigin, nil)
	_, upl := a.fill(old)
	if r := a.Do("DELETE", "/v1/sessions/"+old.ID, nil, "Authorization", "Bearer "+old.Token); r.Status != http.StatusNoContent {
		t.Fatalf("end session: %d %s", r.Status, r.Raw)
	}
	live := a.MustCreateSession("pk_short", testOrigin, nil)
	liveWS := b.MustDialWS(live)
	kept := a.NewSession(nil) // demo widget: the 1h default
	a.fill(kept)
	start := time.Now()

	if !poll(20*time.Second, func() bool {
		return len(st.leftovers(old.ConversationID, []string{old.ID}, []string{upl})) == 0
	}) {
		t.Fatalf("the expired conversation not deleted whole in 20s: %q left\nbroker a: %s\nbroker b: %s",
			st.leftovers(old.ConversationID, []string{old.ID}, []string{upl}), tail(a.logs.String(), 3000), tail(b.logs.String(), 3000))
	}
	t.Logf("deleted %v after its last activity (max age 2s, sweep 100ms)", time.Since(start).Round(10*time.Millisecond))
	// The deletion is logged once the purge returns, a moment after the
	// last record is gone.
	deletions := func() int {
		return strings.Count(a.logs.String()+b.logs.String(), `"msg":"conversation expired and deleted"`)
	}
	agenttest.Poll(t, 10*time.Second, "the deletion logged", func() bool { return deletions() > 0 })
	if deletions := deletions(); deletions != 1 {
		t.Fatalf("%d brokers logged the deletion, want 1", deletions)
	}
	for _, s := range []session{live, kept} {
		if st.logCount(s.ConversationID) == 0 || len(st.keys("conversations", s.ConversationID)) == 0 {
			t.Fatalf("conversation %s was deleted", s.ConversationID)
		}
	}
	// The live conversation is still usable.
	liveWS.Send(map[string]any{"type": "message", "body": "still here", "client_message_id": "l1"})
	if f, _ := liveWS.Until("done"); f.Str("body") == "" {
		t.Fatalf("no reply in the live conversation: %v", f)
	}
}
