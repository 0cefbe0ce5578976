package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// legEvents reads the media_state and speech events of leg from the log,
// waiting until until reports it has them all.
func legEvents(t *testing.T, b *Broker, cid, leg string, until func([]agentbridge.Event) bool) []agentbridge.Event {
	t.Helper()
	return pollLog(t, b, cid, "the leg's events in the log", func(ev agentbridge.Event) bool {
		switch ev.Type {
		case agentbridge.EventMediaState, agentbridge.EventUserSpeechStarted, agentbridge.EventUserSpeechStopped, agentbridge.EventInterrupt:
			return ev.LegID == leg
		}
		return false
	}, until)
}

// pollLog reads the events of cid's log that keep selects, again until
// until reports it has them all (what names them in a timeout).
func pollLog(t *testing.T, b *Broker, cid, what string, keep func(agentbridge.Event) bool, until func([]agentbridge.Event) bool) []agentbridge.Event {
	t.Helper()
	var got []agentbridge.Event
	agenttest.Poll(t, 10*time.Second, what, func() bool {
		evs, err := b.ReadLog(t.Context(), cid, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, ev := range evs {
			if keep(ev) {
				got = append(got, ev)
			}
		}
		return until(got)
	})
	return got
}

// TestSpeechLoggedInOrderWithMediaState interleaves transport states and
// speech on a live leg, then closes its transport and reports speech
// after that: the log holds every state and speech event in call order,
// with the speech's onset, source and level, and nothing after "closed".
func TestSpeechLoggedInOrderWithMediaState(t *testing.T) {
	b := startBroker(t)
	s, v, _ := startTestVoice(t, b)
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	type call struct{ typ, reason string }
	var want []call
	const rounds = 40
	for i := range rounds {
		r := fmt.Sprintf("r%03d", i)
		v.MediaState("connected", r)
		want = append(want, call{agentbridge.EventMediaState, r})
		v.Speech(SpeechEvent{Kind: SpeechStarted, At: t0.Add(time.Duration(i) * time.Second), Source: "audio_level", LevelDBov: -20})
		want = append(want, call{agentbridge.EventUserSpeechStarted, ""})
		v.Speech(SpeechEvent{Kind: SpeechStopped, At: t0.Add(time.Duration(i)*time.Second + 700*time.Millisecond), Source: "audio_level", LevelDBov: -18})
		want = append(want, call{agentbridge.EventUserSpeechStopped, ""})
	}
	v.TransportClosed("r999")
	want = append(want, call{agentbridge.EventMediaState, "r999"})
	// Reported after the transport closed: never logged.
	v.Speech(SpeechEvent{Kind: SpeechStarted, At: t0.Add(time.Hour), Source: "decode"})
	v.Speech(SpeechEvent{Kind: "whisper"}) // not a kind: ignored

	got := legEvents(t, b, s.ConversationID, v.ID(), func(evs []agentbridge.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].State == stateClosed
	})
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("leg not ended after its transport closed")
	}
	// Anything logged after closed would be there by now: the leg's FIFO
	// had drained (closed was its last entry) when the leg ended.
	got = legEvents(t, b, s.ConversationID, v.ID(), func([]agentbridge.Event) bool { return true })
	if len(got) != len(want) {
		t.Fatalf("%d events logged, want %d: last %+v", len(got), len(want), got[len(got)-1])
	}
	for i, ev := range got {
		if ev.Type != want[i].typ || ev.Type == agentbridge.EventMediaState && ev.Reason != want[i].reason {
			t.Fatalf("event %d: %s %q, want %s %q", i, ev.Type, ev.Reason, want[i].typ, want[i].reason)
		}
		if ev.Type == agentbridge.EventMediaState {
			continue
		}
		round := i / 3
		wantAt := t0.Add(time.Duration(round) * time.Second)
		level := -20.0
		if ev.Type == agentbridge.EventUserSpeechStopped {
			wantAt, level = wantAt.Add(700*time.Millisecond), -18
		}
		if ev.At == nil || !ev.At.Equal(wantAt) || ev.Source != "audio_level" || ev.LevelDBov != level || ev.SessionID != s.ID {
			t.Fatalf("event %d: %s at %v source %q level %v session %s, want at %v audio_level %v %s",
				i, ev.Type, ev.At, ev.Source, ev.LevelDBov, ev.SessionID, wantAt, level, s.ID)
		}
	}
}

