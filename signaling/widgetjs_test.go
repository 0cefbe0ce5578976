package signaling

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/configs"
)

func TestServeWidgetJS(t *testing.T) {
	t.Parallel()
	s := &Server{}
	get := func(method string, header ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "/widget.js", nil)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		methods{http.MethodGet: s.serveWidgetJS}.ServeHTTP(rec, r)
		return rec
	}
	rec := get(http.MethodGet, "Origin", "https://shop.example")
	h := rec.Header()
	if rec.Code != http.StatusOK || h.Get("Content-Type") != "text/javascript; charset=utf-8" ||
		h.Get("Cache-Control") != widgetJSMaxAge || h.Get("ETag") != widgetJSETag || h.Get("Access-Control-Allow-Origin") != "*" ||
		h.Get("X-Content-Type-Options") != "nosniff" || rec.Body.Len() != len(widgetJS) {
		t.Fatalf("GET: %d %v (%d bytes)", rec.Code, h, rec.Body.Len())
	}
	if !strings.HasPrefix(widgetJSETag, `"`) || len(widgetJSETag) != 26 {
		t.Fatalf("ETag %s is not a quoted strong validator", widgetJSETag)
	}
	for _, inm := range []string{widgetJSETag, "W/" + widgetJSETag, `"nope", ` + widgetJSETag, "*"} {
		if rec := get(http.MethodGet, "If-None-Match", inm); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
			t.Errorf("If-None-Match %s: %d (%d bytes)", inm, rec.Code, rec.Body.Len())
		}
	}
	if rec := get(http.MethodGet, "If-None-Match", `"stale"`); rec.Code != http.StatusOK || rec.Body.Len() != len(widgetJS) {
		t.Errorf("stale If-None-Match: %d", rec.Code)
	}
	if rec := get(http.MethodHead); rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("ETag") == "" {
		t.Errorf("HEAD: %d (%d bytes)", rec.Code, rec.Body.Len())
	}
	if rec := get(http.MethodPost); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

var testNavMap = []configs.NavTarget{
	{ID: "pricing", Path: "/pricing", Selector: "#plans", Label: "Pricing"},
	{ID: "docs", Path: "/docs?tab=api", Label: "API docs"},
}

func TestResolveNavigate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data, want string
	}{
		{"known target", `{"target":"pricing"}`, `{"target":"pricing","path":"/pricing","selector":"#plans","label":"Pricing"}`},
		{"no selector", `{"target":"docs"}`, `{"target":"docs","path":"/docs?tab=api","label":"API docs"}`},
		// Whatever else the agent sends is dropped: the page gets the map's entry.
		{"extra fields ignored", `{"target":"pricing","path":"https://evil.example/","selector":"body"}`,
			`{"target":"pricing","path":"/pricing","selector":"#plans","label":"Pricing"}`},
		{"unknown target", `{"target":"admin"}`, ""},
		{"case matters", `{"target":"Pricing"}`, ""},
		{"a url instead", `{"url":"https://example.com/pricing"}`, ""},
		{"empty target", `{"target":""}`, ""},
		{"target not a string", `{"target":1}`, ""},
		{"not an object", `"pricing"`, ""},
		{"no data", ``, ""},
		{"null", `null`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveNavigate(testNavMap, json.RawMessage(tt.data))
			if tt.want == "" {
				if !errors.Is(err, ErrNavTargetUnknown) {
					t.Fatalf("got %s, %v; want ErrNavTargetUnknown", got, err)
				}
				if w, _ := classify(err); w.code != "NAV_TARGET_UNKNOWN" {
					t.Fatalf("classified as %s", w.code)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %s, %v; want %s", got, err, tt.want)
			}
		})
	}
	if _, err := resolveNavigate(nil, json.RawMessage(`{"target":"pricing"}`)); !errors.Is(err, ErrNavTargetUnknown) {
		t.Fatalf("empty nav map: %v", err)
	}
	// A long unknown target is cut in the message, on a rune boundary.
	_, err := resolveNavigate(testNavMap, json.RawMessage(`{"target":"`+strings.Repeat("é", 100)+`"}`))
	if _, msg := classify(err); len(msg) > 80 || !strings.HasSuffix(msg, `…"`) {
		t.Fatalf("message %q", msg)
	}
}

// FuzzResolveNavigate: an agent's action data is outside input.
func FuzzResolveNavigate(f *testing.F) {
	for _, s := range []string{`{"target":"pricing"}`, `{"target":"x"}`, `{}`, `null`, `[1]`, `{"target":"\u00e9\u00e9"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := resolveNavigate(testNavMap, data)
		if err != nil {
			if !errors.Is(err, ErrNavTargetUnknown) {
				t.Fatalf("error %v is not ErrNavTargetUnknown", err)
			}
			return
		}
		var nd navigateData
		if json.Unmarshal(out, &nd) != nil || (nd.Target != "pricing" && nd.Target != "docs") || !strings.HasPrefix(nd.Path, "/") {
			t.Fatalf("resolved %s from %q", out, data)
		}
	})
}
