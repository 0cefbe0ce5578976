package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// refusalObserver records the refusals the broker counts.
type refusalObserver struct {
	nopObserver
	mu      sync.Mutex
	reasons map[string]int
	audio   int
}

func (o *refusalObserver) AgentEventRefused(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reasons[reason]++
}

func (o *refusalObserver) AgentAudioRefused() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.audio++
}

func (o *refusalObserver) count(reason string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reasons[reason]
}

// startWatchedBroker is startBroker with its logs kept and its refusals
// counted.
func startWatchedBroker(t *testing.T) (*Broker, *logBuffer, *refusalObserver) {
	t.Helper()
	logs := &logBuffer{}
	b := startBrokerWith(t, logs.logger(), fastDispatch)
	obs := &refusalObserver{reasons: map[string]int{}}
	b.SetObserver(obs)
	return b, logs, obs
}

// liveEvents collects the events the broker publishes on a conversation's
// agent subject.
func liveEvents(t *testing.T, nc *nats.Conn, subject string) func() []agentbridge.Event {
	t.Helper()
	var mu sync.Mutex
	var got []agentbridge.Event
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var ev agentbridge.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Errorf("live event: %v", err)
			return
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []agentbridge.Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]agentbridge.Event(nil), got...)
	}
}

// checkChain checks that events are a conversation's whole log: each names
// the one before it.
func checkChain(t *testing.T, events []agentbridge.Event) {
	t.Helper()
	var prev uint64
	for i, ev := range events {
		if ev.Seq == 0 || ev.PrevSeq != prev {
			t.Fatalf("event %d (%s) has seq %d prev_seq %d, want prev_seq %d", i, ev.Type, ev.Seq, ev.PrevSeq, prev)
		}
		prev = ev.Seq
	}
}

