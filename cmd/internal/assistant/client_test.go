package assistant

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestParseLine: the lines of an event stream, as OpenAI-compatible
// servers send them.
func TestParseLine(t *testing.T) {
	for _, c := range []struct {
		line  string
		delta string
		done  bool
		code  Code
	}{
		{line: ""},
		{line: ": keep-alive"},
		{line: "event: message"},
		{line: `data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}`},
		{line: `data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}`, delta: "Hi"},
		{line: `data:{"choices":[{"delta":{"content":" there"}}]}`, delta: " there"},
		{line: `data: {"choices":[],"usage":{"total_tokens":9}}`},
		{line: "data: [DONE]", done: true},
		{line: "data: [DONE] ", done: true},
		{line: "data: <html>", code: CodeBadResponse},
		{line: `data: {"error":{"message":"overloaded"}}`, code: CodeBadResponse},
	} {
		delta, done, err := parseLine([]byte(c.line))
		var code Code
		if err != nil {
			code = err.Code
		}
		if delta != c.delta || done != c.done || code != c.code {
			t.Errorf("%q: (%q, %v, %q), want (%q, %v, %q)", c.line, delta, done, code, c.delta, c.done, c.code)
		}
	}
}

// FuzzParseLine: any line from the endpoint gives text, done or an error
// with a code, never a panic.
func FuzzParseLine(f *testing.F) {
	f.Add([]byte(`data: {"choices":[{"delta":{"content":"Hi"}}]}`))
	f.Add([]byte("data: [DONE]"))
	f.Add([]byte(`data: {"error":{"message":"x"}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		delta, done, err := parseLine(line)
		if err != nil && (err.Code == "" || delta != "" || done) {
			t.Fatalf("error %v with delta %q done %v", err, delta, done)
		}
	})
}

// TestClientEdges: the URL rules, the key file, a non-streamed JSON
// answer, an endpoint that refuses connections.
func TestClientEdges(t *testing.T) {
	if _, err := NewClient(Config{BaseURL: "127.0.0.1:8000"}); err == nil {
		t.Error("a base URL without a scheme was accepted")
	}
	var gotPath, gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotAuth = r.URL.Path, r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"choices":[{"message":{"role":"assistant","content":"All at once."}}]}`)
	}))
	defer srv.Close()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(" sk-file-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(Config{BaseURL: srv.URL + "/", KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got strings.Builder
	if err := c.Stream(context.Background(), []Message{{Role: "user", Content: "hi"}}, func(d string) error {
		got.WriteString(d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got.String() != "All at once." || gotPath != "/v1/chat/completions" || gotAuth != "Bearer sk-file-key" {
		t.Errorf("text %q, path %q, key from the file %v", got.String(), gotPath, gotAuth == "Bearer sk-file-key")
	}
	if _, err := NewClient(Config{BaseURL: srv.URL, KeyFile: keyFile + ".missing"}); err == nil {
		t.Error("a missing key file was accepted")
	}

	srv.Close() // nothing listens there now
	c, err = NewClient(Config{BaseURL: srv.URL + "/v1", Key: "sk-secret", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Stream(context.Background(), nil, func(string) error { return nil })
	if !errors.Is(err, ErrDown) || CodeOf(err) != CodeDown || strings.Contains(err.Error(), "sk-secret") {
		t.Fatalf("refused connection: %v (code %q)", err, CodeOf(err))
	}
}
