package signalingtest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Client sends requests to the edge at Base ("http://127.0.0.1:port") on
// behalf of the test T, failing it when a request cannot be sent. A
// status the test did not want is the test's to check.
type Client struct {
	T    testing.TB
	Base string
	// MetricsKey is an admin key of every tenant with ops:read, which
	// Scrape sends: /metrics is not public.
	MetricsKey string
}

// Response is a decoded HTTP response: Body is the JSON object answered
// (nil when the answer is not one), Raw the body as sent.
type Response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

// ErrCode is the code of an error answer ({"error": {"code": …}}), or "".
func (r Response) ErrCode() string {
	if e, ok := r.Body["error"].(map[string]any); ok {
		code, _ := e["code"].(string)
		return code
	}
	return ""
}

// Str is the string field key of the body, or "".
func (r Response) Str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

// Do sends a request; body may be a string (sent raw) or a value (JSON),
// and headers are name, value, … pairs.
func (c *Client) Do(method, path string, body any, headers ...string) Response {
	c.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			c.T.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	contentType := ""
	if rd != nil {
		contentType = "application/json"
	}
	return c.Send(method, path, contentType, rd, headers...)
}

// DoRaw sends a body with an explicit content type ("" sends none). Its
// response has a Body only when the answer says it is JSON, so that a test
// of an SDP or file answer cannot mistake it for an API object.
func (c *Client) DoRaw(method, path, contentType, body string, headers ...string) Response {
	c.T.Helper()
	r := c.Send(method, path, contentType, strings.NewReader(body), headers...)
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		r.Body = nil
	}
	return r
}

// Send sends a request with body rd (none if nil) of contentType (no
// header if empty) and headers (name, value, …), and decodes a JSON
// answer into the response's body.
func (c *Client) Send(method, path, contentType string, rd io.Reader, headers ...string) Response {
	c.T.Helper()
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		c.T.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := Response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r.Body) // not JSON: body stays nil
	}
	return r
}
