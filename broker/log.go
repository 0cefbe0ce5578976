package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// MaxClientMessageIDLen bounds a client_message_id.
const MaxClientMessageIDLen = 128

// Posted describes a visitor message once it is stored.
type Posted struct {
	MessageID       string
	ClientMessageID string
	ConversationID  string
	Seq             uint64
	// Duplicate is set when the client_message_id was seen before; the ids
	// are then those of the message stored the first time.
	Duplicate bool
	// Unavailable is set when no agent worker holds the conversation and
	// dispatching it has failed so far: ErrAgentUnavailable, or
	// ErrConversationLimit when its widget or tenant is at its limit. The
	// broker keeps trying.
	Unavailable error
}

// ValidateMessage checks a visitor message body and idempotency key.
func (b *Broker) ValidateMessage(text, clientMessageID string) error {
	switch n := utf8.RuneCountInString(text); {
	case !utf8.ValidString(text):
		return fmt.Errorf("%w: body must be valid UTF-8", ErrValidation)
	case strings.TrimSpace(text) == "":
		return fmt.Errorf("%w: body must not be empty", ErrValidation)
	case n > b.cfg.Chat.MaxMessageChars:
		return fmt.Errorf("%w: body is %d characters, the limit is %d", ErrValidation, n, b.cfg.Chat.MaxMessageChars)
	}
	if len(clientMessageID) > MaxClientMessageIDLen {
		return fmt.Errorf("%w: client_message_id longer than %d bytes", ErrValidation, MaxClientMessageIDLen)
	}
	for _, r := range clientMessageID {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
			return fmt.Errorf("%w: client_message_id must be printable ASCII without spaces", ErrValidation)
		}
	}
	return nil
}

// PostMessage stores a visitor message in the conversation log and returns
// once JetStream has it. The same clientMessageID posted again stores
// nothing and returns the first message's ids.
// uploads names files the visitor uploaded to this conversation, attached
// to the message (at most 10).
func (b *Broker) PostMessage(ctx context.Context, s Session, text, clientMessageID, via string, uploads ...string) (Posted, error) {
	if err := b.ValidateMessage(text, clientMessageID); err != nil {
		return Posted{}, err
	}
	if len(uploads) > 10 {
		return Posted{}, fmt.Errorf("%w: at most 10 upload_ids", ErrValidation)
	}
	var attachments []agentbridge.Attachment
	for _, id := range uploads {
		u, err := b.GetUpload(ctx, s.ConversationID, id)
		if errors.Is(err, ErrUnknownUpload) {
			return Posted{}, fmt.Errorf("%w: upload_ids: %q is not an upload of this conversation", ErrValidation, id)
		}
		if err != nil {
			return Posted{}, err
		}
		attachments = append(attachments, agentbridge.Attachment{UploadID: u.ID, Name: u.Name, ContentType: u.ContentType, Size: u.Size})
	}
	if via == "" {
		via = agentbridge.ModeChat
	}
	ev := agentbridge.Event{
		Type: agentbridge.EventUserMessage, ConversationID: s.ConversationID, SessionID: s.ID,
		MessageID: newID("msg_"), ClientMessageID: clientMessageID, Text: text, Via: via, Attachments: attachments,
	}
	var dedup string
	if clientMessageID != "" {
		dedup = s.ConversationID + "/" + clientMessageID
	}
	return b.postUserMessage(ctx, s, ev, dedup)
}

// postUserMessage stores a visitor turn (checked by the caller) and makes
// sure a worker holds the conversation to answer it.
func (b *Broker) postUserMessage(ctx context.Context, s Session, ev agentbridge.Event, dedup string) (Posted, error) {
	clientMessageID := ev.ClientMessageID
	st, err := b.publishAs(ctx, b.subj.InEvent(s.ConversationID), &ev, dedup, s.Agent)
	if err != nil {
		return Posted{}, err
	}
	p := Posted{MessageID: ev.MessageID, ClientMessageID: clientMessageID,
		ConversationID: s.ConversationID, Seq: st.Event.Seq, Duplicate: st.Duplicate}
	if st.Duplicate {
		p.MessageID = st.Event.MessageID
		// Our own earlier attempt, stored though its PubAck was lost
		// (publishIdempotent retried): not a duplicate of the visitor's.
		p.Duplicate = st.Event.MessageID != ev.MessageID
	}
	p.Unavailable = b.dispatcher.ensure(s.ConversationID, s.Agent)
	return p, nil
}

// appendInbound writes a broker event to a conversation's log. agent is
// the conversation's agent when the caller knows it ("" looks it up).
func (b *Broker) appendInbound(ctx context.Context, ev agentbridge.Event, dedup, agent string) (uint64, error) {
	st, err := b.publishAs(ctx, b.subj.InEvent(ev.ConversationID), &ev, dedup, agent)
	if err != nil {
		return 0, err
	}
	return st.Event.Seq, nil
}

