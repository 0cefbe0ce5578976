package agentbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

func TestHistoryPendingAndLiveEvents(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_hist"
	ts := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

	// Before the resume point: not part of the context.
	b.in(cid, agentbridge.Event{Type: agentbridge.EventSessionStarted, Mode: agentbridge.ModeChat})
	// Another conversation's events interleave in the same stream.
	b.userMessage("conv_other", "msg_x1", "elsewhere")

	resume := b.userMessage(cid, "msg_1", "hello") // answered
	b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: "msg_r1", ReplyTo: "msg_1", Text: "hi", WorkerID: "wrk_old"})
	b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "msg_r1", ReplyTo: "msg_1", Text: "hi", WorkerID: "wrk_old", TS: ts})
	b.userMessage(cid, "msg_2", "unanswered")
	b.userMessage("conv_other", "msg_x2", "elsewhere again")
	b.userMessage(cid, "msg_3", "cut off by a dead worker")
	b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "msg_r3", ReplyTo: "msg_3",
		Text: "par", Interrupted: true, Reason: agentbridge.ReasonWorkerLost, WorkerID: "wrk_old"})
	b.in(cid, agentbridge.Event{Type: agentbridge.EventModeChanged, Mode: agentbridge.ModeVoice, PreviousMode: agentbridge.ModeChat})
	b.userMessage(cid, "msg_4", "barged in")
	head := b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "msg_r4", ReplyTo: "msg_4",
		Text: "inter", Interrupted: true, Reason: "barge_in", WorkerID: "wrk_old"})
	// Stored after the dispatch's head: live, even though it is older than
	// the dispatch itself.
	b.userMessage(cid, "msg_5", "just after head")

	rec := newRecorder()
	w, c := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid, ResumeFromSeq: resume, HeadSeq: head, Epoch: 2})

	hist := c.History()
	wantHist := []evSummary{
		{agentbridge.EventUserMessage, "msg_1", resume},
		{agentbridge.EventTextDelta, "msg_r1", resume + 1},
		{agentbridge.EventTextDone, "msg_r1", resume + 2},
		{agentbridge.EventTextDone, "msg_r3", resume + 6},
		{agentbridge.EventModeChanged, "", resume + 7},
		{agentbridge.EventUserMessage, "msg_4", resume + 8},
		{agentbridge.EventTextDone, "msg_r4", head},
	}
	if got := summarize(hist); !slices.Equal(got, wantHist) {
		t.Fatalf("history\n got %+v\nwant %+v", got, wantHist)
	}
	for _, ev := range hist {
		if ev.ConversationID != cid || ev.V != agentbridge.Version || ev.TS.IsZero() {
			t.Errorf("history event with a bad envelope: %+v", ev)
		}
	}
	if !hist[2].TS.Equal(ts) || hist[2].Text != "hi" || hist[2].WorkerID != "wrk_old" {
		t.Errorf("history event fields lost: %+v", hist[2])
	}

	// Unanswered messages come first, in log order, then live events.
	for _, want := range []string{"msg_2", "msg_3", "msg_5"} {
		ev := recv(t, rec.events, "event "+want)
		if ev.Type != agentbridge.EventUserMessage || ev.MessageID != want || ev.Seq == 0 {
			t.Fatalf("got %+v, want user_message %s", ev, want)
		}
	}

	// Live: agent events are not delivered, broker events are, in order.
	b.out(cid, agentbridge.Event{Type: agentbridge.EventAgentState, State: agentbridge.StateIdle, WorkerID: "wrk_other"})
	seqs := []uint64{
		b.in(cid, agentbridge.Event{Type: agentbridge.EventUserSpeechStarted}),
		b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: "msg_z", Text: "x", WorkerID: "wrk_other"}),
		b.in(cid, agentbridge.Event{Type: agentbridge.EventInterrupt, Reason: "barge_in"}),
		b.userMessage("conv_other", "msg_x3", "not ours"),
		b.in(cid, agentbridge.Event{Type: agentbridge.EventCapture, Data: json.RawMessage(`{"email":"a@b.c"}`)}),
		b.userMessage(cid, "msg_6", "live"),
		b.sessionEnded(cid, false), // another session remains: not the end
		b.sessionEnded(cid, true),
	}
	want := []evSummary{
		{agentbridge.EventUserSpeechStarted, "", seqs[0]},
		{agentbridge.EventInterrupt, "", seqs[2]},
		{agentbridge.EventCapture, "", seqs[4]},
		{agentbridge.EventUserMessage, "msg_6", seqs[5]},
		{agentbridge.EventSessionEnded, "", seqs[6]},
		{agentbridge.EventSessionEnded, "", seqs[7]},
	}
	var got []agentbridge.Event
	for range want {
		got = append(got, recv(t, rec.events, "a live event"))
	}
	if s := summarize(got); !slices.Equal(s, want) {
		t.Fatalf("live events\n got %+v\nwant %+v", s, want)
	}
	if string(got[2].Data) != `{"email":"a@b.c"}` {
		t.Errorf("capture data %s", got[2].Data)
	}
	// session_ended with idle closes Events: the handler returns.
	if err := recv(t, rec.done, "the handler to return"); err != nil {
		t.Fatalf("handler: %v", err)
	}
	agenttest.Poll(t, waitFor, "the conversation to be released", func() bool { return len(w.Conversations()) == 0 })

	// The SDK told the visitor each delivered message reached an agent.
	var thinking []string
	for len(thinking) < 4 {
		ev := b.nextWorkerEvent(w.ID())
		if ev.Type != agentbridge.EventAgentState || ev.State != agentbridge.StateThinking {
			t.Fatalf("unexpected agent event %+v", ev)
		}
		if ev.Epoch != 2 || ev.ConversationID != cid || ev.V != agentbridge.Version || ev.TS.IsZero() {
			t.Errorf("agent_state envelope %+v", ev)
		}
		thinking = append(thinking, ev.ReplyTo)
	}
	if want := []string{"msg_2", "msg_3", "msg_5", "msg_6"}; !slices.Equal(thinking, want) {
		t.Errorf("thinking for %q, want %q", thinking, want)
	}
}

