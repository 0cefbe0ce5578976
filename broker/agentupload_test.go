package broker

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// TestAgentReadsUpload: an agent reads a visitor's attachment of its own
// conversation through the broker, in chunks, and nothing of another
// agent's conversation or an unknown upload.
func TestAgentReadsUpload(t *testing.T) {
	b := startBroker(t)
	s := startSession(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	data := bytes.Repeat([]byte("0123456789abcdef"), 3*agentbridge.UploadChunkBytes/16+7) // 3 chunks and a bit
	up, err := b.PutUpload(t.Context(), s, "notes.txt", "text/plain", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	subj := b.Subjects()
	echo := connectAs(t, b, AgentRole("echo"), nats.CustomInboxPrefix(subj.Inbox("echo")))
	f, err := agentbridge.ReadUpload(ctx, echo, subj, "echo", s.ConversationID, up.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Data, data) || f.Name != "notes.txt" || f.ContentType != "text/plain" {
		t.Fatalf("read %d bytes %q %q, want %d bytes notes.txt text/plain", len(f.Data), f.Name, f.ContentType, len(data))
	}
	var pe *agentbridge.ProtocolError
	_, err = agentbridge.ReadUpload(ctx, echo, subj, "echo", s.ConversationID, "upl_nonexistent000000000")
	if !errors.As(err, &pe) || pe.Code != agentbridge.CodeUnknownUpload {
		t.Fatalf("unknown upload: %v, want %s", err, agentbridge.CodeUnknownUpload)
	}
	other := connectAs(t, b, AgentRole("other"), nats.CustomInboxPrefix(subj.Inbox("other")))
	_, err = agentbridge.ReadUpload(ctx, other, subj, "other", s.ConversationID, up.ID)
	if !errors.As(err, &pe) || pe.Code != agentbridge.CodeUnknownConversation {
		t.Fatalf("another agent's conversation: %v, want %s", err, agentbridge.CodeUnknownConversation)
	}
}
