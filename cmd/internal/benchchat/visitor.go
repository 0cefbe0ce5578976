package benchchat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// visitor is one simulated visitor: a session and its WebSocket, with at
// most one message in flight.
type visitor struct {
	r              *runner
	n              int
	id, cid, token string
	conn           *websocket.Conn

	mu      sync.Mutex
	pending *inflight // the message in flight; nil when none
	seq     int       // messages sent
	gone    bool      // the socket closed: nothing more is sent
}

// inflight is a message sent and not yet answered in full.
type inflight struct {
	clientID string
	msgID    string // from its ack
	sent     time.Time
	acked    bool
	chunked  bool
	inWindow bool
	done     chan struct{} // closed by the reader at the reply's done
}

// frame is what the bench reads of a server frame.
type frame struct {
	Type            string `json:"type"`
	MessageID       string `json:"message_id"`
	ClientMessageID string `json:"client_message_id"`
	ReplyTo         string `json:"reply_to"`
	Code            string `json:"code"`
}

// create resolves the widget and creates a chat session.
func (v *visitor) create(ctx context.Context) error {
	var res struct {
		Challenge string `json:"challenge"`
	}
	if err := v.r.postJSON(ctx, v.base(), "/v1/widget/resolve", map[string]string{"widget_key": widgetKey}, &res); err != nil {
		return err
	}
	var cr struct {
		SessionID      string `json:"session_id"`
		ConversationID string `json:"conversation_id"`
		SessionToken   string `json:"session_token"`
	}
	if err := v.r.postJSON(ctx, v.base(), "/v1/sessions", map[string]string{"widget_key": widgetKey,
		"challenge": res.Challenge, "mode": "chat"}, &cr); err != nil {
		return err
	}
	v.id, v.cid, v.token = cr.SessionID, cr.ConversationID, cr.SessionToken
	return nil
}

// dial opens the session's WebSocket and starts its reader (owned by the
// runner's readers group).
func (v *visitor) dial(ctx context.Context) error {
	u := strings.Replace(v.base(), "http", "ws", 1) + "/v1/sessions/" + v.id + "/ws?token=" + url.QueryEscape(v.token)
	c, res, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: v.r.client,
		HTTPHeader: http.Header{"Origin": {origin}}})
	if err != nil {
		if res != nil {
			return fmt.Errorf("websocket: %s: %w", res.Status, err)
		}
		return fmt.Errorf("websocket: %w", err)
	}
	v.conn = c
	v.r.readers.Add(1)
	go func() {
		defer v.r.readers.Done()
		v.read()
	}()
	return nil
}

// read handles the socket's frames until it closes.
func (v *visitor) read() {
	for {
		_, data, err := v.conn.Read(context.Background())
		if err != nil {
			v.mu.Lock()
			p := v.pending
			v.pending, v.gone = nil, true
			v.mu.Unlock()
			if p != nil {
				v.r.stats.lost(p.inWindow)
				close(p.done)
			}
			return
		}
		var f frame
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		now := time.Now()
		v.mu.Lock()
		p := v.pending
		var finished *inflight
		switch {
		case p == nil:
		case f.Type == "ack" && f.ClientMessageID == p.clientID:
			p.msgID, p.acked = f.MessageID, true
			v.r.stats.ack(now.Sub(p.sent), p.inWindow)
		case (f.Type == "chunk" || f.Type == "done") && p.msgID != "" && f.ReplyTo == p.msgID:
			if !p.chunked {
				p.chunked = true
				v.r.stats.firstChunk(now.Sub(p.sent), p.inWindow)
			}
			if f.Type == "done" {
				v.r.stats.answered(p.inWindow)
				finished, v.pending = p, nil
			}
		case f.Type == "error":
			v.r.stats.errorFrame(f.Code, p.inWindow)
			if f.ClientMessageID == p.clientID && !p.acked {
				finished, v.pending = p, nil // refused: nothing stored
			}
		}
		v.mu.Unlock()
		if finished != nil {
			close(finished.done)
		}
	}
}

// send sends a message unless one is in flight; it reports whether it
// sent one.
func (v *visitor) send(ctx context.Context, inWindow bool) (*inflight, bool, error) {
	v.mu.Lock()
	if v.gone {
		v.mu.Unlock()
		return nil, false, errors.New("the WebSocket closed")
	}
	if v.pending != nil {
		v.mu.Unlock()
		return nil, false, nil
	}
	v.seq++
	p := &inflight{clientID: fmt.Sprintf("b%d-%d", v.n, v.seq), sent: time.Now(), inWindow: inWindow, done: make(chan struct{})}
	v.pending = p
	v.mu.Unlock()
	body, _ := json.Marshal(map[string]string{"type": "message", "body": fmt.Sprintf("message %d of visitor %d", v.seq, v.n),
		"client_message_id": p.clientID})
	if err := v.conn.Write(ctx, websocket.MessageText, body); err != nil {
		v.mu.Lock()
		if v.pending == p {
			v.pending = nil
		}
		v.mu.Unlock()
		return nil, false, err
	}
	return p, true, nil
}

// close closes the socket; the reader then ends.
func (v *visitor) close() {
	if v.conn != nil {
		_ = v.conn.Close(websocket.StatusNormalClosure, "bench done")
	}
}

// base is the broker the visitor talks to: visitors are spread round
// robin over the brokers, as a load balancer would.
func (v *visitor) base() string { return v.r.bases[v.n%len(v.r.bases)] }

// postJSON posts body as JSON to base+path and decodes a 2xx answer into
// out.
func (r *runner) postJSON(ctx context.Context, base, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", origin)
	res, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %d %s", path, res.StatusCode, bytes.TrimSpace(data))
	}
	return json.Unmarshal(data, out)
}