func TestResumeFromZeroWithoutHead(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_all"
	s1 := b.in(cid, agentbridge.Event{Type: agentbridge.EventSessionStarted, Mode: agentbridge.ModeChat, Language: "en"})
	s2 := b.userMessage(cid, "msg_1", "q")
	s3 := b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "r", ReplyTo: "msg_1", Text: "a"})
	b.userMessage(cid, "msg_2", "open")

	rec := newRecorder()
	// No resume point and no head: the whole log at dispatch is context.
	_, c := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid})
	want := []evSummary{
		{agentbridge.EventSessionStarted, "", s1},
		{agentbridge.EventUserMessage, "msg_1", s2},
		{agentbridge.EventTextDone, "r", s3},
	}
	if got := summarize(c.History()); !slices.Equal(got, want) {
		t.Fatalf("history\n got %+v\nwant %+v", got, want)
	}
	if ev := recv(t, rec.events, "the open message"); ev.MessageID != "msg_2" {
		t.Fatalf("first event %+v, want msg_2", ev)
	}
}

func TestReplyStreamsDeltasAndDone(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_reply"

	errs := make(chan error, 16)
	var reply *agentbridge.Reply
	rec := newRecorder()
	rec.onMessage = func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		reply = c.NewReply(ev.MessageID)
		for _, part := range []string{"Hel", "", "lo, ", "wörld"} {
			errs <- reply.Write(ctx, part)
		}
		errs <- reply.Done(ctx)
		errs <- reply.Write(ctx, "more")
		errs <- reply.Done(ctx)
		errs <- reply.Interrupt(ctx, "late")
		return nil
	}
	w := b.startWorker(agentbridge.Options{WorkerID: "wrk_r"}, rec.handle)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 9})
	b.userMessage(cid, "msg_q", "say hello")

	for i, want := range []error{nil, nil, nil, nil, nil, agentbridge.ErrReplyDone, agentbridge.ErrReplyDone, agentbridge.ErrReplyDone} {
		if err := recv(t, errs, "a reply result"); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("call %d: error %v, want %v", i, err, want)
		}
	}

	state := b.nextWorkerEvent(w.ID())
	if state.Type != agentbridge.EventAgentState || state.State != agentbridge.StateThinking || state.ReplyTo != "msg_q" {
		t.Fatalf("first agent event %+v, want agent_state thinking", state)
	}
	var deltas []agentbridge.Event
	for i := range 3 {
		a := b.nextAppend(w.ID())
		// The idempotency key of a chunk is the reply's id and its index.
		if want := reply.ID() + "/" + string(rune('0'+i)); a.MsgID != want {
			t.Errorf("delta %d sent with %s %q, want %q", i, agentbridge.HeaderMsgID, a.MsgID, want)
		}
		if a.Subject != b.subj.AppendTo(testAgent, b.id) {
			t.Errorf("delta %d sent on %s, want the dispatching broker's subject", i, a.Subject)
		}
		deltas = append(deltas, a.Sent)
	}
	doneAppend := b.nextAppend(w.ID())
	done := doneAppend.Sent
	if doneAppend.MsgID != reply.ID()+"/done" {
		t.Errorf("text_done sent with %s %q", agentbridge.HeaderMsgID, doneAppend.MsgID)
	}
	for i, ev := range deltas {
		if ev.Type != agentbridge.EventTextDelta || ev.Index != i || ev.ReplyTo != "msg_q" || ev.MessageID != reply.ID() {
			t.Errorf("delta %d: %+v", i, ev)
		}
	}
	if got := deltas[0].Text + deltas[1].Text + deltas[2].Text; got != "Hello, wörld" {
		t.Errorf("deltas %q", got)
	}
	if done.Type != agentbridge.EventTextDone || done.Text != "Hello, wörld" || done.ReplyTo != "msg_q" ||
		done.MessageID != reply.ID() || done.Interrupted {
		t.Errorf("text_done %+v", done)
	}
	if !strings.HasPrefix(reply.ID(), "msg_") {
		t.Errorf("reply id %q", reply.ID())
	}
	for _, ev := range append(deltas, state, done) {
		if ev.WorkerID != "wrk_r" || ev.Epoch != 9 || ev.ConversationID != cid || ev.V != agentbridge.Version ||
			ev.Seq != 0 || ev.TS.IsZero() {
			t.Errorf("envelope of %s: %+v", ev.Type, ev)
		}
	}
}

