package assistant

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/parley-rtc/parley/media/speech"
)

// Config is how to reach an OpenAI-compatible chat-completions endpoint.
type Config struct {
	// BaseURL is the API root, as the OpenAI SDKs take it
	// ("https://api.openai.com/v1", "http://127.0.0.1:11434/v1"); requests
	// go to BaseURL + "/chat/completions". A URL with no path gets "/v1".
	BaseURL string
	// Model is the model asked for (DefaultModel when empty).
	Model string
	// Key is sent as "Authorization: Bearer …" when set; KeyFile, if Key is
	// empty, is a file holding it (surrounding white space trimmed). It
	// prints as "[redacted]" everywhere.
	Key     speech.Secret
	KeyFile string
	// Timeout is the longest wait for the answer to start, and then
	// between two pieces of it (DefaultTimeout when zero): a reply may
	// stream for long, but a stalled one fails.
	Timeout time.Duration
	// Client is the HTTP client (default: one with dial and TLS timeouts).
	Client *http.Client
}

// Defaults of Config.
const (
	DefaultModel   = "gpt-4o-mini"
	DefaultTimeout = 30 * time.Second
)

// maxLine caps one Server-Sent Events line (a delta is a few bytes; this
// is room for a provider's verbose chunk, not a body of any size).
const maxLine = 1 << 20

// Message is one chat message of a request.
type Message struct {
	Role    string `json:"role"` // "system", "user" or "assistant"
	Content string `json:"content"`
}

// Client streams chat completions. It is safe for concurrent use.
type Client struct {
	url     string // {base}/chat/completions
	logURL  string // the same without any user:password, for logs
	model   string
	key     speech.Secret
	timeout time.Duration
	http    *http.Client
}

// NewClient checks cfg: an http(s) base URL and, if named, a readable key
// file. It does not call the endpoint.
func NewClient(cfg Config) (*Client, error) {
	base := strings.TrimRight(strings.TrimSpace(cfg.BaseURL), "/")
	u, err := url.Parse(base)
	if base == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("assistant: no http(s) base URL of a chat-completions endpoint")
	}
	if u.Path == "" {
		u.Path = "/v1"
	}
	u.Path += "/chat/completions"
	key := cfg.Key
	if key == "" && cfg.KeyFile != "" {
		b, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("assistant: API key file: %w", err) // the path only, never content
		}
		key = speech.Secret(strings.TrimSpace(string(b)))
	}
	c := &Client{url: u.String(), logURL: u.Redacted(), model: cfg.Model, key: key, timeout: cfg.Timeout, http: cfg.Client}
	if c.model == "" {
		c.model = DefaultModel
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	return c, nil
}

// URL is the endpoint requests go to, without credentials (for logs).
func (c *Client) URL() string { return c.logURL }

// Model is the model asked for.
func (c *Client) Model() string { return c.model }

// HasKey reports whether requests carry a key.
func (c *Client) HasKey() bool { return c.key != "" }

// Close drops idle keep-alive connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// errStalled is the cause a request is cancelled with when the endpoint
// kept it waiting longer than the timeout.
var errStalled = errors.New("assistant: endpoint stalled")