// publish stores ev on subject through the log writer (see logWriter).
// dedup is its JetStream msg id ("" generates one: every append carries
// one, so a retry cannot store the event twice).
func (b *Broker) publish(ctx context.Context, subject string, ev *agentbridge.Event, dedup string) (stored, error) {
	return b.publishAs(ctx, subject, ev, dedup, "")
}

// publishAs is publish when the conversation's agent is known.
func (b *Broker) publishAs(ctx context.Context, subject string, ev *agentbridge.Event, dedup, agent string) (stored, error) {
	if !b.ready.Load() {
		return stored{}, ErrNotReady
	}
	if dedup == "" {
		dedup = newID("pub_")
	}
	return b.lw.append(ctx, subject, ev, dedup, agent)
}

// Bounds of a log read. The store may claim events it cannot deliver (a
// corrupt or truncated block leaves the per-subject index promising more
// than the blocks hold); without a bound such a read would wait forever.
const (
	// logReadIdle is how long a read waits for the next event the store
	// says is pending.
	logReadIdle = 5 * time.Second
	// logReadMax bounds a whole read.
	logReadMax = 30 * time.Second
	// logReadHeartbeat is the idle heartbeat a read asks of its ordered
	// consumer. On a cluster the first pull request of a new consumer can
	// reach the client's NATS node before the node has learned where the
	// consumer lives, and be dropped; only two missed heartbeats make the
	// consumer start again. With nats.go's default (5 s) that left about
	// 2 % of reads on a 3-node cluster stalled for 10 s, past logReadIdle.
	// At 1 s they recover in 2 s.
	logReadHeartbeat = time.Second
)

// ReadLog returns a conversation's events from log position fromSeq (0:
// the start) up to the current end. It fails with ErrStoreTimeout (logged
// at ERROR) when the store stops delivering events it says it has.
func (b *Broker) ReadLog(ctx context.Context, cid string, fromSeq uint64) ([]agentbridge.Event, error) {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, logReadMax)
	defer cancel()
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{b.subj.Events(cid)},
		InactiveThreshold: 5 * time.Second,
	}
	if fromSeq > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = fromSeq
	}
	cons, err := b.js.OrderedConsumer(rctx, b.subj.StreamName(), cfg)
	if err != nil {
		return nil, b.storeReadErr(ctx, cid, fmt.Errorf("read log: %w", err), start, 0, 0)
	}
	pending := cons.CachedInfo().NumPending
	if pending == 0 {
		return nil, nil
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(logReadHeartbeat))
	if err != nil {
		return nil, fmt.Errorf("%w: read log: %w", ErrStore, err)
	}
	defer it.Stop()
	events := make([]agentbridge.Event, 0, min(pending, 10_000))
	left := pending
	for {
		ictx, icancel := context.WithTimeout(rctx, logReadIdle)
		msg, err := it.Next(jetstream.NextContext(ictx))
		icancel()
		if err != nil {
			return nil, b.storeReadErr(ctx, cid, fmt.Errorf("read log: %w", err), start, len(events), left)
		}
		ev, meta, err := decodeLogMsg(msg)
		if err == nil {
			events = append(events, ev)
		} else {
			b.log.Warn("skipping undecodable log entry", "conversation_id", cid, "err", err)
		}
		if meta == nil || meta.NumPending == 0 {
			return events, nil
		}
		left = meta.NumPending
	}
}

// storeReadErr classifies a failed log read: the caller's own context
// ending is ErrStore; the store not delivering in time is ErrStoreTimeout,
// logged at ERROR and counted.
func (b *Broker) storeReadErr(ctx context.Context, cid string, err error, start time.Time, got int, left uint64) error {
	if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	b.health.readTimedOut(cid, left)
	b.log.Error("store read timed out: the log claims events it does not deliver (lost or corrupt store data?); run `parley check`",
		"conversation_id", cid, "stream", b.subj.StreamName(), "events_read", got, "events_pending", left,
		"waited", time.Since(start).Round(time.Millisecond).String(), "err", err)
	return fmt.Errorf("%w: conversation %s: %d events read, %d more claimed but not delivered: %w", ErrStoreTimeout, cid, got, left, err)
}

// lastStored returns the seq and store time of a conversation's last
// stored event; zero values when its log has none.
func (b *Broker) lastStored(ctx context.Context, cid string) (uint64, time.Time, error) {
	m, err := b.stream.GetLastMsgForSubject(ctx, b.subj.Events(cid))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, time.Time{}, nil
	case err != nil:
		return 0, time.Time{}, err
	}
	return m.Sequence, m.Time, nil
}

