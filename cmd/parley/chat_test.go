package main

import (
	"strings"
	"testing"
)

// The chat handler tests live in signaling (chat_test.go); expectReply
// stays for the end-to-end tests here that chat.

// expectReply reads the frames answering one message sent on the socket
// and checks their order: ack, typing, chunk…, done.
func expectReply(t *testing.T, c *wsClient, clientID, want string) (userID, replyID string) {
	t.Helper()
	ack := c.next()
	if ack.str("type") != "ack" || ack.str("client_message_id") != clientID || ack.str("message_id") == "" {
		t.Fatalf("first frame = %v, want ack for %s", ack, clientID)
	}
	userID = ack.str("message_id")
	typing := c.next()
	if typing.str("type") != "typing" || typing.str("reply_to") != userID {
		t.Fatalf("second frame = %v, want typing for %s", typing, userID)
	}
	var chunks strings.Builder
	index := 0.0
	for {
		f := c.next()
		switch f.str("type") {
		case "chunk":
			if f["index"] != index || f.str("reply_to") != userID {
				t.Fatalf("chunk = %v, want index %v reply_to %s", f, index, userID)
			}
			index++
			chunks.WriteString(f.str("chunk"))
			replyID = f.str("message_id")
			continue
		case "done":
			if index < 1 {
				t.Fatalf("done before any chunk: %v", f)
			}
			if f.str("body") != want || chunks.String() != want || f.str("message_id") != replyID {
				t.Fatalf("done = %v (chunks %q), want body %q", f, chunks.String(), want)
			}
			return userID, replyID
		default:
			t.Fatalf("unexpected frame %v while streaming a reply", f)
		}
	}
}
