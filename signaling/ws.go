package signaling

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nuid"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
)

// WebSocket tuning.
const (
	wsReadLimit    = 64 << 10
	wsWriteTimeout = 10 * time.Second
	wsOutQueue     = 256 // frames queued for a client before it counts as too slow
	wsOutKeep      = 16  // queue capacity a leg keeps once its frames are written
	// wsInQueue: client frames read ahead of the leg's loop. The loop
	// handles them one by one anyway; a deeper queue only costs memory
	// (1.7 KiB a leg at 16), and a client that sends faster meets TCP's
	// flow control.
	wsInQueue = 1
	// wsShutdownClose is how long a closing leg waits, at shutdown, for
	// the peer's answer to its close frame (a browser answers at once; the
	// library would wait 5 s for a peer that is gone).
	wsShutdownClose = 500 * time.Millisecond
)

// hijackTracker keeps the connection websocket.Accept hijacks, so a leg
// can cut it when the close handshake is not answered in time.
type hijackTracker struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackTracker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = c
	return c, rw, err
}

func (h *hijackTracker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// clientFrame is a frame the browser sends.
type clientFrame struct {
	Type            string   `json:"type"`
	Body            *string  `json:"body,omitempty"`
	ClientMessageID string   `json:"client_message_id,omitempty"`
	Mode            string   `json:"mode,omitempty"`
	UploadIDs       []string `json:"upload_ids,omitempty"`
}

// serverFrame is a frame Parley sends; each type uses some of the fields
// (docs/PROTOCOL.md lists them).
type serverFrame struct {
	Type            string          `json:"type"`
	ConversationID  string          `json:"conversation_id,omitempty"`
	SessionID       string          `json:"session_id,omitempty"`
	MessageID       string          `json:"message_id,omitempty"`
	ClientMessageID string          `json:"client_message_id,omitempty"`
	ReplyTo         string          `json:"reply_to,omitempty"`
	Seq             uint64          `json:"seq,omitempty"`
	Index           *int            `json:"index,omitempty"`
	Chunk           string          `json:"chunk,omitempty"`
	Body            string          `json:"body,omitempty"`
	Role            string          `json:"role,omitempty"`
	Mode            string          `json:"mode,omitempty"`
	PreviousMode    string          `json:"previous_mode,omitempty"`
	Via             string          `json:"via,omitempty"`
	LegID           string          `json:"leg_id,omitempty"`
	Reason          string          `json:"reason,omitempty"`
	State           string          `json:"state,omitempty"`
	Action          string          `json:"action,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	Text            string          `json:"text,omitempty"`
	Final           bool            `json:"final,omitempty"`
	Duplicate       bool            `json:"duplicate,omitempty"`
	Interrupted     bool            `json:"interrupted,omitempty"`
	HeardMS         *int64          `json:"heard_ms,omitempty"`
	HeardText       *string         `json:"heard_text,omitempty"`
	StartsInMS      *int64          `json:"starts_in_ms,omitempty"`
	DurationMS      int64           `json:"duration_ms,omitempty"`
	TS              *time.Time      `json:"ts,omitempty"` // when the event was stored (mode frames: call markers)
	Code            string          `json:"code,omitempty"`
	Message         string          `json:"message,omitempty"`
}

// serveWS: GET /v1/sessions/{id}/ws?token=…[&since_seq=N]. The chat leg of
// a session. Auth failures are reported by closing with 1008 and the error
// code as reason, since a browser cannot read an HTTP error of a WebSocket.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	// Origin is checked by hand below against the session's widget, so the
	// library's same-host check is off.
	hj := &hijackTracker{ResponseWriter: w}
	conn, err := websocket.Accept(hj, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered the request
	}
	conn.SetReadLimit(wsReadLimit)
	sess, since, err := s.authWS(r)
	if err != nil {
		we, _ := classify(err)
		_ = conn.Close(websocket.StatusPolicyViolation, we.code)
		return
	}
	if err := s.caps.openWS(sess.ID); err != nil {
		we, _ := classify(err)
		_ = conn.Close(websocket.StatusPolicyViolation, we.code)
		return
	}
	defer s.caps.closeWS(sess.ID)
	if !s.addLeg() {
		end := endLeg(errLegShutdown)
		_ = conn.Close(end.code, end.reason)
		return
	}
	defer s.legWG.Done()
	legID := "ws_" + nuid.Next()
	s.rooms.LegAttached(sess, legID, "websocket")
	defer s.rooms.LegDetached(sess.ConversationID, legID)
	l := &leg{
		s: s, conn: conn, raw: hj.conn, sess: sess, ip: s.ips.of(r),
		log:         s.log.With("session_id", sess.ID, "conversation_id", sess.ConversationID),
		writeFail:   make(chan struct{}),
		typing:      make(map[string]bool),
		chunked:     make(map[string]bool),
		interrupted: make(map[string]bool),
		posted:      make(map[string]time.Time),
	}
	l.run(since)
}

func (s *Server) authWS(r *http.Request) (broker.Session, uint64, error) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return broker.Session{}, 0, ErrOriginRequired
	}
	q := r.URL.Query()
	var since uint64
	if v := q.Get("since_seq"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return broker.Session{}, 0, fmt.Errorf("%w: since_seq", broker.ErrValidation)
		}
		since = n
	}
	sess, err := s.authSession(r, q.Get("token"))
	return sess, since, err
}

// leg is one chat WebSocket. One goroutine reads, and run's loop owns the
// state. Writes to the socket are owned by a writer goroutine that runs
// only while frames wait, and a liveness ping by one that runs only while
// a ping is out: an idle leg costs two goroutines.
type leg struct {
	s    *Server
	conn *websocket.Conn
	raw  net.Conn // under conn, to cut a close handshake short at shutdown
	sess broker.Session
	ip   netip.Addr
	log  *slog.Logger

	outMu      sync.Mutex
	out        [][]byte       // frames waiting for the writer; guarded by outMu
	queued     int            // frames queued and not yet written; guarded by outMu
	writing    bool           // a writer goroutine runs; guarded by outMu
	outStopped bool           // no more writes; guarded by outMu
	writers    sync.WaitGroup // the writer goroutine, while it runs
	writeFail  chan struct{}  // closed when a write failed

	posted      map[string]time.Time // visitor message id → when it came, until its first chunk
	fence       agentbridge.Fence    // drops agent events of superseded workers
	lastSeq     uint64               // highest log position sent
	unavailable bool                 // AGENT_UNAVAILABLE was sent and not yet cleared
	typing      map[string]bool      // reply_to → typing sent
	chunked     map[string]bool      // agent message id → a chunk sent
	// interrupted: agent replies an interrupt named (barge-in) → their done frame
	// was sent. Chunks the agent streams on are not shown, and the reply
	// gets one done frame, marked interrupted.
	interrupted map[string]bool

	cut      atomic.Bool  // counted as a slow consumer
	lastRead atomic.Int64 // unix nanos of the last frame read (liveness)
}

// legEnd says how a leg ends.
type legEnd struct {
	code   websocket.StatusCode
	reason string
}

// endLeg is the end of a leg for err (from the wire error table); nil is a
// normal closure without a reason (the client closed, or went away).
func endLeg(err error) legEnd {
	if err == nil {
		return legEnd{websocket.StatusNormalClosure, ""}
	}
	we, _ := classify(err)
	return legEnd{we.closeCode(), we.code}
}

func (l *leg) run(since uint64) {
	ctx, cancel := context.WithCancel(l.s.legs)
	defer cancel()
	// The socket's reader and writer do not use ctx: cancelling a Read or
	// Write would drop the connection without a close frame. They end when
	// run closes the socket, after serve has decided how.
	rctx, stopReader := context.WithCancel(context.Background())
	in := make(chan clientFrame, wsInQueue)
	readErr := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		l.read(rctx, in, readErr)
	}()
	end := l.serve(ctx, since, in, readErr)
	if l.s.legs.Err() != nil && l.raw != nil {
		// Shutting down: a peer that does not answer the close frame
		// soon is gone, and is not waited for.
		cut := time.AfterFunc(wsShutdownClose, func() { _ = l.raw.Close() })
		defer cut.Stop()
	}
	_ = l.conn.Close(end.code, end.reason) // ends the reader's Read
	stopReader()
	<-readerDone
	l.log.Debug("chat leg closed", "code", int(end.code), "reason", end.reason)
}

func (l *leg) serve(ctx context.Context, since uint64, in <-chan clientFrame, readErr <-chan error) legEnd {
	convs := l.s.convs
	sub, err := convs.Subscribe(ctx, l.sess.ConversationID)
	if err != nil {
		return endLeg(err)
	}
	defer sub.Close()
	defer l.stopWriting()
	ping := l.newPinger(ctx)
	defer ping.stop()

	l.send(serverFrame{Type: "session", SessionID: l.sess.ID, ConversationID: l.sess.ConversationID, Mode: l.sess.Mode})
	// No worker of the agent at all: a visitor coming back (a reconnect,
	// or a reload that knows the log) may have been told so by an earlier
	// leg, so the assignment is news to this one. A first leg has told
	// nothing yet: its visitor hears of no agent when it writes or calls.
	l.unavailable = since > 0 && l.s.agents.AliveWorkers(l.sess.Agent) == 0
	if since > 0 {
		events, err := convs.ReadLog(ctx, l.sess.ConversationID, since+1)
		if err != nil {
			return endLeg(err)
		}
		for i := range events {
			l.onEvent(&events[i])
		}
	}
	var updates []broker.Update
	for {
		select {
		case <-ctx.Done():
			return endLeg(errLegShutdown)
		case <-l.writeFail:
			return endLeg(errLegSlowConsumer)
		case <-ping.due():
			ping.start()
		case err := <-ping.result:
			if ping.done(err) {
				// The peer is gone: no close handshake to wait for.
				l.s.metrics.wsPingTimeouts.Inc()
				l.log.Info("chat leg did not answer a ping; closing it", "timeout", l.s.cfg.Chat.PingTimeout)
				l.conn.CloseNow()
				return endLeg(errLegPingTimeout)
			}
		case err := <-readErr:
			if websocket.CloseStatus(err) == -1 && errors.Is(err, errFrameTooLarge) {
				return endLeg(errFrameTooLarge)
			}
			return endLeg(nil)
		case f := <-in:
			l.onClientFrame(ctx, f)
		case <-sub.Ready():
			var open bool
			updates, open = sub.Take(updates[:0])
			if end, ok := l.onUpdates(updates); ok {
				return end
			}
			clear(updates)
			if !open {
				l.log.Warn("live feed ended", "err", sub.Err())
				return endLeg(errLegFeedEnded)
			}
		}
	}
}

// onUpdates handles what the live feed delivered; ok is true when one of
// them ends the leg.
func (l *leg) onUpdates(updates []broker.Update) (end legEnd, ok bool) {
	for _, u := range updates {
		if u.Notice != nil {
			l.onNotice(u.Notice)
			continue
		}
		if ended := l.onEvent(u.Event); ended {
			if u.Event.Reason == broker.EndReasonClosed {
				return endLeg(errLegConversationClosed), true
			}
			return endLeg(errLegSessionEnded), true
		}
	}
	return legEnd{}, false
}

// read decodes client frames until the socket fails.
func (l *leg) read(ctx context.Context, in chan<- clientFrame, readErr chan<- error) {
	for {
		typ, data, err := l.conn.Read(ctx)
		l.lastRead.Store(time.Now().UnixNano())
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				err = errFrameTooLarge
			}
			readErr <- err // buffered: the only send
			return
		}
		var f clientFrame
		switch {
		case typ != websocket.MessageText:
			f.Type = "_error"
			f.ClientMessageID = "frames must be JSON text"
		case strictUnmarshal(data, &f) != nil:
			f = clientFrame{Type: "_error", ClientMessageID: "invalid JSON, or an unknown field"}
		}
		select {
		case in <- f:
		case <-ctx.Done():
			return
		}
	}
}

// send queues a frame for the writer, and starts one when none runs; a
// client that lets wsOutQueue frames pile up is cut off rather than
// slowing anyone else.
func (l *leg) send(f serverFrame) {
	data, _ := json.Marshal(f)
	l.outMu.Lock()
	defer l.outMu.Unlock()
	if l.outStopped {
		return
	}
	if l.queued >= wsOutQueue {
		if l.cutOff() {
			l.log.Warn("client too slow, dropping leg")
		}
		l.conn.CloseNow()
		return
	}
	l.out = append(l.out, data)
	l.queued++
	if !l.writing {
		l.writing = true
		l.writers.Add(1)
		go l.write()
	}
}

// write owns writes to the socket while frames wait, in the order they
// were queued; it ends when none waits, writing is stopped, or a write
// fails.
func (l *leg) write() {
	defer l.writers.Done()
	var batch [][]byte
	for {
		l.outMu.Lock()
		clear(batch)
		if len(l.out) == 0 || l.outStopped {
			l.writing = false
			if cap(l.out) > wsOutKeep {
				l.out = nil
			}
			l.outMu.Unlock()
			return
		}
		batch, l.out = l.out, batch[:0]
		l.outMu.Unlock()
		for _, data := range batch {
			if err := l.writeFrame(data); err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					l.cutOff()
				}
				l.outMu.Lock()
				l.outStopped, l.writing, l.out = true, false, nil
				l.outMu.Unlock()
				close(l.writeFail) // the only close: outStopped keeps other writers from starting
				return
			}
		}
	}
}

// writeFrame writes one frame unless writing was stopped, and counts it
// off the queue.
func (l *leg) writeFrame(data []byte) error {
	l.outMu.Lock()
	stopped := l.outStopped
	l.queued--
	l.outMu.Unlock()
	if stopped {
		return nil
	}
	// Not cancelled when the leg ends: cancelling a Write drops the
	// connection without a close frame. It has its own timeout.
	ctx, cancel := context.WithTimeout(context.Background(), wsWriteTimeout)
	defer cancel()
	return l.conn.Write(ctx, websocket.MessageText, data)
}

// stopWriting ends the writer after the frame it is writing, and waits for
// it: what was not written yet is dropped.
func (l *leg) stopWriting() {
	l.outMu.Lock()
	l.outStopped = true
	l.outMu.Unlock()
	l.writers.Wait()
}

// cutOff counts this leg as a slow consumer, once; it reports whether it
// was the first call.
func (l *leg) cutOff() bool {
	if !l.cut.CompareAndSwap(false, true) {
		return false
	}
	l.s.metrics.wsSlow.Inc()
	return true
}

// pinger is the leg's liveness check, run by the leg's loop: after
// Chat.PingIdle without a frame from the client it pings, and when no pong
// comes within Chat.PingTimeout the leg is closed (the reader goroutine
// reads the pong). A goroutine waits for the pong only while a ping is out.
type pinger struct {
	l       *leg
	ctx     context.Context
	cancel  context.CancelFunc
	idle    time.Duration
	timeout time.Duration
	timer   *time.Timer // nil when pings are off
	out     bool        // a ping is out
	result  chan error  // the ping's outcome; one slot
}

func (l *leg) newPinger(ctx context.Context) *pinger {
	p := &pinger{l: l, idle: l.s.cfg.Chat.PingIdle, timeout: l.s.cfg.Chat.PingTimeout, result: make(chan error, 1)}
	p.ctx, p.cancel = context.WithCancel(ctx)
	if p.idle > 0 && p.timeout > 0 {
		l.lastRead.Store(time.Now().UnixNano())
		p.timer = time.NewTimer(p.idle)
	}
	return p
}

// due fires when the leg may have been idle for Chat.PingIdle; it never
// fires when pings are off or one is out.
func (p *pinger) due() <-chan time.Time {
	if p.timer == nil || p.out {
		return nil
	}
	return p.timer.C
}

// start pings when the client has been idle long enough, or waits again.
func (p *pinger) start() {
	if since := time.Since(time.Unix(0, p.l.lastRead.Load())); since < p.idle {
		p.timer.Reset(p.idle - since)
		return
	}
	p.out = true
	go func() {
		ctx, cancel := context.WithTimeout(p.ctx, p.timeout)
		defer cancel()
		p.result <- p.l.conn.Ping(ctx)
	}()
}

// done takes a ping's outcome; it reports whether the peer failed to
// answer in time. Any other failure is the socket's, which the reader
// reports.
func (p *pinger) done(err error) (failed bool) {
	p.out = false
	switch {
	case err == nil:
		p.l.lastRead.Store(time.Now().UnixNano())
		p.timer.Reset(p.idle)
		return false
	case p.ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return true
	default:
		return false
	}
}

// stop ends a ping that is out, and waits for its goroutine.
func (p *pinger) stop() {
	p.cancel()
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.out {
		<-p.result
		p.out = false
	}
}

// sendError sends err as an error frame, its code and message from the
// wire error table.
func (l *leg) sendError(err error, clientMessageID string) {
	we, msg := classify(err)
	l.send(serverFrame{Type: "error", Code: we.code, Message: msg, ClientMessageID: clientMessageID})
}

func (l *leg) onClientFrame(ctx context.Context, f clientFrame) {
	switch f.Type {
	case "ping":
		l.send(serverFrame{Type: "pong"})
	case "message":
		l.onMessage(ctx, f)
	case "mode":
		l.onModeFrame(ctx, f.Mode)
	case "_error":
		l.sendError(fmt.Errorf("%w: %s", ErrBadRequest, f.ClientMessageID), "")
	default:
		l.sendError(fmt.Errorf("%w: unknown frame type %q", ErrBadRequest, f.Type), f.ClientMessageID)
	}
}

// onMessage stores a visitor message, then acks it. Storing blocks this
// loop, so the ack always precedes the agent's answer on this socket.
func (l *leg) onMessage(ctx context.Context, f clientFrame) {
	received := time.Now()
	if f.Body == nil {
		l.sendError(fmt.Errorf("%w: body is required", broker.ErrValidation), f.ClientMessageID)
		return
	}
	convs := l.s.convs
	if err := l.s.allowRate(ctx, limitMessages, l.ip, l.sess.Widget).err(); err != nil {
		l.sendError(err, f.ClientMessageID)
		return
	}
	posted, err := convs.PostMessage(context.WithoutCancel(ctx), l.sess, *f.Body, f.ClientMessageID, agentbridge.ModeChat, f.UploadIDs...)
	if err != nil {
		l.sendError(err, f.ClientMessageID)
		return
	}
	if !posted.Duplicate && len(l.posted) < 1000 {
		l.posted[posted.MessageID] = received
	}
	l.send(serverFrame{Type: "ack", MessageID: posted.MessageID, ClientMessageID: posted.ClientMessageID,
		ConversationID: posted.ConversationID, Seq: posted.Seq, Duplicate: posted.Duplicate})
	if posted.Duplicate {
		// Same message again: give the same reply if it is complete.
		if m, ok, err := convs.FindReply(ctx, posted.ConversationID, posted.MessageID, posted.Seq); err == nil && ok {
			l.sendReply(m.ID, m.ReplyTo, m.Body, m.Seq, m.Interrupted)
		}
	}
	if posted.Unavailable != nil {
		l.unavailable = true
		l.sendError(posted.Unavailable, f.ClientMessageID)
	}
}

func (l *leg) onNotice(n *broker.Notice) {
	switch n.Kind {
	case broker.NoticeAgentUnavailable:
		l.unavailable = true
		l.sendError(n.Err(), "")
	case broker.NoticeAgentLost:
		l.unavailable = true
		l.send(serverFrame{Type: "agent_state", State: "reconnecting"})
	case broker.NoticeAgentAssigned:
		// Only news to a visitor who was told there was no agent.
		if l.unavailable {
			l.unavailable = false
			l.send(serverFrame{Type: "agent_state", State: "connected"})
		}
	}
}

// onEvent maps one log event to frames; it reports whether this session
// has ended.
func (l *leg) onEvent(ev *agentbridge.Event) bool {
	if ev.Seq != 0 && ev.Seq <= l.lastSeq {
		return false // already sent (catch-up and live overlap)
	}
	if !l.fence.Admit(ev) {
		return false // from a worker that lost the conversation
	}
	l.lastSeq = max(l.lastSeq, ev.Seq)
	switch ev.Type {
	case agentbridge.EventUserMessage:
		switch {
		case ev.Via == agentbridge.ModeVoice:
			// Spoken, and heard by the speech pipeline: the visitor sees
			// what was heard, or why nothing was (Reason, a speech_* code).
			l.send(serverFrame{Type: "message", Role: broker.RoleVisitor, MessageID: ev.MessageID, Body: ev.Text,
				Via: agentbridge.ModeVoice, Reason: ev.Reason, Seq: ev.Seq})
		case ev.SessionID != l.sess.ID:
			// Typed in another tab or leg of the conversation.
			l.send(serverFrame{Type: "message", Role: broker.RoleVisitor, MessageID: ev.MessageID, Body: ev.Text, Seq: ev.Seq})
		}
	case agentbridge.EventAgentState:
		if ev.State == agentbridge.StateThinking && ev.ReplyTo != "" {
			l.sendTyping(ev.ReplyTo)
			return false
		}
		l.send(serverFrame{Type: "agent_state", State: ev.State, ReplyTo: ev.ReplyTo, Seq: ev.Seq})
	case agentbridge.EventTextDelta:
		if _, cut := l.interrupted[ev.MessageID]; cut {
			return false // the agent speaks on after the visitor cut in
		}
		if at, ok := l.posted[ev.ReplyTo]; ok {
			l.s.metrics.chatRoundTrip.Observe(time.Since(at).Seconds())
			delete(l.posted, ev.ReplyTo)
		}
		l.sendTyping(ev.ReplyTo)
		l.chunked[ev.MessageID] = true
		idx := ev.Index
		l.send(serverFrame{Type: "chunk", MessageID: ev.MessageID, ReplyTo: ev.ReplyTo, Index: &idx, Chunk: ev.Text, Seq: ev.Seq})
	case agentbridge.EventTextDone:
		if sent, cut := l.interrupted[ev.MessageID]; cut {
			if sent {
				return false // the reply was closed already
			}
			l.interrupted[ev.MessageID] = true
			l.sendReply(ev.MessageID, ev.ReplyTo, ev.Text, ev.Seq, true)
			return false
		}
		l.sendReply(ev.MessageID, ev.ReplyTo, ev.Text, ev.Seq, ev.Interrupted)
	case agentbridge.EventUserSpeechStarted:
		l.send(serverFrame{Type: "speech", State: "started", LegID: ev.LegID, Seq: ev.Seq})
	case agentbridge.EventAgentSpeaking:
		// A caption: shown when its sentence plays. One whose sentence has
		// played (a catch-up after a reload) is not sent.
		if ev.At == nil {
			return false
		}
		startsIn := time.Until(*ev.At).Milliseconds()
		if startsIn+ev.DurationMS <= 0 {
			return false
		}
		l.send(serverFrame{Type: "caption", MessageID: ev.MessageID, ReplyTo: ev.ReplyTo, Text: ev.Text,
			StartsInMS: &startsIn, DurationMS: ev.DurationMS, LegID: ev.LegID, Seq: ev.Seq})
	case agentbridge.EventUserSpeechStopped:
		l.send(serverFrame{Type: "speech", State: "stopped", LegID: ev.LegID, Seq: ev.Seq})
	case agentbridge.EventInterrupt:
		if ev.MessageID != "" {
			// A reply still streaming gets its done frame (interrupted)
			// later; one complete already was shown whole.
			l.interrupted[ev.MessageID] = !l.chunked[ev.MessageID]
		}
		heard := ev.HeardMS
		if heard == nil {
			heard = new(int64)
		}
		l.send(serverFrame{Type: "interrupt", MessageID: ev.MessageID, ReplyTo: ev.ReplyTo, HeardMS: heard,
			HeardText: ev.HeardText, Reason: ev.Reason, LegID: ev.LegID, Seq: ev.Seq})
	case agentbridge.EventAction:
		f, err := l.actionFrame(ev) // navigate: only to the widget's nav map
		if err != nil {
			l.log.Warn("agent action refused", "action", ev.Action, "seq", ev.Seq, "err", err)
			l.sendError(err, "")
			return false
		}
		l.send(f)
	case agentbridge.EventTranscript:
		l.send(serverFrame{Type: "transcript", MessageID: ev.MessageID, Text: ev.Text, Final: ev.Final,
			Via: agentbridge.ModeVoice, Seq: ev.Seq})
	case agentbridge.EventModeChanged:
		ts := ev.TS
		l.send(serverFrame{Type: "mode", Mode: ev.Mode, PreviousMode: ev.PreviousMode, Reason: ev.Reason, Seq: ev.Seq, TS: &ts})
		if ev.Mode == agentbridge.ModeVoice && ev.SessionID == l.sess.ID && l.s.agents.AliveWorkers(l.sess.Agent) == 0 {
			// A call with nobody to answer it: say so as chat does (the
			// dispatch loop, already retrying, has said it once before).
			l.unavailable = true
			l.sendError(broker.ErrAgentUnavailable, "")
		}
	case agentbridge.EventMediaState:
		l.send(serverFrame{Type: "media_state", State: ev.State, LegID: ev.LegID, Reason: ev.Reason, Seq: ev.Seq})
	case agentbridge.EventSessionEnded:
		return ev.SessionID == l.sess.ID
	}
	return false
}

func (l *leg) sendTyping(replyTo string) {
	if replyTo == "" || l.typing[replyTo] {
		return
	}
	l.typing[replyTo] = true
	l.send(serverFrame{Type: "typing", ReplyTo: replyTo})
}

// sendReply sends done, preceded by typing and a chunk if the agent sent
// the reply whole, so every reply has the same frame sequence.
func (l *leg) sendReply(id, replyTo, body string, seq uint64, interrupted bool) {
	if !l.chunked[id] {
		l.sendTyping(replyTo)
		zero := 0
		l.send(serverFrame{Type: "chunk", MessageID: id, ReplyTo: replyTo, Index: &zero, Chunk: body, Seq: seq})
	}
	delete(l.chunked, id)
	delete(l.typing, replyTo)
	l.send(serverFrame{Type: "done", MessageID: id, ReplyTo: replyTo, Body: body, Seq: seq, Interrupted: interrupted})
}
