package agentbridge_test

import (
	"slices"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// setHold makes the broker end keep matching events off the live subject.
func (b *brokerEnd) setHold(f func(ev agentbridge.Event) bool) {
	b.mu.Lock()
	b.hold = f
	b.mu.Unlock()
}

// stored returns the stored event with seq.
func (b *brokerEnd) stored(cid string, seq uint64) agentbridge.Event {
	b.t.Helper()
	for _, ev := range b.events(cid) {
		if ev.Seq == seq {
			return ev
		}
	}
	b.t.Fatalf("no event %d in %s", seq, cid)
	return agentbridge.Event{}
}

// TestLiveGapRefilled: an event lost on its way is noticed by the next
// one's prev_seq, read from the log and delivered before it.
func TestLiveGapRefilled(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_gap"
	rec := newRecorder()
	w, _ := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid})
	b.setHold(func(ev agentbridge.Event) bool { return ev.MessageID == "msg_1" })
	s1 := b.userMessage(cid, "msg_1", "lost on the way")
	s2 := b.userMessage(cid, "msg_2", "arrives")
	var got []agentbridge.Event
	for range 2 {
		got = append(got, recv(t, rec.events, "a message"))
	}
	want := []evSummary{{agentbridge.EventUserMessage, "msg_1", s1}, {agentbridge.EventUserMessage, "msg_2", s2}}
	if s := summarize(got); !slices.Equal(s, want) {
		t.Fatalf("delivered %+v, want %+v", s, want)
	}
	if st := w.Stats(); st.Refills != 1 {
		t.Fatalf("stats %+v, want 1 refill", st)
	}
	// Delivery goes on live.
	b.setHold(nil)
	s3 := b.userMessage(cid, "msg_3", "live again")
	if ev := rec.next(t, "msg_3"); ev.Seq != s3 {
		t.Fatalf("got %+v, want seq %d", ev, s3)
	}
}

// TestLiveReorderedWithinGrace: events overtaking each other (relayed by
// two brokers) are put back in order without reading the log.
func TestLiveReorderedWithinGrace(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_reorder"
	rec := newRecorder()
	w, _ := b.run(agentbridge.Options{GapGrace: waitFor}, rec, agentbridge.DispatchRequest{ConversationID: cid})
	b.setHold(func(ev agentbridge.Event) bool { return ev.Type == agentbridge.EventUserMessage })
	s1 := b.userMessage(cid, "msg_1", "first")
	s2 := b.userMessage(cid, "msg_2", "second")
	s3 := b.userMessage(cid, "msg_3", "third")
	for _, s := range []uint64{s3, s2, s1} {
		b.publish(testAgent, b.stored(cid, s))
	}
	var got []string
	for range 3 {
		got = append(got, recv(t, rec.events, "a message").MessageID)
	}
	if !slices.Equal(got, []string{"msg_1", "msg_2", "msg_3"}) {
		t.Fatalf("delivered %q", got)
	}
	if st := w.Stats(); st.Refills != 0 {
		t.Fatalf("stats %+v: reordered events were read from the log", st)
	}
}

// TestLiveDuplicatesDropped: an event delivered twice, or live after the
// replay read it, reaches the handler once.
func TestLiveDuplicatesDropped(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_dup"
	head := b.userMessage(cid, "msg_0", "replayed")
	rec := newRecorder()
	w, _ := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid, ResumeFromSeq: 1, HeadSeq: head})
	rec.next(t, "msg_0")
	s1 := b.userMessage(cid, "msg_1", "once")
	rec.next(t, "msg_1")
	b.publish(testAgent, b.stored(cid, s1))
	b.publish(testAgent, b.stored(cid, s1))
	b.publish(testAgent, b.stored(cid, head))
	b.userMessage(cid, "msg_2", "next")
	rec.next(t, "msg_2") // after the duplicates
	if st := w.Stats(); st.Duplicates != 3 || st.Refills != 0 {
		t.Fatalf("stats %+v, want 3 duplicates and no refill", st)
	}
}

// TestLiveUnknownVersionSkipped: a live event of another protocol version
// (or not an event at all) is not delivered, is counted, and does not break
// the order of the next ones.
func TestLiveUnknownVersionSkipped(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_v3"
	rec := newRecorder()
	w, _ := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid})
	b.commit(agentbridge.Event{V: 3, Type: agentbridge.EventUserMessage, ConversationID: cid, MessageID: "msg_v3", Text: "from the future"}, "")
	if err := b.nc.Publish(b.subj.ConvEvent(testAgent, cid), []byte(`{"v":2,"type":`)); err != nil {
		t.Fatal(err)
	}
	b.userMessage(cid, "msg_2", "v2")
	if ev := rec.next(t, "msg_2"); ev.V != agentbridge.Version {
		t.Fatalf("got %+v, want version %d", ev, agentbridge.Version)
	}
	if st := w.Stats(); st.EventsSkipped != 2 || st.Refills != 0 {
		t.Fatalf("stats %+v, want 2 skipped and no refill", st)
	}
}