// agentAppend appends an agent event as worker w1 (epoch 1) through the
// broker, with the SDK's idempotency key.
func agentAppend(t *testing.T, b *Broker, nc *nats.Conn, ev map[string]any, key string) agentbridge.AppendReply {
	t.Helper()
	ev["v"], ev["worker_id"], ev["epoch"] = 2, "w1", 1
	return appendReq(t, nc, b.subj.Append("echo"), ev, key)
}

// waitHistory polls the conversation's history until ok accepts it.
func waitHistory(t *testing.T, b *Broker, cid, what string, ok func([]Message) bool) []Message {
	t.Helper()
	var msgs []Message
	agenttest.Poll(t, 10*time.Second, what, func() bool {
		var err error
		msgs, err = b.History(t.Context(), cid, 0)
		if err != nil {
			t.Fatal(err)
		}
		return ok(msgs)
	})
	return msgs
}

// expectOneInterrupted fails t unless the conversation's history, read
// now, is one message, marked interrupted, whose body is body.
func expectOneInterrupted(t *testing.T, b *Broker, cid, what, body string) {
	t.Helper()
	msgs, err := b.History(t.Context(), cid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || !msgs[0].Interrupted || msgs[0].Body != body {
		t.Fatalf("%s = %+v", what, msgs)
	}
}

// TestBargeInInterruptsReply: the visitor barges in while the agent is
// streaming a reply. The log gets an interrupt naming the reply with
// heard_ms, the reply is closed as interrupted with the text it had, and
// it stays interrupted in the history though the agent goes on streaming
// it and completes it (both its own text_done, a duplicate of the broker's,
// and one under another key, as an agent outside the SDK might send).
func TestBargeInInterruptsReply(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	holdConversation(t, b, s.ConversationID, "w1", 1, 1)
	v := startVoiceOn(t, b, s, &testLeg{closed: make(chan struct{})})
	nc := connectAs(t, b, AgentRole("echo"), nats.CustomInboxPrefix(b.subj.Inbox("echo")))
	cid := s.ConversationID
	delta := func(i int, text string) {
		t.Helper()
		if r := agentAppend(t, b, nc, map[string]any{"type": agentbridge.EventTextDelta, "conversation_id": cid,
			"message_id": "msg_a1", "reply_to": "msg_u1", "index": i, "text": text}, fmt.Sprintf("msg_a1/%d", i)); r.Error != nil {
			t.Fatalf("delta %d refused: %+v", i, r.Error)
		}
	}
	delta(0, "Our opening hours ")
	delta(1, "are nine to five, ")

	at := time.Now().UTC().Truncate(time.Millisecond)
	v.Speech(SpeechEvent{Kind: SpeechBargeIn, At: at, Source: "audio_level", HeardMS: 1240})
	got := legEvents(t, b, cid, v.ID(), func(evs []agentbridge.Event) bool { return len(evs) > 0 })
	in := got[0]
	if in.Type != agentbridge.EventInterrupt || in.MessageID != "msg_a1" || in.ReplyTo != "msg_u1" ||
		in.HeardMS == nil || *in.HeardMS != 1240 || in.Reason != agentbridge.ReasonBargeIn || in.At == nil || !in.At.Equal(at) {
		t.Fatalf("interrupt = %+v (heard_ms %v)", in, in.HeardMS)
	}
	msgs := waitHistory(t, b, cid, "the reply closed as interrupted", func(m []Message) bool { return len(m) == 1 })
	if m := msgs[0]; m.ID != "msg_a1" || !m.Interrupted || m.Body != "Our opening hours are nine to five, " || m.Role != RoleAgent {
		t.Fatalf("history after the barge-in = %+v", msgs)
	}

	// The agent did not notice: it streams on and completes the reply.
	delta(2, "Monday to Friday.")
	full := "Our opening hours are nine to five, Monday to Friday."
	done := map[string]any{"type": agentbridge.EventTextDone, "conversation_id": cid, "message_id": "msg_a1",
		"reply_to": "msg_u1", "text": full}
	if r := agentAppend(t, b, nc, done, "msg_a1/done"); r.Error != nil || !r.Duplicate {
		t.Fatalf("the agent's own text_done = %+v, want a duplicate of the broker's", r)
	}
	done2 := map[string]any{"type": agentbridge.EventTextDone, "conversation_id": cid, "message_id": "msg_a1",
		"reply_to": "msg_u1", "text": full}
	r := agentAppend(t, b, nc, done2, "other-key")
	if r.Error != nil || r.Duplicate {
		t.Fatalf("text_done under another key = %+v", r)
	}
	// The history is read after that text_done was stored.
	expectOneInterrupted(t, b, cid, "history after the agent went on", "Our opening hours are nine to five, ")
}

// TestBargeInAfterTextDone: the agent finished writing its reply but its
// audio still plays when the visitor barges in: the interrupt names it and
// the history shows it interrupted, with its whole text. A barge-in with
// no reply in the log names none.
func TestBargeInAfterTextDone(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	holdConversation(t, b, s.ConversationID, "w1", 1, 1)
	v := startVoiceOn(t, b, s, &testLeg{closed: make(chan struct{})})
	cid := s.ConversationID

	v.Speech(SpeechEvent{Kind: SpeechBargeIn, HeardMS: 0})
	got := legEvents(t, b, cid, v.ID(), func(evs []agentbridge.Event) bool { return len(evs) == 1 })
	if got[0].Type != agentbridge.EventInterrupt || got[0].MessageID != "" || got[0].HeardMS == nil || *got[0].HeardMS != 0 {
		t.Fatalf("interrupt with no reply = %+v", got[0])
	}

	nc := connectAs(t, b, AgentRole("echo"), nats.CustomInboxPrefix(b.subj.Inbox("echo")))
	if r := agentAppend(t, b, nc, map[string]any{"type": agentbridge.EventTextDone, "conversation_id": cid,
		"message_id": "msg_a2", "reply_to": "msg_u2", "text": "A long spoken answer."}, "msg_a2/done"); r.Error != nil {
		t.Fatalf("text_done refused: %+v", r.Error)
	}
	v.Speech(SpeechEvent{Kind: SpeechBargeIn, HeardMS: 800})
	got = legEvents(t, b, cid, v.ID(), func(evs []agentbridge.Event) bool { return len(evs) == 2 })
	if got[1].MessageID != "msg_a2" || *got[1].HeardMS != 800 {
		t.Fatalf("interrupt after text_done = %+v", got[1])
	}
	expectOneInterrupted(t, b, cid, "history", "A long spoken answer.")
}

// TestVoiceSettings: a leg's settings come from its widget's voice
// settings, with barge-in off when the widget or the agent says off (and
// the broker's own speech interruptible unless the widget says off).
func TestVoiceSettings(t *testing.T) {
	b := startBrokerWith(t, nil, func(cfg *configs.Config) {
		fastDispatch(cfg)
		w := &cfg.Widgets[0]
		w.Voice = configs.WidgetVoice{VAD: configs.WidgetVAD{ThresholdDBov: -55, MinSpeechMS: 100}, BargeInMinMS: 500}.WithDefaults()
		quiet := *w
		quiet.Key, quiet.ID, quiet.Agent = "pk_quiet", "wdg_quiet", "quiet"
		off := *w
		off.Key, off.ID, off.Voice.BargeIn = "pk_off", "wdg_off", configs.BargeInOff
		cfg.Widgets = append(cfg.Widgets, quiet, off)
		cfg.Agents.BargeIn = map[string]string{"quiet": configs.BargeInOff}
	})
	settings := func(widget, agent string) VoiceSettings {
		t.Helper()
		res, err := b.StartSession(t.Context(), StartRequest{Widget: widget, Agent: agent, Origin: "http://localhost"})
		if err != nil {
			t.Fatal(err)
		}
		return b.NewVoice(res.Session).Settings()
	}
	want := VoiceSettings{ThresholdDBov: -55, MinSpeech: 100 * time.Millisecond, Hangover: 400 * time.Millisecond,
		BargeIn: true, BargeInMin: 500 * time.Millisecond, WidgetBargeIn: true}
	if got := settings("wdg_demo", "echo"); got != want {
		t.Fatalf("demo widget: %+v, want %+v", got, want)
	}
	// The agent's off is about its own audio: speech the broker speaks
	// for it stays interruptible (WidgetBargeIn).
	want.BargeIn = false
	if got := settings("wdg_quiet", "quiet"); got != want {
		t.Fatalf("agent barge_in off: %+v, want %+v", got, want)
	}
	want.WidgetBargeIn = false
	if got := settings("wdg_off", "echo"); got != want {
		t.Fatalf("widget barge_in off: %+v, want %+v", got, want)
	}
}

// TestTranscriptInterrupts: an interrupt marks the reply it names
// interrupted whether it comes before or after the reply's text_done, and
// a second text_done of a reply (an agent writing on after the broker
// closed it) adds nothing.
func TestTranscriptInterrupts(t *testing.T) {
	events := []agentbridge.Event{
		{Type: agentbridge.EventUserMessage, MessageID: "msg_u1", Text: "hi", Seq: 1},
		{Type: agentbridge.EventTextDone, MessageID: "msg_a1", ReplyTo: "msg_u1", Text: "all of it", Seq: 2},
		{Type: agentbridge.EventInterrupt, MessageID: "msg_a1", Reason: agentbridge.ReasonBargeIn, Seq: 3},
		{Type: agentbridge.EventUserMessage, MessageID: "msg_u2", Text: "and?", Seq: 4},
		{Type: agentbridge.EventInterrupt, MessageID: "msg_a2", Reason: agentbridge.ReasonBargeIn, Seq: 5},
		{Type: agentbridge.EventTextDone, MessageID: "msg_a2", ReplyTo: "msg_u2", Text: "so f", Interrupted: true, Seq: 6},
		{Type: agentbridge.EventTextDone, MessageID: "msg_a2", ReplyTo: "msg_u2", Text: "so far and more", Seq: 7},
		{Type: agentbridge.EventTextDone, MessageID: "msg_a3", ReplyTo: "msg_u2", Text: "fine", Seq: 8},
	}
	got := Transcript(events)
	if len(got) != 5 {
		t.Fatalf("Transcript = %+v", got)
	}
	if a1 := got[1]; a1.ID != "msg_a1" || !a1.Interrupted || a1.Body != "all of it" {
		t.Fatalf("reply interrupted after its text_done: %+v", a1)
	}
	if a2 := got[3]; a2.ID != "msg_a2" || !a2.Interrupted || a2.Body != "so f" || a2.Seq != 6 {
		t.Fatalf("reply interrupted before its text_done: %+v", a2)
	}
	if a3 := got[4]; a3.ID != "msg_a3" || a3.Interrupted {
		t.Fatalf("a reply no interrupt names: %+v", a3)
	}
}

// TestStateQueueKeepsBargeIn: a full queue drops speech started/stopped
// like any intermediate state, but never a barge-in.
func TestStateQueueKeepsBargeIn(t *testing.T) {
	q := stateQueue{max: 3}
	q.push(queuedState{speech: &SpeechEvent{Kind: SpeechBargeIn}})
	for range 5 {
		q.push(queuedState{speech: &SpeechEvent{Kind: SpeechStarted}})
		q.push(queuedState{speech: &SpeechEvent{Kind: SpeechStopped}})
	}
	first, ok := q.pop()
	if !ok || first.speech.Kind != SpeechBargeIn || len(q.items) != 2 {
		t.Fatalf("barge-in dropped from a full queue: first %+v, %d left", first, len(q.items))
	}
	if q.items[1].speech.Kind != SpeechStopped {
		t.Fatalf("the newest state was not kept: %+v", q.items[1].speech)
	}
}

// TestSpeakingReply: which reply a barge-in names.
func TestSpeakingReply(t *testing.T) {
	leg := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	before, after := leg.Add(-time.Minute), leg.Add(time.Second)
	delta := func(id, text string, ts time.Time) agentbridge.Event {
		return agentbridge.Event{Type: agentbridge.EventTextDelta, MessageID: id, ReplyTo: "msg_u", Text: text, TS: ts, WorkerID: "w1", Epoch: 1}
	}
	done := func(id string, ts time.Time) agentbridge.Event {
		return agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: id, ReplyTo: "msg_u", Text: "whole", TS: ts, WorkerID: "w1", Epoch: 1}
	}
	tests := []struct {
		name   string
		events []agentbridge.Event
		id     string
		done   bool
		text   string
	}{
		{"streaming", []agentbridge.Event{delta("msg_a", "one ", after), delta("msg_a", "two", after)}, "msg_a", false, "one two"},
		{"complete", []agentbridge.Event{delta("msg_a", "one", after), done("msg_a", after)}, "msg_a", true, "one"},
		{"the latest of two", []agentbridge.Event{done("msg_a", after), delta("msg_b", "b", after)}, "msg_b", false, "b"},
		{"a chat reply before the call", []agentbridge.Event{delta("msg_a", "x", before), done("msg_a", before)}, "", false, ""},
		{"streamed on into the call", []agentbridge.Event{delta("msg_a", "x", before), delta("msg_a", "y", after)}, "msg_a", false, "xy"},
		{"a visitor message after it", []agentbridge.Event{done("msg_a", after),
			{Type: agentbridge.EventUserMessage, MessageID: "msg_u2", TS: after}}, "", false, ""},
		{"a final transcript after it", []agentbridge.Event{delta("msg_a", "x", after),
			{Type: agentbridge.EventTranscript, Text: "hm", Final: true, TS: after, WorkerID: "w1", Epoch: 1}}, "", false, ""},
		{"a partial transcript after it", []agentbridge.Event{delta("msg_a", "x", after),
			{Type: agentbridge.EventTranscript, Text: "hm", TS: after, WorkerID: "w1", Epoch: 1}}, "msg_a", false, "x"},
		{"a lost worker's late reply", []agentbridge.Event{delta("msg_a", "a", after),
			{Type: agentbridge.EventAgentAssigned, WorkerID: "w2", Epoch: 2, TS: after}, delta("msg_z", "z", after)}, "msg_a", false, "a"},
		{"nothing", nil, "", false, ""},
	}
	for _, tt := range tests {
		r := speakingReply(tt.events, leg)
		if r.id != tt.id || r.done != tt.done || r.text != tt.text {
			t.Errorf("%s: %+v, want id %q done %v text %q", tt.name, r, tt.id, tt.done, tt.text)
		}
	}
}

