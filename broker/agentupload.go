package broker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
)

// uploadReadTimeout bounds streaming one upload to an agent.
const uploadReadTimeout = time.Minute

// serveUpload answers an agent's UploadRequest: agents have no access to
// the uploads object store (it holds every conversation's files), so the
// broker streams them a file of one of their own conversations.
func (b *Broker) serveUpload(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	agent, _ := b.subj.AgentFromSubject(m.Subject)
	var req agentbridge.UploadRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		b.refuseUpload(m, agentbridge.CodeBadEvent, "not a JSON upload request")
		return
	}
	if req.V != agentbridge.Version {
		b.refuseUpload(m, agentbridge.CodeUnsupportedVersion, "v must be "+strconv.Itoa(agentbridge.Version))
		return
	}
	if !b.goroutine(func() { b.streamUpload(m, agent, req) }) {
		b.refuseUpload(m, agentbridge.CodeNotReady, "the broker is shutting down")
	}
}

func (b *Broker) streamUpload(m *nats.Msg, agent string, req agentbridge.UploadRequest) {
	ctx, cancel := context.WithTimeout(b.ctx, uploadReadTimeout)
	defer cancel()
	conv, err := b.Conversation(ctx, req.ConversationID)
	if errors.Is(err, ErrUnknownConversation) || err == nil && conv.Agent != agent {
		b.refuseUpload(m, agentbridge.CodeUnknownConversation, "no conversation "+req.ConversationID+" of agent "+agent)
		return
	}
	if err != nil {
		b.refuseUpload(m, agentbridge.CodeStoreUnavailable, "the store is unavailable; retry")
		return
	}
	up, err := b.GetUpload(ctx, conv.ID, req.UploadID)
	if errors.Is(err, ErrUnknownUpload) {
		b.refuseUpload(m, agentbridge.CodeUnknownUpload, "conversation "+conv.ID+" has no upload "+req.UploadID)
		return
	}
	if err != nil {
		b.refuseUpload(m, agentbridge.CodeStoreUnavailable, "the store is unavailable; retry")
		return
	}
	r, err := b.uploads.Get(ctx, up.ID)
	if err != nil {
		b.refuseUpload(m, agentbridge.CodeStoreUnavailable, "the store is unavailable; retry")
		return
	}
	defer r.Close()
	size := strconv.FormatUint(up.Size, 10)
	buf := make([]byte, agentbridge.UploadChunkBytes)
	var off uint64
	for first := true; ; first = false {
		n, rerr := io.ReadFull(r, buf)
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			b.log.Warn("reading an upload for an agent failed", "conversation_id", conv.ID, "upload_id", up.ID, "err", rerr)
			b.refuseUpload(m, agentbridge.CodeStoreUnavailable, "reading the upload failed; retry")
			return
		}
		last := rerr != nil || off+uint64(n) >= up.Size
		out := nats.NewMsg(m.Reply)
		out.Data = buf[:n]
		out.Header.Set(agentbridge.HeaderUploadOffset, strconv.FormatUint(off, 10))
		out.Header.Set(agentbridge.HeaderUploadSize, size)
		if first {
			out.Header.Set("Content-Type", up.ContentType)
			out.Header.Set(agentbridge.HeaderFileName, up.Name)
		}
		if last {
			out.Header.Set(agentbridge.HeaderUploadLast, "true")
		}
		if err := b.nc.PublishMsg(out); err != nil {
			return
		}
		off += uint64(n)
		if last {
			return
		}
	}
}

func (b *Broker) refuseUpload(m *nats.Msg, code, message string) {
	out := nats.NewMsg(m.Reply)
	out.Header.Set(agentbridge.HeaderError, code)
	out.Data, _ = json.Marshal(struct {
		Error agentbridge.ProtocolError `json:"error"`
	}{agentbridge.ProtocolError{Code: code, Message: message}})
	_ = b.nc.PublishMsg(out)
}