// TestReplayReadsPages: a log longer than one read reply is read to its end.
func TestReplayReadsPages(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	b.readLimit = 2
	const cid = "conv_pages"
	var want []evSummary
	var head uint64
	for i := range 7 {
		id := "msg_" + string(rune('a'+i))
		head = b.userMessage(cid, id, "q")
		want = append(want, evSummary{agentbridge.EventUserMessage, id, head})
		b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "r" + id, ReplyTo: id, Text: "a", WorkerID: "wrk_old", Epoch: 1})
		head++
		want = append(want, evSummary{agentbridge.EventTextDone, "r" + id, head})
	}
	rec := newRecorder()
	_, c := b.run(agentbridge.Options{}, rec, agentbridge.DispatchRequest{ConversationID: cid, HeadSeq: head})
	if got := summarize(c.History()); !slices.Equal(got, want) {
		t.Fatalf("history\n got %+v\nwant %+v", got, want)
	}
	if n := b.reads.Load(); n < 7 {
		t.Fatalf("%d reads for 14 events 2 by 2", n)
	}
}

// TestReplayRefusedReleases: a conversation the broker refuses to let the
// worker read (here: another agent's) is released without running the
// handler.
func TestReplayRefusedReleases(t *testing.T) {
	t.Parallel()
	b := newBrokerEnd(t)
	const cid = "conv_other_agent"
	rec := newRecorder()
	w := b.startWorker(agentbridge.Options{}, rec.handle)
	b.mu.Lock()
	b.convs[cid] = &convRecord{agent: "other"}
	b.mu.Unlock()
	hbs := b.subscribe(b.subj.Heartbeat(testAgent))
	if reply := b.dispatch(agentbridge.DispatchRequest{ConversationID: cid}); !reply.Accepted {
		t.Fatalf("refused: %+v", reply)
	}
	// Released: a heartbeat composed after the acceptance no longer lists it.
	agenttest.Poll(t, waitFor, "the conversation released", func() bool { return len(w.Conversations()) == 0 })
	nextHeartbeat(t, hbs, "a heartbeat", func(hb agentbridge.Heartbeat) bool { return hb.Load == 0 && len(hb.Conversations) == 0 })
	if len(rec.convs) != 0 {
		t.Fatal("the handler ran on a conversation the broker refused to read")
	}
}

// TestResumePastLogEnd: with nothing to replay from the resume point, the
// first live event follows whatever came before it, and a gap is read from
// the resume point, not from the start of the conversation.
func TestResumePastLogEnd(t *testing.T) {
	t.Parallel()
	for _, lose := range []bool{false, true} {
		b := newBrokerEnd(t)
		const cid = "conv_resume"
		b.userMessage(cid, "msg_old", "answered long ago")
		s := b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "r", ReplyTo: "msg_old", Text: "a", WorkerID: "w", Epoch: 1})
		rec := newRecorder()
		w := b.startWorker(agentbridge.Options{}, rec.handle)
		b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, ResumeFromSeq: s + 1, HeadSeq: s})
		if c := recv(t, rec.convs, "the handler"); len(c.History()) != 0 {
			t.Fatalf("history %+v", c.History())
		}
		b.setHold(func(ev agentbridge.Event) bool { return lose && ev.MessageID == "msg_1" })
		b.userMessage(cid, "msg_1", "new")
		b.userMessage(cid, "msg_2", "newer")
		for _, want := range []string{"msg_1", "msg_2"} {
			if ev := recv(t, rec.events, want); ev.MessageID != want {
				t.Fatalf("lost %v: got %+v, want %s", lose, ev, want)
			}
		}
		if st := w.Stats(); st.Refills != map[bool]uint64{false: 0, true: 1}[lose] {
			t.Fatalf("lost %v: stats %+v", lose, st)
		}
	}
}

// TestReplayReachesDispatchLastSeq: a replay whose read ends before the
// conversation's last event the dispatching broker knows (a NATS replica
// serving the read is behind) reads again until it gets there, so the
// visitor message that caused the dispatch is answered.
func TestReplayReachesDispatchLastSeq(t *testing.T) {
	b := newBrokerEnd(t)
	const cid = "conv_lagging"
	first := b.userMessage(cid, "msg_0", "answered")
	b.out(cid, agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "r0", ReplyTo: "msg_0", Text: "a", WorkerID: "w", Epoch: 1})
	b.setHold(func(ev agentbridge.Event) bool { return ev.MessageID == "msg_1" })
	last := b.userMessage(cid, "msg_1", "stored just before the dispatch")
	b.mu.Lock()
	b.readUpTo = last - 1
	b.mu.Unlock()
	rec := newRecorder()
	b.startWorker(agentbridge.Options{}, rec.handle)
	reads := b.reads.Load()
	b.dispatch(agentbridge.DispatchRequest{ConversationID: cid, ResumeFromSeq: first, HeadSeq: last, LastSeq: last})
	agenttest.Poll(t, waitFor, "a second read", func() bool { return b.reads.Load() >= reads+2 })
	b.mu.Lock()
	b.readUpTo = 0
	b.mu.Unlock()
	c := recv(t, rec.convs, "the handler")
	rec.next(t, "msg_1") // the pending message
	if n := len(c.History()); n != 2 {
		t.Fatalf("history has %d events, want 2", n)
	}
}