// Stream asks for a completion of msgs and hands each piece of text to
// onDelta as it arrives, in order, from the calling goroutine. It returns
// nil after "data: [DONE]", onDelta's error if it fails, or an *Error. A
// cancelled ctx (a barge-in) ends the request at once with CodeCanceled.
func (c *Client) Stream(ctx context.Context, msgs []Message, onDelta func(string) error) error {
	body, err := json.Marshal(struct {
		Model    string    `json:"model"`
		Messages []Message `json:"messages"`
		Stream   bool      `json:"stream"`
	}{c.model, msgs, true})
	if err != nil {
		return &Error{Code: CodeRejected, Detail: "messages do not encode", Err: err}
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A watchdog, pushed back on every line read: the timeout bounds each
	// wait, not the whole reply.
	watchdog := time.AfterFunc(c.timeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return &Error{Code: CodeDown, Detail: "bad request URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+string(c.key))
	}
	fail := func(err error, status int) error {
		e := &Error{Status: status}
		switch {
		case ctx.Err() != nil:
			e.Code, e.Err = CodeCanceled, ctx.Err()
		case errors.Is(context.Cause(rctx), errStalled):
			e.Code, e.Detail = CodeTimeout, fmt.Sprintf("no answer for %s", c.timeout)
		default:
			e.Code, e.Detail = CodeDown, c.redact(err.Error())
		}
		return e
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fail(err, 0)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		code := CodeRejected
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			code = CodeDown
		}
		return &Error{Code: code, Status: resp.StatusCode, Detail: c.redact(speech.ProviderMessage(b))}
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/json" {
		// A server that ignores "stream": the whole completion at once.
		watchdog.Reset(c.timeout)
		return c.whole(resp, onDelta, fail)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	got := false
	for sc.Scan() {
		watchdog.Reset(c.timeout)
		delta, done, err := parseLine(sc.Bytes())
		if err != nil {
			err.Status, err.Detail = resp.StatusCode, c.redact(err.Detail)
			return err
		}
		if done {
			if !got {
				return &Error{Code: CodeBadResponse, Status: resp.StatusCode, Detail: "the stream ended with no text"}
			}
			return nil
		}
		if delta == "" {
			continue
		}
		got = true
		if err := onDelta(delta); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &Error{Code: CodeBadResponse, Status: resp.StatusCode, Detail: "an event line over 1 MiB"}
		}
		return fail(err, resp.StatusCode)
	}
	if rctx.Err() != nil { // the body ended because the request was cancelled
		return fail(rctx.Err(), resp.StatusCode)
	}
	return &Error{Code: CodeBadResponse, Status: resp.StatusCode, Detail: "the stream ended without data: [DONE]"}
}

// whole reads a non-streamed completion ({"choices":[{"message":{…}}]}).
func (c *Client) whole(resp *http.Response, onDelta func(string) error, fail func(error, int) error) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLine))
	if err != nil {
		return fail(err, resp.StatusCode)
	}
	var r struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal(b, &r) != nil || len(r.Choices) == 0 || r.Choices[0].Message.Content == "" {
		return &Error{Code: CodeBadResponse, Status: resp.StatusCode, Detail: "a JSON answer with no choices[0].message.content"}
	}
	return onDelta(r.Choices[0].Message.Content)
}

// parseLine reads one line of the event stream: the text of a
// "data: {…}" chunk's choices[0].delta.content ("" for a chunk without
// text, a comment, another field or the blank line ending an event), done
// at "data: [DONE]", or a CodeBadResponse error for anything else,
// including an error object sent mid-stream.
func parseLine(line []byte) (delta string, done bool, err *Error) {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return "", false, nil // "", ": keep-alive", "event: …", "id: …"
	}
	data = bytes.TrimSpace(data)
	if string(data) == "[DONE]" {
		return "", true, nil
	}
	var chunk struct {
		Choices []struct {
			Delta struct {
				Content *string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if e := json.Unmarshal(data, &chunk); e != nil {
		return "", false, &Error{Code: CodeBadResponse, Detail: "an event that is not a JSON chunk"}
	}
	if chunk.Error != nil {
		return "", false, &Error{Code: CodeBadResponse, Detail: "error in the stream: " + speech.Printable(chunk.Error.Message)}
	}
	if len(chunk.Choices) == 0 || chunk.Choices[0].Delta.Content == nil {
		return "", false, nil // a role-only first chunk, or usage at the end
	}
	return *chunk.Choices[0].Delta.Content, false, nil
}

// redact removes the key from text the endpoint or the network stack
// wrote (some providers echo a rejected key back).
func (c *Client) redact(s string) string {
	if c.key == "" {
		return s
	}
	return strings.ReplaceAll(s, string(c.key), "[redacted]")
}
