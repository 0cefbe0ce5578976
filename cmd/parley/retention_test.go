package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// store reads a deployment's JetStream store directly, as an operator's
// `nats` CLI would: what is on disk, not what the API shows.
type store struct {
	t  testing.TB
	js jetstream.JetStream
}

func (e *env) store() store {
	e.t.Helper()
	js, err := jetstream.New(e.natsConn())
	if err != nil {
		e.t.Fatal(err)
	}
	return store{t: e.t, js: js}
}

// logCount counts the stored events of a conversation.
func (s store) logCount(cid string) uint64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, "PARLEY_CONV")
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("parley.conv."+cid+".>"))
	if err != nil {
		s.t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// events returns a conversation's stored events.
func (s store) events(cid string) []agentbridge.Event {
	s.t.Helper()
	if s.logCount(cid) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := s.js.OrderedConsumer(ctx, "PARLEY_CONV", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"parley.conv." + cid + ".*.event"}})
	if err != nil {
		s.t.Fatal(err)
	}
	var out []agentbridge.Event
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return out
		}
		var ev agentbridge.Event
		_ = json.Unmarshal(msg.Data(), &ev)
		out = append(out, ev)
		if meta, _ := msg.Metadata(); meta != nil && meta.NumPending == 0 {
			return out
		}
	}
}

// bucket is the KV bucket "parley_" + name.
func (s store) bucket(ctx context.Context, name string) jetstream.KeyValue {
	s.t.Helper()
	kv, err := s.js.KeyValue(ctx, "parley_"+name)
	if err != nil {
		s.t.Fatal(err)
	}
	return kv
}

// keys lists the keys of a bucket ("parley_" + name) matching filter.
func (s store) keys(bucket, filter string) []string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := s.bucket(ctx, bucket).ListKeysFiltered(ctx, filter)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	return out
}

// values returns the values of a bucket whose value contains needle.
func (s store) valuesContaining(bucket, needle string) []string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := s.bucket(ctx, bucket)
	var out []string
	for _, k := range s.keys(bucket, ">") {
		if e, err := kv.Get(ctx, k); err == nil && strings.Contains(string(e.Value()), needle) {
			out = append(out, k)
		}
	}
	return out
}

// upload reports whether the uploads store has an object.
func (s store) hasUpload(id string) bool {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := s.js.ObjectStore(ctx, "parley_uploads")
	if err != nil {
		s.t.Fatal(err)
	}
	_, err = obs.GetInfo(ctx, id)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		s.t.Fatal(err)
	}
	return err == nil
}

// leftovers lists what the store still holds of a conversation.
func (s store) leftovers(cid string, sessionIDs, uploadIDs []string) []string {
	var out []string
	if n := s.logCount(cid); n > 0 {
		out = append(out, "log events")
	}
	for _, b := range []string{"conversations", "rooms"} {
		if len(s.keys(b, cid)) > 0 {
			out = append(out, b+" record")
		}
	}
	for _, sid := range sessionIDs {
		if len(s.keys("sessions", sid)) > 0 {
			out = append(out, "session "+sid)
		}
	}
	if k := s.valuesContaining("resume", cid); len(k) > 0 {
		out = append(out, "resume records")
	}
	if k := s.keys("leads", "l.*."+cid+".>"); len(k) > 0 {
		out = append(out, "leads")
	}
	for _, id := range uploadIDs {
		if s.hasUpload(id) {
			out = append(out, "upload "+id)
		}
	}
	return out
}