func TestConversationPublishHelpers(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_helpers"
	errs := make(chan error, 1)
	seqs := make(chan uint64, 1)
	rec := newRecorder()
	rec.onMessage = func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		errs <- errors.Join(
			c.SetState(ctx, agentbridge.StateSpeaking, ev.MessageID),
			func() error { _, err := c.SendTranscript(ctx, "hello there", true); return err }(),
			c.SendAction(ctx, agentbridge.ActionNavigate, map[string]string{"url": "/pricing"}),
			c.ClearAudio(ctx),
			c.SendText(ctx, ev.MessageID, "whole answer"),
			func() error {
				r := c.NewReply(ev.MessageID)
				if err := r.Write(ctx, "half"); err != nil {
					return err
				}
				return r.Interrupt(ctx, "barge_in")
			}(),
		)
		if err := c.SendAction(ctx, agentbridge.ActionEnd, func() {}); err == nil {
			return errors.New("SendAction with unmarshalable data succeeded")
		}
		seq, err := c.Publish(ctx, agentbridge.Event{Type: agentbridge.EventAction, Action: agentbridge.ActionHandoff,
			Seq: 777, WorkerID: "forged", Epoch: 1000, ConversationID: "conv_forged"})
		if err != nil {
			return err
		}
		seqs <- seq
		return nil
	}
	w := b.startWorker(agentbridge.Options{}, rec.handle)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1})
	b.userMessage(cid, "msg_1", "hi")
	if err := recv(t, errs, "the helpers"); err != nil {
		t.Fatal(err)
	}
	seq := recv(t, seqs, "the publish")

	type want struct {
		typ  string
		test func(agentbridge.Event) bool
	}
	for _, wnt := range []want{
		{agentbridge.EventAgentState, func(e agentbridge.Event) bool { return e.State == agentbridge.StateThinking }},
		{agentbridge.EventAgentState, func(e agentbridge.Event) bool {
			return e.State == agentbridge.StateSpeaking && e.ReplyTo == "msg_1"
		}},
		{agentbridge.EventTranscript, func(e agentbridge.Event) bool { return e.Text == "hello there" && e.Final }},
		{agentbridge.EventAction, func(e agentbridge.Event) bool {
			return e.Action == agentbridge.ActionNavigate && string(e.Data) == `{"url":"/pricing"}`
		}},
		{agentbridge.EventClearAudio, func(agentbridge.Event) bool { return true }},
		{agentbridge.EventTextDelta, func(e agentbridge.Event) bool { return e.Text == "whole answer" && e.Index == 0 }},
		{agentbridge.EventTextDone, func(e agentbridge.Event) bool { return e.Text == "whole answer" && !e.Interrupted }},
		{agentbridge.EventTextDelta, func(e agentbridge.Event) bool { return e.Text == "half" }},
		{agentbridge.EventTextDone, func(e agentbridge.Event) bool {
			return e.Text == "half" && e.Interrupted && e.Reason == "barge_in" && e.ReplyTo == "msg_1"
		}},
	} {
		ev := b.nextWorkerEvent(w.ID())
		if ev.Type != wnt.typ || !wnt.test(ev) {
			t.Fatalf("got %+v, want a %s", ev, wnt.typ)
		}
	}

	// Publish stamps the envelope whatever the caller put there and returns
	// the log position.
	var stored *agentbridge.Event
	for _, ev := range b.events(cid) {
		if ev.Seq == seq {
			stored = &ev
		}
	}
	if stored == nil || stored.Action != agentbridge.ActionHandoff || stored.ConversationID != cid ||
		stored.WorkerID != w.ID() || stored.Epoch != 1 {
		t.Fatalf("stored at %d: %+v", seq, stored)
	}
	if sent := b.nextWorkerEvent(w.ID()); sent.Action != agentbridge.ActionHandoff || sent.Seq != 0 ||
		sent.ConversationID != cid || sent.Epoch != 1 {
		t.Fatalf("sent %+v", sent)
	}
}

