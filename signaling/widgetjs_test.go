package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

func TestServeWidgetJS(t *testing.T) {
	t.Parallel()
	s := &Server{}
	get := scriptGetter("/widget.js", s.serveWidgetJS)
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
	checkScriptRequests(t, get, widgetJSETag, len(widgetJS))
}

// scriptGetter requests a served script with method and header pairs.
func scriptGetter(path string, handler http.HandlerFunc) func(method string, header ...string) *httptest.ResponseRecorder {
	return func(method string, header ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		methods{http.MethodGet: handler}.ServeHTTP(rec, r)
		return rec
	}
}

// checkScriptRequests checks a served script's conditional, HEAD and
// refused requests: a matching If-None-Match (strong, weak, in a list, *)
// is a 304 with no body, a stale one the whole script (size bytes), HEAD
// the headers only, POST 405.
func checkScriptRequests(t *testing.T, get func(string, ...string) *httptest.ResponseRecorder, etag string, size int) {
	t.Helper()
	for _, inm := range []string{etag, "W/" + etag, `"nope", ` + etag, "*"} {
		if rec := get(http.MethodGet, "If-None-Match", inm); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
			t.Errorf("If-None-Match %s: %d (%d bytes)", inm, rec.Code, rec.Body.Len())
		}
	}
	if rec := get(http.MethodGet, "If-None-Match", `"stale"`); rec.Code != http.StatusOK || rec.Body.Len() != size {
		t.Errorf("stale If-None-Match: %d", rec.Code)
	}
	if rec := get(http.MethodHead); rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("ETag") == "" {
		t.Errorf("HEAD: %d (%d bytes)", rec.Code, rec.Body.Len())
	}
	if rec := get(http.MethodPost); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

// TestWidgetJSParts: the embedded parts are the files in static/widget/,
// each once, small, in the documented order, and each declares names none
// of the others declares (in one function scope a second function of the
// same name silently wins; a second const is a syntax error in the browser).
func TestWidgetJSParts(t *testing.T) {
	t.Parallel()
	parts := widgetParts()
	var names []string
	for _, p := range parts {
		names = append(names, p.name)
	}
	files, err := filepath.Glob(filepath.Join("static", "widget", "*.js"))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	if a, b := slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(files)); !slices.Equal(a, b) {
		t.Fatalf("parts %v, files in static/widget %v: every file must be joined, once", a, b)
	}
	if names[0] != "setup.js" || names[len(names)-1] != "main.js" {
		t.Fatalf("order %v: setup.js must come first (it may stop the script) and main.js last (it starts it)", names)
	}

	decl := regexp.MustCompile(`(?m)^(?:async\s+)?(?:function\*?|const|let|var|class)\s+([A-Za-z_$][\w$]*)`)
	exports := regexp.MustCompile(`window\.([A-Za-z_$][\w$]*)\s*=[^=]`)
	declaredIn := map[string]string{}
	exported := map[string]bool{}
	for _, p := range parts {
		onDisk, err := os.ReadFile(filepath.Join("static", "widget", p.name))
		if err != nil || string(onDisk) != p.src {
			t.Fatalf("%s: the embedded source is not the file's (%v)", p.name, err)
		}
		if n := strings.Count(p.src, "\n"); n > 500 {
			t.Errorf("%s: %d lines; keep a part under ~500", p.name, n)
		}
		if !strings.HasPrefix(p.src, "// "+p.name+" ") {
			t.Errorf("%s does not open with a comment saying what it owns", p.name)
		}
		// The wrapper is the only function around the parts: a part in its
		// own IIFE would hide its names from the others.
		for _, s := range []string{`"use strict"`, "\n(() => {", "\n})();"} {
			if strings.Contains(p.src, s) {
				t.Errorf("%s contains %q: the server adds the wrapper", p.name, s)
			}
		}
		for _, m := range decl.FindAllStringSubmatch(p.src, -1) {
			if other, ok := declaredIn[m[1]]; ok {
				t.Errorf("%s is declared at the top of both %s and %s", m[1], other, p.name)
			}
			declaredIn[m[1]] = p.name
		}
		for _, m := range exports.FindAllStringSubmatch(p.src, -1) {
			exported[m[1]] = true
		}
	}
	// The declarations were found where they live (so the check above saw them).
	for name, part := range map[string]string{"st": "setup.js", "T": "texts.js", "api": "protocol.js", "connect": "protocol.js",
		"onFrame": "conversation.js", "navigateTo": "page.js", "startCall": "voice.js", "build": "ui.js", "boot": "main.js"} {
		if declaredIn[name] != part {
			t.Errorf("%s: declared in %q, want %s", name, declaredIn[name], part)
		}
	}
	// Nothing but window.Parley reaches the page.
	if got := slices.Sorted(maps.Keys(exported)); !slices.Equal(got, []string{"Parley"}) {
		t.Errorf("the parts assign window.%v; want only window.Parley", got)
	}
}