// fill gives a conversation something of everything: a WebSocket leg, a
// chat turn answered by the echo agent, a lead and an upload.
func (e *env) fill(s session) (ws *wsClient, uploadID string) {
	e.t.Helper()
	ws = e.MustDialWS(s)
	if r := e.Post(s, "hello, my email is jane@example.com", "c1", true); r.Status != http.StatusOK {
		e.t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	r := e.Do("POST", "/v1/sessions/"+s.ID+"/captures", map[string]any{"kind": "email", "value": "jane@example.com", "source": "volunteered"},
		"Authorization", "Bearer "+s.Token)
	if r.Status != http.StatusCreated {
		e.t.Fatalf("capture: %d %s", r.Status, r.Raw)
	}
	r = e.Upload(s, "notes.txt", "text/plain", []byte("private notes\n"))
	if r.Status != http.StatusCreated {
		e.t.Fatalf("upload: %d %s", r.Status, r.Raw)
	}
	return ws, r.Str("upload_id")
}

// TestDeleteConversation: DELETE /v1/admin/conversations/{id} removes the
// log, the conversation, session, resume and room records, the leads and
// the uploads; the live WebSocket closes and the session token stops
// working; a second delete is 404; other tenants' keys and keys without
// data:delete cannot delete; other conversations are untouched.
func TestDeleteConversation(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t), fastRooms)
	st := e.store()
	ak, _ := e.newAdminKey("", broker.ScopeDataDelete)
	auth := []string{"Authorization", "Bearer " + ak}

	s := e.NewSession(nil)
	ws, upl := e.fill(s)
	other := e.NewSession(nil)
	_, otherUpl := e.fill(other)
	agenttest.Poll(t, 10*time.Second, "the room in the store", func() bool { return len(st.keys("rooms", s.ConversationID)) == 1 })
	if l := st.leftovers(s.ConversationID, []string{s.ID}, []string{upl}); len(l) != 7 {
		t.Fatalf("before: the store holds %v, want log, conversation and room records, session, resume, leads, upload", l)
	}

	// Keys that may not delete it.
	opsKey, _ := e.newAdminKey("", broker.ScopeOpsWrite, broker.ScopeOpsRead)
	signalingtest.ExpectErr(t, "ops:write key", e.Do("DELETE", "/v1/admin/conversations/"+s.ConversationID, nil, "Authorization", "Bearer "+opsKey), 403, "MISSING_SCOPE")
	tenantKey, _ := e.newAdminKey("example", broker.ScopeDataDelete)
	signalingtest.ExpectErr(t, "other tenant's key", e.Do("DELETE", "/v1/admin/conversations/"+s.ConversationID, nil, "Authorization", "Bearer "+tenantKey), 404, "CONVERSATION_NOT_FOUND")
	if n := st.logCount(s.ConversationID); n == 0 {
		t.Fatal("a refused delete removed the log")
	}

	r := e.Do("DELETE", "/v1/admin/conversations/"+s.ConversationID, nil, auth...)
	if r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Raw)
	}
	if code, reason := ws.CloseStatus(); !strings.Contains(reason, "SESSION_ENDED") {
		t.Fatalf("websocket closed with %d %q, want SESSION_ENDED", code, reason)
	}
	if l := st.leftovers(s.ConversationID, []string{s.ID}, []string{upl}); len(l) > 0 {
		t.Fatalf("after delete the store still holds %v", l)
	}
	r = e.Do("GET", "/v1/sessions/"+s.ID+"/history", nil, "Authorization", "Bearer "+s.Token)
	if r.Status == http.StatusOK {
		t.Fatalf("the session token still reads history: %s", r.Raw)
	}
	r = e.Do("POST", "/v1/sessions", map[string]any{"widget_key": configs.DemoWidgetKey, "challenge": e.Resolve(testOrigin),
		"resume_token": s.ResumeToken}, "Origin", testOrigin)
	if r.Status == http.StatusCreated && r.Str("conversation_id") == s.ConversationID {
		t.Fatalf("the resume token brought the deleted conversation back: %s", r.Raw)
	}
	signalingtest.ExpectErr(t, "delete twice", e.Do("DELETE", "/v1/admin/conversations/"+s.ConversationID, nil, auth...), 404, "CONVERSATION_NOT_FOUND")
	signalingtest.ExpectErr(t, "delete a malformed id", e.Do("DELETE", "/v1/admin/conversations/nope", nil, auth...), 404, "CONVERSATION_NOT_FOUND")

	// The other conversation is whole.
	if got := signalingtest.Transcript(e.History(other)); len(got) != 2 {
		t.Fatalf("other conversation: %v", got)
	}
	l := st.leftovers(other.ConversationID, []string{other.ID}, []string{otherUpl})
	for _, want := range []string{"log events", "conversations record", "session " + other.ID, "resume records", "leads", "upload " + otherUpl} {
		if !slices.Contains(l, want) {
			t.Fatalf("other conversation lost its %s: holds only %v", want, l)
		}
	}
}

