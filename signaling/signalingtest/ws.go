package signalingtest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// WSClient is a session's WebSocket as a test sees it: JSON frames in and
// out, each read or write failing the test rather than hanging it.
type WSClient struct {
	T    testing.TB
	Conn *websocket.Conn
}

// Frame is one JSON frame.
type Frame map[string]any

// Str is the string field k of the frame, or "".
func (f Frame) Str(k string) string { s, _ := f[k].(string); return s }

// DialWS opens s's WebSocket with query appended to its URL, from
// DemoOrigin unless headers (name, value, …) say otherwise; an empty
// value removes that header. The socket closes when the test ends.
func (c *Client) DialWS(s Session, query string, headers ...string) (*WSClient, *http.Response, error) {
	c.T.Helper()
	h := http.Header{"Origin": {DemoOrigin}}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			h.Del(headers[i])
			continue
		}
		h.Set(headers[i], headers[i+1])
	}
	url := "ws" + strings.TrimPrefix(c.Base, "http") + "/v1/sessions/" + s.ID + "/ws?token=" + s.Token + query
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, res, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return nil, res, err
	}
	ws := &WSClient{T: c.T, Conn: conn}
	c.T.Cleanup(func() { conn.CloseNow() })
	return ws, res, nil
}

// MustDialWS opens s's WebSocket and reads its first frame, which must be
// the session frame.
func (c *Client) MustDialWS(s Session) *WSClient {
	c.T.Helper()
	ws, _, err := c.DialWS(s, "")
	if err != nil {
		c.T.Fatalf("dial ws: %v", err)
	}
	if f := ws.Next(); f.Str("type") != "session" {
		c.T.Fatalf("first frame = %v, want session", f)
	}
	return ws
}

// Send writes v as a JSON frame.
func (c *WSClient) Send(v any) {
	c.T.Helper()
	data, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Conn.Write(ctx, websocket.MessageText, data); err != nil {
		c.T.Fatalf("ws write: %v", err)
	}
}

// Read returns the next frame or the error that ended the socket.
func (c *WSClient) Read(timeout time.Duration) (Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, data, err := c.Conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	return f, nil
}

// Next returns the next frame, failing the test if none comes within 15 s.
func (c *WSClient) Next() Frame {
	c.T.Helper()
	f, err := c.Read(15 * time.Second)
	if err != nil {
		c.T.Fatalf("ws read: %v", err)
	}
	return f
}

// Until reads frames until one of type typ (returned) and returns those
// before it too.
func (c *WSClient) Until(typ string) (Frame, []Frame) {
	c.T.Helper()
	var before []Frame
	for {
		f := c.Next()
		if f.Str("type") == typ {
			return f, before
		}
		before = append(before, f)
	}
}

// CloseStatus waits for the server to close the socket and returns the
// code and reason.
func (c *WSClient) CloseStatus() (websocket.StatusCode, string) {
	c.T.Helper()
	for {
		_, err := c.Read(15 * time.Second)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.T.Fatalf("socket ended without a close frame: %v", err)
		}
		return ce.Code, ce.Reason
	}
}

// ExpectReply reads the frames answering one message sent on the socket
// and checks their order: ack, typing, chunk…, done; want is the reply's
// whole body, which must come in at least one chunk.
func ExpectReply(t testing.TB, c *WSClient, clientID, want string) (userID, replyID string) {
	t.Helper()
	ack := c.Next()
	if ack.Str("type") != "ack" || ack.Str("client_message_id") != clientID || ack.Str("message_id") == "" {
		t.Fatalf("first frame = %v, want ack for %s", ack, clientID)
	}
	userID = ack.Str("message_id")
	typing := c.Next()
	if typing.Str("type") != "typing" || typing.Str("reply_to") != userID {
		t.Fatalf("second frame = %v, want typing for %s", typing, userID)
	}
	var chunks strings.Builder
	index := 0.0
	for {
		f := c.Next()
		switch f.Str("type") {
		case "chunk":
			if f["index"] != index || f.Str("reply_to") != userID {
				t.Fatalf("chunk = %v, want index %v reply_to %s", f, index, userID)
			}
			index++
			chunks.WriteString(f.Str("chunk"))
			replyID = f.Str("message_id")
			continue
		case "done":
			if index < 1 {
				t.Fatalf("done before any chunk: %v", f)
			}
			if f.Str("body") != want || chunks.String() != want || f.Str("message_id") != replyID {
				t.Fatalf("done = %v (chunks %q), want body %q", f, chunks.String(), want)
			}
			return userID, replyID
		default:
			t.Fatalf("unexpected frame %v while streaming a reply", f)
		}
	}
}
