package signaling_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// storyWords is the reply streamed one word per text_delta.
var storyWords = strings.Fields("Once upon a time a visitor asked an agent for a story and the agent streamed it word by word.")

// transcriptAgent is the first agent of TestAdminConversationTranscript:
// it streams a story word by word, and when the conversation goes to
// voice it hears the visitor (a final transcript) and speaks a reply until
// the visitor cuts in, then asks for a handoff.
func transcriptAgent(ctx context.Context, c *agentbridge.Conversation) error {
	return signalingtest.EachEvent(ctx, c, func(ev agentbridge.Event) error {
		switch {
		case ev.Type == agentbridge.EventUserMessage && ev.Text == "tell me a story":
			r := c.NewReply(ev.MessageID)
			for _, w := range storyWords {
				if err := r.Write(ctx, w+" "); err != nil {
					return err
				}
			}
			return r.Done(ctx)
		case ev.Type == agentbridge.EventModeChanged && ev.Mode == agentbridge.ModeVoice:
			id, err := c.SendTranscript(ctx, "when are you open", true)
			if err != nil {
				return err
			}
			r, cut, err := signalingtest.SpeakUntilCut(ctx, c, id, "Our opening hours are ")
			if err != nil || !cut {
				return err
			}
			if err := r.Done(ctx); err != nil {
				return err
			}
			return c.SendAction(ctx, agentbridge.ActionHandoff, map[string]any{"queue": "sales"})
		}
		return nil
	})
}

