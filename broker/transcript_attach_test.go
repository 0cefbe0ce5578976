package broker

import (
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
)

// TestTranscriptAttachments: a visitor message keeps the uploads it
// carries in the transcript (the widget shows them after a reload).
func TestTranscriptAttachments(t *testing.T) {
	att := []agentbridge.Attachment{{UploadID: "upl_1", Name: "order.txt", ContentType: "text/plain; charset=utf-8", Size: 12}}
	msgs := Transcript([]agentbridge.Event{
		{Type: agentbridge.EventUserMessage, Seq: 1, MessageID: "msg_1", Text: "order.txt", Attachments: att},
		{Type: agentbridge.EventUserMessage, Seq: 2, MessageID: "msg_2", Text: "plain"},
	})
	if len(msgs) != 2 || len(msgs[0].Attachments) != 1 || msgs[0].Attachments[0] != att[0] || msgs[1].Attachments != nil {
		t.Fatalf("transcript %+v", msgs)
	}
}