// Message is one entry of a conversation's transcript.
type Message struct {
	ID        string    `json:"id"`
	Role      string    `json:"role"` // "visitor" or "agent"
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"created_at"`
	Seq       uint64    `json:"seq"`
	ReplyTo   string    `json:"reply_to,omitempty"`
	// Via is "chat" or "voice": how a visitor turn came in, or the mode
	// the conversation was in when the agent answered.
	Via         string `json:"via"`
	Interrupted bool   `json:"interrupted,omitempty"`
	// Written is, for a reply the broker spoke and the visitor cut, the
	// whole text the agent wrote; Body is then the part heard.
	Written string `json:"written,omitempty"`
	// Unheard is, for a voice turn the speech pipeline could not
	// transcribe, why (a speech_* code); Body is then empty.
	Unheard string `json:"unheard,omitempty"`
	// Attachments are the uploads a visitor message carries.
	Attachments []agentbridge.Attachment `json:"attachments,omitempty"`
}

// Roles of transcript messages.
const (
	RoleVisitor = "visitor"
	RoleAgent   = "agent"
)

// Transcript turns log events into messages, in log order: visitor
// messages, final transcripts of what the visitor said (via voice) and
// completed agent replies (via the mode the conversation was in). A reply
// is complete at its first text_done (a later one, which only an agent
// writing on after the broker closed the reply can add, is ignored), and
// interrupted if that says so or an interrupt event (barge-in) names it.
// They are the finished turns of ConversationTranscript, the one folding
// of a log.
func Transcript(events []agentbridge.Event) []Message {
	var msgs []Message
	for _, e := range ConversationTranscript(events, "") {
		if e.Kind == EntryTurn && !e.InProgress {
			msgs = append(msgs, *e.Turn)
		}
	}
	return msgs
}

// interruption is what an interrupt event says of the reply it names.
type interruption struct {
	heard *string // the words the visitor heard, when the broker spoke it
}

// interruptedReplies are the replies interrupt events name (the visitor
// barged in while the agent spoke them). An interrupt may come before or
// after the reply's text_done.
func interruptedReplies(events []agentbridge.Event) map[string]interruption {
	var cut map[string]interruption
	for i := range events {
		if ev := &events[i]; ev.Type == agentbridge.EventInterrupt && ev.MessageID != "" {
			if cut == nil {
				cut = map[string]interruption{}
			}
			if _, seen := cut[ev.MessageID]; !seen {
				cut[ev.MessageID] = interruption{heard: ev.HeardText}
			}
		}
	}
	return cut
}

// History returns the last limit messages of a conversation (all if
// limit <= 0), oldest first.
func (b *Broker) History(ctx context.Context, cid string, limit int) ([]Message, error) {
	events, err := b.ReadLog(ctx, cid, 0)
	if err != nil {
		return nil, err
	}
	msgs := Transcript(events)
	if limit > 0 && len(msgs) > limit {
		msgs = msgs[len(msgs)-limit:]
	}
	return msgs, nil
}

// FindReply looks in the log, from fromSeq, for the completed agent reply to
// a visitor message; ok is false if there is none yet.
func (b *Broker) FindReply(ctx context.Context, cid, messageID string, fromSeq uint64) (Message, bool, error) {
	events, err := b.ReadLog(ctx, cid, fromSeq)
	if err != nil {
		return Message{}, false, err
	}
	for _, m := range Transcript(events) {
		if m.Role == RoleAgent && m.ReplyTo == messageID {
			return m, true, nil
		}
	}
	return Message{}, false, nil
}

// AwaitReply waits for the completed agent reply to a posted message. sub
// must have been opened before the message was posted. A reply already in
// the log (a duplicate post) is returned at once. It fails with
// ErrAgentUnavailable (or ErrConversationLimit) when no agent holds the
// conversation, and with
// ErrReplyTimeout when ctx ends first.
func (b *Broker) AwaitReply(ctx context.Context, sub *Subscription, p Posted) (Message, error) {
	if p.Duplicate {
		m, ok, err := b.FindReply(ctx, p.ConversationID, p.MessageID, p.Seq)
		if err != nil || ok {
			return m, err
		}
	}
	if p.Unavailable != nil {
		return Message{}, p.Unavailable
	}
	var fence agentbridge.Fence
	var updates []Update
	for {
		select {
		case <-ctx.Done():
			return Message{}, fmt.Errorf("%w: %w", ErrReplyTimeout, ctx.Err())
		case <-sub.Ready():
		}
		updates, open := sub.Take(updates[:0])
		for _, u := range updates {
			if n := u.Notice; n != nil && n.Kind == NoticeAgentUnavailable {
				return Message{}, n.Err()
			}
			// An interrupted reply is awaited on (the next worker answers
			// again after a lost one), unless the visitor cut it off: that
			// one is the answer.
			if ev := u.Event; ev != nil && fence.Admit(ev) && ev.Type == agentbridge.EventTextDone && ev.ReplyTo == p.MessageID &&
				(!ev.Interrupted || ev.Reason == agentbridge.ReasonBargeIn) {
				return Transcript([]agentbridge.Event{*ev})[0], nil
			}
		}
		if !open {
			// The live feed ended; the log still knows.
			m, found, err := b.FindReply(ctx, p.ConversationID, p.MessageID, p.Seq)
			switch {
			case err != nil:
				return Message{}, err
			case found:
				return m, nil
			}
			return Message{}, fmt.Errorf("%w: live feed ended: %w", ErrStore, sub.Err())
		}
	}
}