// TestLogWriterChainsAppends: every append names the conversation's
// previous event, also when another writer (another broker: here a second
// log writer with its own cache) appended in between; a repeated msg id is
// stored once and the stored copy is published again; every stored event
// is published live, with seq and prev_seq, on the agent's subject.
func TestLogWriterChainsAppends(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	cid := s.ConversationID
	live := liveEvents(t, b.nc, b.subj.ConvEvent("echo", cid))
	ctx := t.Context()
	other := newLogWriter(b) // knows nothing: expects an empty log
	for i, w := range []*logWriter{b.lw, other, other, b.lw, other} {
		ev := agentbridge.Event{Type: agentbridge.EventMediaState, ConversationID: cid, State: "connected", LegID: "leg_" + string(rune('a'+i))}
		if _, err := w.append(ctx, b.subj.InEvent(cid), &ev, newID("t_"), ""); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	first := agentbridge.Event{Type: agentbridge.EventTextDone, ConversationID: cid, MessageID: "m1", Text: "hi", WorkerID: "w1", Epoch: 1}
	st1, err := b.lw.append(ctx, b.subj.OutEvent(cid), &first, cid+"/m1/done", "echo")
	if err != nil || st1.Duplicate {
		t.Fatalf("append = %+v, %v", st1, err)
	}
	again := agentbridge.Event{Type: agentbridge.EventTextDone, ConversationID: cid, MessageID: "m1", Text: "other text", WorkerID: "w1", Epoch: 1}
	st2, err := other.append(ctx, b.subj.OutEvent(cid), &again, cid+"/m1/done", "echo")
	if err != nil || !st2.Duplicate || st2.Event.Seq != st1.Event.Seq || st2.Event.Text != "hi" {
		t.Fatalf("repeated append = %+v, %v; want the first, duplicate", st2, err)
	}
	events, more, err := b.readEvents(ctx, cid, 1, agentbridge.MaxReadEvents, agentbridge.MaxReadBytes)
	if err != nil || more {
		t.Fatalf("readEvents: %v, more %v", err, more)
	}
	if len(events) != 7 { // session_started, 5 media_state, text_done
		t.Fatalf("log holds %d events, want 7: %+v", len(events), events)
	}
	checkChain(t, events)
	if last, err := b.lw.lastSeq(ctx, cid); err != nil || last != events[6].Seq {
		t.Fatalf("lastSeq = %d, %v; want %d", last, err, events[6].Seq)
	}
	// session_started was published before the test subscribed.
	agenttest.Poll(t, 5*time.Second, "every event published live", func() bool { return len(live()) >= 7 })
	got := live()
	for i, ev := range got[:6] {
		i++
		if ev.Seq != events[i].Seq || ev.PrevSeq != events[i].PrevSeq || ev.Type != events[i].Type {
			t.Fatalf("live event %d = %s seq %d prev %d, log has %s seq %d prev %d", i, ev.Type, ev.Seq, ev.PrevSeq,
				events[i].Type, events[i].Seq, events[i].PrevSeq)
		}
	}
	if dup := got[6]; dup.Seq != st1.Event.Seq || dup.Text != "hi" {
		t.Fatalf("duplicate published as %+v, want the stored copy", dup)
	}
	// Reading in pages: limit and more.
	page, more, err := b.readEvents(ctx, cid, events[2].Seq, 2, agentbridge.MaxReadBytes)
	if err != nil || !more || len(page) != 2 || page[0].Seq != events[2].Seq {
		t.Fatalf("page = %d events, more %v, %v", len(page), more, err)
	}
}

// holdConversation makes worker the holder of cid from ownerEpoch to epoch,
// as a dispatch would.
func holdConversation(t *testing.T, b *Broker, cid, worker string, ownerEpoch, epoch uint64) {
	t.Helper()
	conv, err := b.updateConversation(t.Context(), cid, func(c *Conversation) error {
		c.WorkerID, c.OwnerEpoch, c.Epoch = worker, ownerEpoch, epoch
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b.agents.holders.set(conv)
}

func appendReq(t *testing.T, nc *nats.Conn, subject string, ev map[string]any, msgID string) agentbridge.AppendReply {
	t.Helper()
	data, _ := json.Marshal(ev)
	m := nats.NewMsg(subject)
	m.Data = data
	if msgID != "" {
		m.Header.Set(agentbridge.HeaderMsgID, msgID)
	}
	resp, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatalf("append on %s: %v", subject, err)
	}
	var r agentbridge.AppendReply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		t.Fatalf("append reply %q: %v", resp.Data, err)
	}
	return r
}

func delta(cid, worker string, epoch uint64, text string) map[string]any {
	return map[string]any{"v": 2, "type": agentbridge.EventTextDelta, "conversation_id": cid, "worker_id": worker,
		"epoch": epoch, "message_id": "msg_a1", "text": text}
}

// TestAgentAppend: a worker holding a conversation appends through the
// broker (shared and sticky subjects), idempotently by Nats-Msg-Id; every
// other append is refused with its code, stored nowhere, counted, and
// logged once per worker and reason.
func TestAgentAppend(t *testing.T) {
	b, logs, obs := startWatchedBroker(t)
	s := startSession(t, b)
	cid := s.ConversationID
	holdConversation(t, b, cid, "w1", 2, 3)
	nc := connectAs(t, b, AgentRole("echo"), nats.CustomInboxPrefix(b.subj.Inbox("echo")))
	live := liveEvents(t, b.nc, b.subj.ConvEvent("echo", cid))

	r := appendReq(t, nc, b.subj.Append("echo"), delta(cid, "w1", 3, "Hel"), "msg_a1/0")
	if r.Error != nil || r.Seq == 0 || r.Duplicate {
		t.Fatalf("append = %+v", r)
	}
	again := appendReq(t, nc, b.subj.AppendTo("echo", b.ID()), delta(cid, "w1", 3, "Hel"), "msg_a1/0")
	if again.Error != nil || again.Seq != r.Seq || !again.Duplicate {
		t.Fatalf("repeated append = %+v, want duplicate of seq %d", again, r.Seq)
	}
	ev2 := delta(cid, "w1", 2, "lo")
	ev2["index"] = 1
	r2 := appendReq(t, nc, b.subj.AppendTo("echo", b.ID()), ev2, "")
	if r2.Error != nil || r2.Seq <= r.Seq {
		t.Fatalf("append at the owner epoch = %+v", r2)
	}
	// The stored events reach live subscribers after the reply: count
	// from when they are there, so only the refusals below are counted.
	agenttest.Poll(t, 10*time.Second, "the stored deltas published live", func() bool {
		evs := live()
		return len(evs) > 0 && evs[len(evs)-1].Seq == r2.Seq
	})

	big := strings.Repeat("x", agentbridge.DefaultMaxDeltaBytes+1)
	other := connectAs(t, b, AgentRole("other"), nats.CustomInboxPrefix(b.subj.Inbox("other")))
	cases := []struct {
		name string
		nc   *nats.Conn
		subj string
		ev   map[string]any
		code string
	}{
		{"another worker", nc, b.subj.Append("echo"), delta(cid, "w2", 3, "x"), agentbridge.CodeNotHolder},
		{"epoch below the owner's", nc, b.subj.Append("echo"), delta(cid, "w1", 1, "x"), agentbridge.CodeStaleEpoch},
		{"epoch above the record", nc, b.subj.Append("echo"), delta(cid, "w1", 1_000_000, "x"), agentbridge.CodeStaleEpoch},
		{"another agent", other, b.subj.Append("other"), delta(cid, "w1", 3, "x"), agentbridge.CodeUnknownConversation},
		{"unknown conversation", nc, b.subj.Append("echo"), delta("conv_nope", "w1", 3, "x"), agentbridge.CodeUnknownConversation},
		{"user_message", nc, b.subj.Append("echo"), map[string]any{"v": 2, "type": "user_message", "conversation_id": cid,
			"worker_id": "w1", "epoch": 3, "text": "forged", "message_id": "msg_f"}, agentbridge.CodeTypeNotAllowed},
		{"agent_assigned", nc, b.subj.Append("echo"), map[string]any{"v": 2, "type": "agent_assigned", "conversation_id": cid,
			"worker_id": "w1", "epoch": 1_000_000}, agentbridge.CodeTypeNotAllowed},
		{"no epoch", nc, b.subj.Append("echo"), delta(cid, "w1", 0, "x"), agentbridge.CodeEpochRequired},
		{"v1", nc, b.subj.Append("echo"), func() map[string]any { e := delta(cid, "w1", 3, "x"); e["v"] = 1; return e }(), agentbridge.CodeUnsupportedVersion},
		{"too large", nc, b.subj.Append("echo"), delta(cid, "w1", 3, big), agentbridge.CodeTooLarge},
		{"bad worker id", nc, b.subj.Append("echo"), delta(cid, "../../x y", 3, "x"), agentbridge.CodeBadEvent},
	}
	before := len(live())
	for _, c := range cases {
		for range 2 { // twice: logged once
			got := appendReq(t, c.nc, c.subj, c.ev, "")
			if got.Error == nil || got.Error.Code != c.code || got.Seq != 0 {
				t.Fatalf("%s: reply %+v, want %s", c.name, got, c.code)
			}
		}
	}
	events, _, err := b.readEvents(t.Context(), cid, 1, agentbridge.MaxReadEvents, agentbridge.MaxReadBytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 3 { // session_started and the two deltas
		t.Fatalf("log holds %d events after the refusals, want 3: %+v", len(events), events)
	}
	checkChain(t, events)
	if n := len(live()); n != before {
		t.Fatalf("%d events published live by refused appends", n-before)
	}
	if got := obs.count("not_holder"); got != 2 {
		t.Errorf("not_holder counted %d times, want 2", got)
	}
	if got := obs.count("type_not_allowed"); got != 4 {
		t.Errorf("type_not_allowed counted %d times, want 4", got)
	}
	out := logs.String()
	if n := strings.Count(out, "reason=NOT_HOLDER"); n != 1 {
		t.Errorf("NOT_HOLDER logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "reason=TYPE_NOT_ALLOWED"); n != 1 {
		t.Errorf("TYPE_NOT_ALLOWED logged %d times for one worker, want once", n)
	}
	if !strings.Contains(out, `worker_id="\"../../x y\""`) {
		t.Errorf("the invalid worker id is not logged quoted:\n%s", out)
	}
}

// TestAgentAppendWaitsForRecord: a new worker may append before the broker
// stored its acceptance; an epoch above the record's waits for it.
func TestAgentAppendWaitsForRecord(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	cid := s.ConversationID
	holdConversation(t, b, cid, "w1", 1, 1)
	nc := connectAs(t, b, AgentRole("echo"), nats.CustomInboxPrefix(b.subj.Inbox("echo")))
	done := make(chan agentbridge.AppendReply, 1)
	go func() {
		data, _ := json.Marshal(delta(cid, "w2", 2, "hi"))
		resp, err := nc.Request(b.subj.Append("echo"), data, 5*time.Second)
		var r agentbridge.AppendReply
		if err == nil {
			_ = json.Unmarshal(resp.Data, &r)
		}
		done <- r
	}()
	// The dispatch's record update comes once the append waits for it.
	agenttest.Poll(t, 5*time.Second, "the append waiting for the record", func() bool { return b.agents.recordWaits.Load() > 0 })
	if _, err := b.updateConversation(t.Context(), cid, func(c *Conversation) error {
		c.WorkerID, c.OwnerEpoch, c.Epoch = "w2", 2, 2
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.Error != nil || r.Seq == 0 {
		t.Fatalf("append = %+v, want stored once the record caught up", r)
	}
}

// TestAgentRead: any worker of the conversation's agent reads its log in
// pages; another agent cannot.
func TestAgentRead(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	cid := s.ConversationID
	for range 3 {
		if _, err := b.appendInbound(t.Context(), agentbridge.Event{Type: agentbridge.EventMediaState, ConversationID: cid, State: "connected"}, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	read := func(nc *nats.Conn, agent string, req agentbridge.ReadRequest) agentbridge.ReadReply {
		t.Helper()
		data, _ := json.Marshal(req)
		resp, err := nc.Request(b.subj.Read(agent), data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r agentbridge.ReadReply
		if err := json.Unmarshal(resp.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	nc := connectAs(t, b, AgentRole("echo"), nats.CustomInboxPrefix(b.subj.Inbox("echo")))
	all := read(nc, "echo", agentbridge.ReadRequest{V: 2, ConversationID: cid})
	if all.Error != nil || len(all.Events) != 4 || all.More {
		t.Fatalf("read all = %+v", all)
	}
	checkChain(t, all.Events)
	page := read(nc, "echo", agentbridge.ReadRequest{V: 2, ConversationID: cid, FromSeq: all.Events[1].Seq, Limit: 2})
	if page.Error != nil || len(page.Events) != 2 || !page.More || page.Events[0].Seq != all.Events[1].Seq {
		t.Fatalf("read page = %+v", page)
	}
	other := connectAs(t, b, AgentRole("other"), nats.CustomInboxPrefix(b.subj.Inbox("other")))
	if r := read(other, "other", agentbridge.ReadRequest{V: 2, ConversationID: cid}); r.Error == nil ||
		r.Error.Code != agentbridge.CodeUnknownConversation || len(r.Events) != 0 {
		t.Fatalf("another agent's read = %+v", r)
	}
	if r := read(nc, "echo", agentbridge.ReadRequest{V: 1, ConversationID: cid}); r.Error == nil || r.Error.Code != agentbridge.CodeUnsupportedVersion {
		t.Fatalf("v1 read = %+v", r)
	}
}

func TestWrongLastSeq(t *testing.T) {
	cases := []struct {
		err   error
		n     int64
		wrong bool
	}{
		{&jetstream.APIError{ErrorCode: 10071, Code: 400, Description: "wrong last sequence: 42"}, 42, true},
		{fmt.Errorf("nats: %w", &jetstream.APIError{ErrorCode: 10071, Code: 400, Description: "wrong last sequence: 0"}), 0, true},
		{&jetstream.APIError{ErrorCode: 10071, Code: 400, Description: "wrong last sequence"}, -1, true},
		{&jetstream.APIError{ErrorCode: 10164, Code: 400, Description: "wrong last sequence"}, -1, true},
		{&jetstream.APIError{ErrorCode: 10047, Code: 500, Description: "insufficient storage"}, 0, false},
		{context.DeadlineExceeded, 0, false},
	}
	for _, c := range cases {
		if n, wrong := wrongLastSeq(c.err); n != c.n || wrong != c.wrong {
			t.Errorf("wrongLastSeq(%v) = %d, %v; want %d, %v", c.err, n, wrong, c.n, c.wrong)
		}
	}
}

func TestStoreRefusal(t *testing.T) {
	for _, c := range []struct {
		err  error
		code string
	}{
		{ErrNotReady, agentbridge.CodeNotReady},
		{fmt.Errorf("%w: append text_delta: x", ErrStoreFull), agentbridge.CodeStoreFull},
		{fmt.Errorf("%w: append text_delta: x", ErrStore), agentbridge.CodeStoreUnavailable},
		{fmt.Errorf("%w: read: x", ErrStoreTimeout), agentbridge.CodeStoreUnavailable},
	} {
		if got := storeRefusal(c.err); got.Code != c.code || !got.Retryable() != (c.code == agentbridge.CodeStoreFull) {
			t.Errorf("storeRefusal(%v) = %+v, want %s", c.err, got, c.code)
		}
	}
}

// TestAppendWhileDispatchIsRecorded: a worker that took a dispatch may
// append before the broker has stored its acceptance, and on a busy store
// that takes longer than holderWait. While this broker's dispatch loop of
// the conversation runs, such an append (its epoch above the record's) is
// answered STORE_UNAVAILABLE, which the worker retries, not NOT_HOLDER,
// which would make it let go of a conversation nobody else holds (at
// 10,000 conversations, 6 first messages were never answered). Once no
// dispatch is in flight, the record decides.
func TestAppendWhileDispatchIsRecorded(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	cid := s.ConversationID
	nc := connectAs(t, b, AgentRole("echo"), nats.CustomInboxPrefix(b.subj.Inbox("echo")))

	b.dispatcher.mu.Lock()
	b.dispatcher.running[cid] = true // a dispatch of the conversation in flight here
	b.dispatcher.mu.Unlock()
	r := appendReq(t, nc, b.subj.AppendTo("echo", b.ID()), delta(cid, "w_new", 1, "Hel"), "msg_a1/0")
	if r.Error == nil || r.Error.Code != agentbridge.CodeStoreUnavailable || !r.Error.Retryable() || r.Seq != 0 {
		t.Fatalf("append while the dispatch is being recorded: %+v, want a retryable STORE_UNAVAILABLE", r.Error)
	}
	b.dispatcher.mu.Lock()
	delete(b.dispatcher.running, cid) // the loop ended, recording nothing for w_new
	b.dispatcher.mu.Unlock()
	if r := appendReq(t, nc, b.subj.AppendTo("echo", b.ID()), delta(cid, "w_new", 1, "Hel"), "msg_a1/0"); r.Error == nil ||
		r.Error.Code != agentbridge.CodeNotHolder {
		t.Fatalf("the same append once no dispatch is in flight: %+v, want NOT_HOLDER", r.Error)
	}
}