func TestAudioInAndOut(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_audio"
	outAudio := b.subscribe(b.subj.OutAudio(testAgent, cid))
	sent := make(chan error, 1)
	rec := newRecorder()
	captured := time.Unix(0, 1_700_000_000_000_000_123)
	rec.onMessage = func(_ context.Context, c *agentbridge.Conversation, _ agentbridge.Event) error {
		sent <- c.SendAudio(agentbridge.AudioFrame{Seq: 77, Timestamp: 960, CapturedAt: captured, Payload: []byte("opus!")})
		return nil
	}
	w, c := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid})

	// Agent → visitor, naming the worker that sends it.
	b.userMessage(cid, "msg_1", "speak")
	if err := recv(t, sent, "SendAudio"); err != nil {
		t.Fatalf("SendAudio: %v", err)
	}
	m := recv(t, outAudio, "an agent audio frame")
	if m.Header.Get(agentbridge.HeaderCodec) != agentbridge.CodecOpus || m.Header.Get(agentbridge.HeaderSeq) != "77" ||
		m.Header.Get(agentbridge.HeaderTimestamp) != "960" || m.Header.Get(agentbridge.HeaderWorker) != w.ID() {
		t.Errorf("headers %v", m.Header)
	}
	f, err := agentbridge.ParseAudioFrame(m)
	if err != nil {
		t.Fatal(err)
	}
	want := agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: 77, Timestamp: 960, CapturedAt: captured, Payload: []byte("opus!")}
	if !sameFrame(f, want) {
		t.Errorf("frame %+v, want %+v", f, want)
	}

	// Visitor → agent. A bad frame is dropped; good frames are delivered.
	bad := nats.NewMsg(b.subj.InAudio(testAgent, cid))
	bad.Data = []byte("no headers")
	if err := b.nc.PublishMsg(bad); err != nil {
		t.Fatal(err)
	}
	frames := map[uint64]agentbridge.AudioFrame{}
	var got agentbridge.AudioFrame
	deadline := time.Now().Add(waitFor)
	for seq := uint64(1); ; seq++ {
		fr := agentbridge.AudioFrame{Codec: "pcm_s16le/16000/1", Seq: seq, Timestamp: seq * 320,
			CapturedAt: time.Unix(0, int64(seq)), Payload: []byte{byte(seq), 1, 2}}
		frames[seq] = fr
		if err := b.nc.PublishMsg(fr.Msg(b.subj.InAudio(testAgent, cid))); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-rec.frames:
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no audio frame reached the handler")
			}
			continue
		}
		break
	}
	if !sameFrame(got, frames[got.Seq]) {
		t.Fatalf("handler got %+v, sent %+v", got, frames[got.Seq])
	}
	if c.AudioDropped() != 0 {
		t.Errorf("dropped %d frames", c.AudioDropped())
	}
}