// TestBargeInAnswersAwaitReply: a visitor message posted while waiting for
// its reply (POST …/messages with wait) gets the reply the visitor then
// cut off by speaking over it, marked interrupted, rather than waiting
// for one that never comes.
func TestBargeInAnswersAwaitReply(t *testing.T) {
	// A worker that answers the dispatch (by hand, on real NATS): no
	// "agent unavailable" notice can reach the wait below, as it could
	// with a worker only faked in the registry.
	b, hw := startHandBroker(t, 20*time.Second, time.Minute)
	s := startEngagedSession(hw.ctx, t, b).Session
	cid := s.ConversationID
	m, req := hw.next("for the session")
	hw.accept(m)
	agenttest.Poll(t, 10*time.Second, "the record to name the worker", func() bool {
		c, err := b.Conversation(hw.ctx, cid)
		return err == nil && c.WorkerID == handWorkerID
	})
	v := startVoiceOn(t, b, s, &testLeg{closed: make(chan struct{})})
	sub, err := b.Subscribe(t.Context(), cid)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	p, err := b.PostMessage(t.Context(), s, "when are you open?", "", agentbridge.ModeChat)
	if err != nil {
		t.Fatal(err)
	}
	if r := appendReq(t, hw.nc, b.subj.Append("echo"), map[string]any{"v": 2, "type": agentbridge.EventTextDelta,
		"conversation_id": cid, "worker_id": handWorkerID, "epoch": req.Epoch,
		"message_id": "msg_a1", "reply_to": p.MessageID, "text": "We open at "}, "msg_a1/0"); r.Error != nil {
		t.Fatalf("delta refused: %+v", r.Error)
	}
	v.Speech(SpeechEvent{Kind: SpeechBargeIn, HeardMS: 300})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := b.AwaitReply(ctx, sub, p)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "msg_a1" || !got.Interrupted || got.Body != "We open at " {
		t.Fatalf("reply = %+v", got)
	}
}

