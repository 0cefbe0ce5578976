package agentbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// File is a visitor's upload as read by an agent.
type File struct {
	Name        string
	ContentType string
	Data        []byte
}

// MaxUploadRead bounds the file ReadUpload accepts.
const MaxUploadRead = 64 << 20

// ReadUpload reads the file uploadID the visitor attached to conversation
// cid of agent, from the broker (an agent has no access to the uploads
// store itself). nc must use the agent's inbox prefix.
func ReadUpload(ctx context.Context, nc *nats.Conn, subj Subjects, agent, cid, uploadID string) (File, error) {
	var f File
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return f, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(UploadRequest{V: Version, ConversationID: cid, UploadID: uploadID})
	if err := nc.PublishRequest(subj.Upload(agent), inbox, req); err != nil {
		return f, err
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return File{}, fmt.Errorf("agentbridge: read upload %s: %w", uploadID, err)
		}
		if m.Header.Get("Status") == "503" {
			return File{}, fmt.Errorf("agentbridge: read upload %s: %w", uploadID, nats.ErrNoResponders)
		}
		if code := m.Header.Get(HeaderError); code != "" {
			var r struct {
				Error ProtocolError `json:"error"`
			}
			if json.Unmarshal(m.Data, &r) != nil || r.Error.Code == "" {
				r.Error = ProtocolError{Code: code, Message: "refused"}
			}
			return File{}, &r.Error
		}
		off, err := strconv.ParseUint(m.Header.Get(HeaderUploadOffset), 10, 64)
		if err != nil || off != uint64(len(f.Data)) {
			return File{}, fmt.Errorf("agentbridge: read upload %s: chunk at offset %q, want %d", uploadID, m.Header.Get(HeaderUploadOffset), len(f.Data))
		}
		if off == 0 {
			f.Name, f.ContentType = m.Header.Get(HeaderFileName), m.Header.Get("Content-Type")
			if size, err := strconv.ParseUint(m.Header.Get(HeaderUploadSize), 10, 64); err == nil && size <= MaxUploadRead {
				f.Data = make([]byte, 0, size)
			}
		}
		if len(f.Data)+len(m.Data) > MaxUploadRead {
			return File{}, fmt.Errorf("agentbridge: read upload %s: over %d bytes", uploadID, MaxUploadRead)
		}
		f.Data = append(f.Data, m.Data...)
		if m.Header.Get(HeaderUploadLast) != "" {
			return f, nil
		}
	}
}