func TestAudioDroppedWhenHandlerLags(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_lag"
	started := make(chan *agentbridge.Conversation, 1)
	// This handler never reads audio.
	h := func(ctx context.Context, c *agentbridge.Conversation) error {
		started <- c
		<-ctx.Done()
		return nil
	}
	w := b.startWorker(agentbridge.Options{}, h)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid})
	c := recv(t, started, "the handler")
	if err := b.nc.Publish(b.subj.InAudio(testAgent, cid), []byte("not a frame")); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		fr := agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: uint64(i)}
		if err := b.nc.PublishMsg(fr.Msg(b.subj.InAudio(testAgent, cid))); err != nil {
			t.Fatal(err)
		}
	}
	// The buffer holds 50 frames at most; the rest is counted, never blocks.
	agenttest.Poll(t, waitFor, "dropped frames to be counted", func() bool { return c.AudioDropped() >= 150 })
	if n := c.AudioDropped(); n != 150 {
		t.Errorf("dropped %d, want 150", n)
	}
	if n := len(c.Audio()); n != 50 {
		t.Errorf("buffered %d, want 50", n)
	}
	// The worker sums them for the agent's own metrics.
	if st := w.Stats(); st.AudioDropped != 150 || st.AudioInvalid != 1 {
		t.Errorf("worker stats %+v, want 150 dropped and 1 invalid", st)
	}
}

// TestReplySplitsLongDeltas: a delta longer than the broker's default
// limit goes as several, cut between characters, so none is refused.
func TestReplySplitsLongDeltas(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_long"
	long := strings.Repeat("wörld ", 7000) // 49,000 bytes with 2-byte runes: 3 deltas
	errs := make(chan error, 2)
	rec := newRecorder()
	rec.onMessage = func(ctx context.Context, c *agentbridge.Conversation, ev agentbridge.Event) error {
		reply := c.NewReply(ev.MessageID)
		errs <- reply.Write(ctx, long)
		errs <- reply.Done(ctx)
		return nil
	}
	w := b.startWorker(agentbridge.Options{WorkerID: "wrk_long"}, rec.handle)
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, Epoch: 1})
	b.userMessage(cid, "msg_q", "say it at length")
	for range 2 {
		if err := recv(t, errs, "a reply result"); err != nil {
			t.Fatal(err)
		}
	}
	b.nextWorkerEvent(w.ID()) // thinking
	var joined strings.Builder
	for i := 0; ; i++ {
		a := b.nextAppend(w.ID())
		if a.Sent.Type == agentbridge.EventTextDone {
			if a.Sent.Text != long {
				t.Fatalf("text_done carries %d bytes, want %d", len(a.Sent.Text), len(long))
			}
			if i != 3 {
				t.Fatalf("%d deltas, want 3 of at most %d bytes", i, agentbridge.DefaultMaxDeltaBytes)
			}
			break
		}
		if a.Sent.Index != i || len(a.Sent.Text) > agentbridge.DefaultMaxDeltaBytes || !utf8.ValidString(a.Sent.Text) {
			t.Fatalf("delta %d: index %d, %d bytes, valid UTF-8 %v", i, a.Sent.Index, len(a.Sent.Text), utf8.ValidString(a.Sent.Text))
		}
		joined.WriteString(a.Sent.Text)
	}
	if joined.String() != long {
		t.Fatal("the deltas do not add up to the text written")
	}
}