// TestDeleteVisitor: DELETE /v1/admin/visitors/{user_id}?widget= deletes
// every conversation of an identified visitor on that widget, and only
// theirs; a second request is 404 VISITOR_NOT_FOUND.
func TestDeleteVisitor(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withExampleWidget(t))
	st := e.store()
	ak, _ := e.newAdminKey("example", broker.ScopeDataDelete)
	auth := []string{"Authorization", "Bearer " + ak}
	ident := func(uid string) map[string]any {
		return map[string]any{"user_id": uid, "user_hash": signalingtest.UserHash(signalingtest.ExampleSecret, uid)}
	}
	uid := "jane@example.com/42" // needs escaping in a path
	first := e.MustCreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, ident(uid))
	if r := e.Do("DELETE", "/v1/sessions/"+first.ID, nil, "Authorization", "Bearer "+first.Token, "Origin", signalingtest.ExampleOrigin); r.Status != http.StatusNoContent {
		t.Fatalf("end session: %d %s", r.Status, r.Raw)
	}
	// A second visit without the resume token: the identity carries on in
	// the same conversation; a guest's conversation is someone else's.
	again := e.MustCreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, ident(uid))
	someone := e.MustCreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, ident("bob"))
	guest := e.MustCreateSession(signalingtest.ExampleKey, signalingtest.ExampleOrigin, nil)
	mine := sortedUnique(first.ConversationID, again.ConversationID)

	path := "/v1/admin/visitors/" + url.PathEscape(uid)
	signalingtest.ExpectErr(t, "no widget", e.Do("DELETE", path, nil, auth...), 422, "VALIDATION_FAILED")
	signalingtest.ExpectErr(t, "another tenant's widget", e.Do("DELETE", path+"?widget=wdg_demo", nil, auth...), 404, "WIDGET_NOT_FOUND")
	r := e.Do("DELETE", path+"?widget="+signalingtest.ExampleID, nil, auth...)
	var got []string
	for _, id := range r.Body["deleted_conversations"].([]any) {
		got = append(got, id.(string))
	}
	slices.Sort(got)
	if r.Status != http.StatusOK || !slices.Equal(got, mine) {
		t.Fatalf("delete visitor: %d %s, want %v", r.Status, r.Raw, mine)
	}
	for _, cid := range mine {
		if l := st.leftovers(cid, []string{first.ID, again.ID}, nil); len(l) > 0 {
			t.Fatalf("%s: the store still holds %v", cid, l)
		}
	}
	if k := st.keys("resume", "visitor.>"); len(k) != 1 {
		t.Fatalf("visitor index entries left: %v (want bob's only)", k)
	}
	for _, s := range []session{someone, guest} {
		if st.logCount(s.ConversationID) == 0 || len(st.keys("conversations", s.ConversationID)) == 0 {
			t.Fatalf("conversation %s of another visitor was deleted", s.ConversationID)
		}
	}
	signalingtest.ExpectErr(t, "delete twice", e.Do("DELETE", path+"?widget="+signalingtest.ExampleID, nil, auth...), 404, "VISITOR_NOT_FOUND")
}

func sortedUnique(s ...string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// TestDeleteConversationEndsVoiceElsewhere: deleting a conversation on one
// broker hangs up its voice leg hosted by another.
func TestDeleteConversationEndsVoiceElsewhere(t *testing.T) {
	shared := sharedNATS(t, voiceConfig)
	a, b := startEnv(t, shared), startEnv(t, shared, noEcho)
	ak, _ := a.newAdminKey("", broker.ScopeDataDelete)
	s := a.NewSession(nil)
	v := b.NewVoiceClient(s)
	v.WaitConnected()
	agenttest.Poll(t, 10*time.Second, "the voice leg on broker b", func() bool { _, ok := b.app.broker.Voice(s.ID); return ok })
	if r := a.Do("DELETE", "/v1/admin/conversations/"+s.ConversationID, nil, "Authorization", "Bearer "+ak); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Raw)
	}
	agenttest.Poll(t, 10*time.Second, "the voice leg on broker b hung up", func() bool { _, ok := b.app.broker.Voice(s.ID); return !ok })
	if n := a.store().logCount(s.ConversationID); n != 0 {
		t.Fatalf("%d log events left (the hang-up wrote after the purge?)", n)
	}
}

// TestWidgetConversationMaxAge: the admin API takes a widget's own
// conversation_max_age, shorter or longer than the deployment's, and
// refuses one beyond retention.log_max_age (the stream would drop its
// events first) or one that is not a duration.
func TestWidgetConversationMaxAge(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ak, _ := e.newAdminKey("", broker.ScopeConfigWrite, broker.ScopeConfigRead)
	auth := []string{"Authorization", "Bearer " + ak}
	widget := func(age string) map[string]any {
		return map[string]any{"display_title": "Shop", "allowed_origins": []string{"https://shop.example.org"}, "conversation_max_age": age}
	}
	for _, age := range []string{"24h", "8760h"} { // shorter and longer than the 90-day default
		r := e.Do("POST", "/v1/admin/widgets", widget(age), auth...)
		if r.Status != http.StatusCreated || r.Str("conversation_max_age") != age {
			t.Fatalf("create with %s: %d %s", age, r.Status, r.Raw)
		}
	}
	for _, age := range []string{"10000h", "30d", "0s"} {
		r := e.Do("POST", "/v1/admin/widgets", widget(age), auth...)
		if r.Status != http.StatusUnprocessableEntity || !strings.Contains(r.Raw, "conversation_max_age") {
			t.Fatalf("create with %s: %d %s, want 422 naming conversation_max_age", age, r.Status, r.Raw)
		}
	}
}