// TestAdminConversationTranscript: GET /v1/admin/conversations/{id} and
// the ops room detail return the conversation as a person reads it: a
// reply streamed in many text_deltas is one turn, the call starts and
// ends, the visitor's voice turn, a spoken reply cut by a barge-in with
// the words heard, the agent's handoff request and a hand-over to
// another worker; the raw events stay in the room detail. The endpoint
// takes ops:read and a tenant key sees only its tenant's conversations.
func TestAdminConversationTranscript(t *testing.T) {
	e := startEnv(t, noEcho, voiceConfig, fastRooms, withExampleWidget(t), func(c *configs.Config) { c.Agents.BargeIn = map[string]string{} })
	nc := e.agentConn("echo")
	first := signalingtest.StartWorker(t, nc, "echo", transcriptAgent)

	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	ws.Send(map[string]any{"type": "message", "body": "tell me a story", "client_message_id": "t-1"})
	ws.Until("done")
	// A call: the agent hears the visitor and speaks; the visitor cuts in.
	call := e.NewVoiceClient(s)
	call.WaitConnected()
	spoken, _ := ws.Until("chunk")
	v, ok := e.b.Voice(s.ID)
	if !ok {
		t.Fatal("no voice leg")
	}
	heard := "Our opening"
	v.Speech(broker.SpeechEvent{Kind: broker.SpeechBargeIn, At: time.Now(), Source: "audio_level", HeardMS: 640, HeardText: &heard})
	agenttest.Poll(t, 10*time.Second, "the handoff request in the log", func() bool {
		return slices.ContainsFunc(e.readLog(s.ConversationID), func(ev agentbridge.Event) bool { return ev.Action == agentbridge.ActionHandoff })
	})
	call.HangUp(s.Token)
	// Another worker takes over: the first drains, the next message goes
	// to the second.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	signalingtest.StartWorker(t, nc, "echo", agenttest.Echo)
	ws.Send(map[string]any{"type": "message", "body": "anyone there?", "client_message_id": "t-2"})
	for {
		if f := ws.Next(); f.Str("type") == "done" && f.Str("body") == "echo: anyone there?" {
			break
		}
	}

	ak, _ := e.newAdminKey("", broker.ScopeOpsRead)
	auth := []string{"Authorization", "Bearer " + ak}
	r := e.Do("GET", "/v1/admin/conversations/"+s.ConversationID, nil, auth...)
	var detail struct {
		broker.Conversation
		Transcript []broker.TranscriptEntry `json:"transcript"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &detail); r.Status != http.StatusOK || err != nil {
		t.Fatalf("GET conversation: %d %v %s", r.Status, err, r.Raw)
	}
	if detail.ID != s.ConversationID || detail.Widget != "wdg_demo" || detail.Agent != "echo" || detail.CreatedAt.IsZero() {
		t.Fatalf("conversation fields: %+v", detail.Conversation)
	}
	var lines []string
	deltas := 0
	var firstWorker string
	for _, en := range detail.Transcript {
		line := en.Kind
		switch {
		case en.Turn != nil:
			line += fmt.Sprintf(" %s/%s %q", en.Turn.Role, en.Turn.Via, en.Turn.Body)
			if en.Turn.Interrupted {
				line += fmt.Sprintf(" cut, written %q", en.Turn.Written)
			}
			if en.Turn.Role == broker.RoleAgent {
				line += " by " + en.Agent
				if en.WorkerID == "" {
					t.Errorf("agent turn without its worker: %+v", en)
				}
				if firstWorker == "" {
					firstWorker = en.WorkerID
				}
			}
			if en.Turn.ID == "" || en.At.IsZero() || en.Seq == 0 {
				t.Errorf("turn without id, time or seq: %+v", en)
			}
			if strings.HasPrefix(en.Turn.Body, "Once upon") {
				deltas = len(en.Events) - 1
			}
		case en.Kind == broker.EntryInterrupt:
			line += fmt.Sprintf(" %s heard %q", en.Reason, *en.HeardText)
			if en.MessageID != spoken.Str("message_id") || en.HeardMS == nil || *en.HeardMS != 640 {
				t.Errorf("interrupt entry %+v, want the spoken reply %s with 640 ms heard", en, spoken.Str("message_id"))
			}
		case en.Kind == broker.EntryCallStarted || en.Kind == broker.EntryCallEnded:
			line += " " + en.Reason
		case en.Kind == broker.EntryHandOver:
			if en.WorkerID == "" || en.WorkerID == firstWorker || en.PreviousWorkerID != firstWorker {
				t.Errorf("hand-over from %q to %q, the first worker was %q", en.PreviousWorkerID, en.WorkerID, firstWorker)
			}
		case en.Kind == broker.EntryHandoff:
			line += " " + string(en.Data)
		case en.Kind == broker.EntryVisitorJoined, en.Kind == broker.EntryVisitorLeft, en.Kind == broker.EntryAction:
			continue // a page's own business; not asserted here
		}
		if len(en.Events) == 0 {
			t.Errorf("entry without its events: %+v", en)
		}
		lines = append(lines, line)
	}
	story := strings.Join(storyWords, " ") + " "
	want := []string{
		`turn visitor/chat "tell me a story"`,
		fmt.Sprintf(`turn agent/chat %q by echo`, story),
		`call_started voice_leg`,
		`turn visitor/voice "when are you open"`,
		`interrupt barge_in heard "Our opening"`,
		`turn agent/voice "Our opening" cut, written "Our opening hours are " by echo`,
		`handoff {"queue":"sales"}`,
		`call_ended visitor_hangup`,
		`turn visitor/chat "anyone there?"`, // it goes to the next worker
		`hand_over`,
		`turn agent/chat "echo: anyone there?" by echo`,
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("transcript:\n  %s\nwant:\n  %s\nraw: %s", strings.Join(lines, "\n  "), strings.Join(want, "\n  "), r.Raw)
	}
	if deltas != len(storyWords) {
		t.Fatalf("the streamed reply folds %d text_delta events, want %d", deltas, len(storyWords))
	}
	if strings.Contains(r.Raw, `"text_delta"`) {
		t.Fatal("the transcript holds raw text_delta events")
	}
	t.Logf("transcript of %d lines from %d events", len(detail.Transcript), len(e.readLog(s.ConversationID)))

	// The ops room detail: the same transcript, and the raw events.
	e.WaitRoom(ak, s.ConversationID, "the room stored", func(broker.Room) bool { return true })
	r = e.Do("GET", "/v1/ops/rooms/"+s.ConversationID, nil, auth...)
	var room struct {
		Transcript   []broker.TranscriptEntry `json:"transcript"`
		RecentEvents []agentbridge.Event      `json:"recent_events"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &room); r.Status != http.StatusOK || err != nil {
		t.Fatalf("room detail: %d %v %s", r.Status, err, r.Raw)
	}
	if len(room.Transcript) != len(detail.Transcript) || len(room.RecentEvents) == 0 || len(room.RecentEvents) > e.cfg.Ops.RecentEvents {
		t.Fatalf("room detail: %d transcript entries (want %d), %d recent events", len(room.Transcript), len(detail.Transcript), len(room.RecentEvents))
	}

	// Scopes and tenants, as the other admin reads.
	cfgOnly, _ := e.newAdminKey("", broker.ScopeConfigRead)
	signalingtest.ExpectErr(t, "without ops:read", e.Do("GET", "/v1/admin/conversations/"+s.ConversationID, nil,
		"Authorization", "Bearer "+cfgOnly), http.StatusForbidden, "MISSING_SCOPE")
	other, _ := e.newAdminKey("example", broker.ScopeOpsRead)
	signalingtest.ExpectErr(t, "another tenant's conversation", e.Do("GET", "/v1/admin/conversations/"+s.ConversationID, nil,
		"Authorization", "Bearer "+other), http.StatusNotFound, "CONVERSATION_NOT_FOUND")
	signalingtest.ExpectErr(t, "an unknown conversation", e.Do("GET", "/v1/admin/conversations/conv_nosuchthing", nil, auth...),
		http.StatusNotFound, "CONVERSATION_NOT_FOUND")
}
