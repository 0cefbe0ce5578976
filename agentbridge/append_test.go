package agentbridge_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
)

// validAppends are well-formed append bodies, one per agent event type.
var validAppends = []string{
	`{"v":2,"type":"text_delta","conversation_id":"conv_1","worker_id":"wrk_1","epoch":1,"message_id":"msg_r","reply_to":"msg_q","index":0,"text":"Hel"}`,
	`{"v":2,"type":"text_done","conversation_id":"conv_1","worker_id":"wrk_1","epoch":3,"message_id":"msg_r","reply_to":"msg_q","text":"Hello","interrupted":true,"reason":"barge_in"}`,
	`{"v":2,"type":"transcript","conversation_id":"conv_1","worker_id":"wrk_1","epoch":1,"message_id":"msg_t","text":"hi","final":true,"via":"voice"}`,
	`{"v":2,"type":"agent_state","conversation_id":"conv_1","worker_id":"wrk_1","epoch":1,"state":"thinking","reply_to":"msg_q"}`,
	`{"v":2,"type":"action","conversation_id":"conv_1","worker_id":"wrk_1","epoch":1,"action":"navigate","data":{"url":"/pricing"}}`,
	`{"v":2,"type":"clear_audio","conversation_id":"conv_1","worker_id":"wrk_1","epoch":1}`,
}

func TestDecodeAgentEventCodes(t *testing.T) {
	t.Parallel()
	for _, body := range validAppends {
		if _, err := agentbridge.DecodeAgentEvent([]byte(body), agentbridge.Limits{}); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
	big := strings.Repeat("x", agentbridge.DefaultMaxDeltaBytes+1)
	tests := []struct {
		name, body, code string
	}{
		{"not json", `nope`, agentbridge.CodeBadEvent},
		{"trailing data", validAppends[5] + `{}`, agentbridge.CodeBadEvent},
		{"v1", `{"v":1,"type":"clear_audio","conversation_id":"conv_1","worker_id":"w","epoch":1}`, agentbridge.CodeUnsupportedVersion},
		{"no v", `{"type":"clear_audio","conversation_id":"conv_1","worker_id":"w","epoch":1}`, agentbridge.CodeUnsupportedVersion},
		{"user_message", `{"v":2,"type":"user_message","conversation_id":"conv_1","worker_id":"w","epoch":1}`, agentbridge.CodeTypeNotAllowed},
		{"agent_assigned", `{"v":2,"type":"agent_assigned","conversation_id":"conv_1","worker_id":"w","epoch":9}`, agentbridge.CodeTypeNotAllowed},
		{"bad worker id", `{"v":2,"type":"clear_audio","conversation_id":"conv_1","worker_id":"../../x y","epoch":1}`, agentbridge.CodeBadEvent},
		{"bad conversation", `{"v":2,"type":"clear_audio","conversation_id":"c.1","worker_id":"w","epoch":1}`, agentbridge.CodeBadEvent},
		{"no epoch", `{"v":2,"type":"clear_audio","conversation_id":"conv_1","worker_id":"w"}`, agentbridge.CodeEpochRequired},
		{"large delta", `{"v":2,"type":"text_delta","conversation_id":"conv_1","worker_id":"w","epoch":1,"message_id":"m","text":"` + big + `"}`, agentbridge.CodeTooLarge},
		{"unknown state", `{"v":2,"type":"agent_state","conversation_id":"conv_1","worker_id":"w","epoch":1,"state":"dancing"}`, agentbridge.CodeBadEvent},
		{"unknown action", `{"v":2,"type":"action","conversation_id":"conv_1","worker_id":"w","epoch":1,"action":"fly"}`, agentbridge.CodeBadEvent},
		{"action data not an object", `{"v":2,"type":"action","conversation_id":"conv_1","worker_id":"w","epoch":1,"action":"end","data":[1]}`, agentbridge.CodeBadEvent},
	}
	for _, tt := range tests {
		_, err := agentbridge.DecodeAgentEvent([]byte(tt.body), agentbridge.Limits{})
		var pe *agentbridge.ProtocolError
		if !errors.As(error(err), &pe) || pe.Code != tt.code || pe.Message == "" {
			t.Errorf("%s: got %v, want %s", tt.name, err, tt.code)
		}
	}
	// Only the type's fields are kept.
	ev, err := agentbridge.DecodeAgentEvent([]byte(`{"v":2,"type":"agent_state","conversation_id":"conv_1","worker_id":"w",`+
		`"epoch":1,"state":"idle","seq":99,"prev_seq":98,"text":"smuggled","session_id":"ses_x","visitor":{"admin":true}}`), agentbridge.Limits{})
	if err != nil || ev.Seq != 0 || ev.PrevSeq != 0 || ev.Text != "" || ev.SessionID != "" || ev.Visitor != nil {
		t.Fatalf("decoded %+v, %v", ev, err)
	}
}

// FuzzDecodeAgentEvent: the append validator never panics, accepts only
// agent event types of version 2 with an epoch and well-formed ids, and an
// accepted event encodes and decodes to the same event.
func FuzzDecodeAgentEvent(f *testing.F) {
	for _, body := range validAppends {
		f.Add([]byte(body))
	}
	for _, body := range []string{
		`{}`, `null`, `[]`, `{"v":2}`, `{"v":2,"type":"text_delta"}`,
		`{"v":2,"type":"action","conversation_id":"conv_1","worker_id":"w","epoch":1,"action":"end","data":  { "a" : "<&>" } }`,
		`{"v":2,"type":"text_done","conversation_id":"conv_1","worker_id":"w","epoch":18446744073709551615,"message_id":"m","text":"\u2028\ud800"}`,
		`{"v":2,"type":"session_started","conversation_id":"conv_1","worker_id":"w","epoch":1}`,
		`{"v":2.0,"type":"clear_audio","conversation_id":"conv_1","worker_id":"w","epoch":1,"epoch":0}`,
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, perr := agentbridge.DecodeAgentEvent(data, agentbridge.Limits{})
		if perr != nil {
			if perr.Code == "" || perr.Message == "" {
				t.Fatalf("refusal without code or message: %+v", perr)
			}
			return
		}
		if ev.V != agentbridge.Version || !agentbridge.IsAgentType(ev.Type) || ev.Epoch == 0 ||
			!agentbridge.ValidToken(ev.WorkerID) || !strings.HasPrefix(ev.ConversationID, "conv_") ||
			!agentbridge.ValidToken(ev.ConversationID) {
			t.Fatalf("accepted %+v", ev)
		}
		if ev.Seq != 0 || ev.PrevSeq != 0 || !ev.TS.IsZero() || ev.SessionID != "" || ev.Visitor != nil ||
			ev.Attachments != nil || ev.Idle || ev.Mode != "" {
			t.Fatalf("accepted event carries broker fields: %+v", ev)
		}
		again, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", ev, err)
		}
		ev2, perr := agentbridge.DecodeAgentEvent(again, agentbridge.Limits{})
		if perr != nil {
			t.Fatalf("re-encoded event %s refused: %v", again, perr)
		}
		if !sameJSON(t, ev.Data, ev2.Data) {
			t.Fatalf("data %s became %s", ev.Data, ev2.Data)
		}
		ev.Data, ev2.Data = nil, nil
		if !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("round trip\n got %+v\nwant %+v", ev2, ev)
		}
	})
}

// sameJSON reports whether two JSON values are equal as values (raw JSON
// is re-encoded compact and HTML-escaped).
func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("data %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("data %s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}