// TestWidgetJSJoin: the served script is the parts in order inside one
// strict-mode IIFE, and its strong ETag is over the joined bytes, so a
// change to any part is a new ETag.
func TestWidgetJSJoin(t *testing.T) {
	t.Parallel()
	parts := widgetParts()
	js, etag := joinWidgetJS(parts)
	if !bytes.Equal(js, widgetJS) || etag != widgetJSETag {
		t.Fatal("joining the same parts again gave other bytes or another ETag")
	}
	s := string(js)
	if !strings.HasPrefix(s, "/*!\n") || !strings.HasPrefix(s, widgetJSHead) || !strings.HasSuffix(s, "\n})();\n") {
		t.Fatalf("not the notice and one IIFE: starts %q, ends %q", s[:min(len(s), 40)], s[max(0, len(s)-20):])
	}
	for sub, want := range map[string]int{"\n(() => {\n": 1, "\n})();": 1, `"use strict";`: 1} {
		if n := strings.Count(s, sub); n != want {
			t.Errorf("%q appears %d times in the joined script, want %d", sub, n, want)
		}
	}
	at := strings.Index(s, "\n(() => {\n\"use strict\";\n")
	last := at
	for _, p := range parts {
		i := strings.Index(s, "\n// ---- "+p.name+" ----\n"+p.src)
		if i <= last || strings.Count(s, p.src) != 1 {
			t.Fatalf("%s: at %d after %d, %d times; want once, in order, inside the IIFE (at %d)", p.name, i, last, strings.Count(s, p.src), at)
		}
		last = i
	}
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || strings.HasPrefix(etag, "W/") || len(etag) != 26 {
		t.Fatalf("ETag %s is not a quoted strong validator", etag)
	}
	// Any change to any part, even one byte, is a new ETag.
	for i := range parts {
		changed := slices.Clone(parts)
		changed[i].src += " "
		js2, etag2 := joinWidgetJS(changed)
		if etag2 == etag || bytes.Equal(js2, js) {
			t.Errorf("a change to %s kept the ETag %s", parts[i].name, etag)
		}
	}
	// So is a change of order.
	swapped := slices.Clone(parts)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	if _, etag2 := joinWidgetJS(swapped); etag2 == etag {
		t.Error("another order kept the ETag")
	}
}

// TestWidgetJSUnheardTexts: every code the broker gives a voice turn it
// could not hear has its own words in the widget (texts.js, in English at
// least), so the visitor is told why, not a generic line.
func TestWidgetJSUnheardTexts(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join("static", "widget", "texts.js"))
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(src), "\n    unheard: {\n")
	end := strings.Index(string(src), "\n  fr: {")
	if start < 0 || end < start {
		t.Fatal("texts.js: no unheard texts in the English strings")
	}
	en := string(src[start:end])
	for _, code := range []string{broker.UnheardUnavailable, broker.UnheardDown, broker.UnheardTimeout, broker.UnheardBusy, broker.UnheardFailed} {
		if !regexp.MustCompile(`\n\s+` + code + `: "Sorry — [^"]+",\n`).MatchString(en) {
			t.Errorf("texts.js: no English text for %s", code)
		}
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