// TestVoiceTurns: Heard logs what the speech pipeline heard as a
// user_message via voice, once however often it is retried; a turn it
// could not transcribe is logged without text, marked with why; a turn
// with neither is refused; the transcript shows both, and a reply the
// broker spoke and the visitor cut shows the words heard.
func TestVoiceTurns(t *testing.T) {
	b := startBroker(t)
	s, v, _ := startTestVoice(t, b)
	ctx := t.Context()
	start := time.Now()
	id, err := v.Heard(ctx, VoiceTurn{Text: " what are your opening hours ", Engine: "pocketsphinx", Start: start})
	if err != nil {
		t.Fatal(err)
	}
	again, err := v.Heard(ctx, VoiceTurn{Text: "what are your opening hours", Engine: "pocketsphinx", Start: start})
	if err != nil || again != id {
		t.Fatalf("a retried turn: %q, %v; want %q", again, err, id)
	}
	if _, err := v.Heard(ctx, VoiceTurn{Start: start.Add(time.Second)}); !errors.Is(err, ErrValidation) {
		t.Fatalf("a turn with no text and no reason: %v", err)
	}
	unheard, err := v.Heard(ctx, VoiceTurn{Unheard: UnheardDown, Start: start.Add(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	events, err := b.ReadLog(ctx, s.ConversationID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var turns []agentbridge.Event
	for _, ev := range events {
		if ev.Type == agentbridge.EventUserMessage {
			turns = append(turns, ev)
		}
	}
	if len(turns) != 2 || turns[0].MessageID != id || turns[0].Text != "what are your opening hours" ||
		turns[0].Via != agentbridge.ModeVoice || turns[0].Engine != "pocketsphinx" || turns[0].LegID != v.ID() ||
		turns[0].At == nil || !turns[0].At.Equal(start.UTC()) {
		t.Fatalf("voice turns %+v", turns)
	}
	if turns[1].MessageID != unheard || turns[1].Text != "" || turns[1].Reason != UnheardDown {
		t.Fatalf("unheard turn %+v", turns[1])
	}
	heard := "Our store opens at nine."
	msgs := Transcript(append(events,
		agentbridge.Event{Type: agentbridge.EventTextDone, MessageID: "msg_r1", ReplyTo: id, Text: heard + " It closes at six.", Seq: 100},
		agentbridge.Event{Type: agentbridge.EventInterrupt, MessageID: "msg_r1", Reason: agentbridge.ReasonBargeIn, HeardText: &heard, Seq: 101}))
	var got []Message
	for _, m := range msgs {
		if m.Role == RoleVisitor || m.ID == "msg_r1" {
			got = append(got, m)
		}
	}
	if len(got) != 3 || got[0].Body != "what are your opening hours" || got[0].Via != "voice" ||
		got[1].Body != "" || got[1].Unheard != UnheardDown ||
		got[2].Body != heard || got[2].Written != heard+" It closes at six." || !got[2].Interrupted {
		t.Fatalf("transcript %+v", got)
	}
}
