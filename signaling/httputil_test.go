package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/configs"
)

type decodeTarget struct {
	Text  string `json:"text"`
	Count int    `json:"count"`
}

func postJSON(body, contentType string) (*httptest.ResponseRecorder, *http.Request) {
	r := httptest.NewRequest(http.MethodPost, "/v1/test", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return httptest.NewRecorder(), r
}

// jsonOfSize returns a JSON object of exactly n bytes (n >= 12).
func jsonOfSize(n int) string {
	const head, tail = `{"text":"`, `"}`
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		contentType string
		body        string
		want        error // nil, ErrBadRequest or ErrPayloadTooLarge
		reason      string
		wantValue   decodeTarget
	}{
		{"ok", "application/json", `{"text":"hi","count":2}`, nil, "", decodeTarget{"hi", 2}},
		{"ok charset", "application/json; charset=utf-8", `{"text":"hi"}`, nil, "", decodeTarget{Text: "hi"}},
		{"ok upper case type", "Application/JSON", `{"text":"hi"}`, nil, "", decodeTarget{Text: "hi"}},
		{"ok no content type", "", `{"text":"hi"}`, nil, "", decodeTarget{Text: "hi"}},
		{"ok surrounding space", "application/json", " \n\t{\"text\":\"hi\"}\r\n ", nil, "", decodeTarget{Text: "hi"}},
		{"unknown field", "application/json", `{"text":"hi","other":1}`, ErrBadRequest, "unknown field", decodeTarget{}},
		{"ok null", "application/json", `null`, nil, "", decodeTarget{}},
		{"ok exactly at the limit", "application/json", jsonOfSize(maxBodyBytes), nil, "", decodeTarget{Text: strings.Repeat("x", maxBodyBytes-11)}},

		{"text/plain", "text/plain", `{"text":"hi"}`, ErrBadRequest, "Content-Type", decodeTarget{}},
		{"form", "application/x-www-form-urlencoded", `text=hi`, ErrBadRequest, "Content-Type", decodeTarget{}},
		{"multipart", "multipart/form-data; boundary=x", `{}`, ErrBadRequest, "Content-Type", decodeTarget{}},
		{"empty body", "application/json", ``, ErrBadRequest, "empty body", decodeTarget{}},
		{"blank body", "application/json", " \n ", ErrBadRequest, "empty body", decodeTarget{}},
		{"truncated", "application/json", `{"text":"hi"`, ErrBadRequest, "invalid JSON", decodeTarget{}},
		{"not JSON", "application/json", `hello`, ErrBadRequest, "invalid JSON", decodeTarget{}},
		{"wrong type", "application/json", `{"count":"two"}`, ErrBadRequest, "invalid JSON", decodeTarget{}},
		{"array", "application/json", `[1,2]`, ErrBadRequest, "invalid JSON", decodeTarget{}},
		{"trailing object", "application/json", `{"text":"a"}{"text":"b"}`, ErrBadRequest, "trailing data", decodeTarget{}},
		{"trailing garbage", "application/json", `{"text":"a"} x`, ErrBadRequest, "trailing data", decodeTarget{}},
		{"trailing brace", "application/json", `{"text":"a"}}`, ErrBadRequest, "trailing data", decodeTarget{}},
		{"trailing number", "application/json", `{} 1`, ErrBadRequest, "trailing data", decodeTarget{}},
		{"too large", "application/json", jsonOfSize(maxBodyBytes + 1), ErrPayloadTooLarge, "body over", decodeTarget{}},
		{"far too large", "application/json", jsonOfSize(4 * maxBodyBytes), ErrPayloadTooLarge, "body over", decodeTarget{}},
		{"too large, invalid", "application/json", `{"text":"` + strings.Repeat("x", 2*maxBodyBytes), ErrPayloadTooLarge, "body over", decodeTarget{}},
	}
	for _, tt := range tests {
		w, r := postJSON(tt.body, tt.contentType)
		var got decodeTarget
		err := decodeJSON(w, r, &got)
		switch {
		case tt.want == nil && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want == nil && got != tt.wantValue:
			t.Errorf("%s: decoded %+v, want %+v", tt.name, got, tt.wantValue)
		case tt.want != nil && !errors.Is(err, tt.want):
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		case tt.want != nil && !strings.Contains(err.Error(), tt.reason):
			t.Errorf("%s: error %q, want it to mention %q", tt.name, err, tt.reason)
		}
		if tt.want == ErrBadRequest && errors.Is(err, ErrPayloadTooLarge) {
			t.Errorf("%s: both bad request and too large", tt.name)
		}
	}
}

func TestDecodeJSONErrorsOnTheWire(t *testing.T) {
	t.Parallel()
	// What a client sees for each decode failure.
	tests := []struct {
		body   string
		status int
		code   string
	}{
		{``, 400, "BAD_REQUEST"},
		{`{`, 400, "BAD_REQUEST"},
		{jsonOfSize(maxBodyBytes + 1), 413, "PAYLOAD_TOO_LARGE"},
	}
	for _, tt := range tests {
		w, r := postJSON(tt.body, "application/json")
		var v decodeTarget
		err := decodeJSON(w, r, &v)
		if err == nil {
			t.Fatalf("%.20q: no error", tt.body)
		}
		rec := httptest.NewRecorder()
		writeError(rec, err)
		if rec.Code != tt.status || !strings.Contains(rec.Body.String(), `"code":"`+tt.code+`"`) {
			t.Errorf("%.20q: %d %s, want %d %s", tt.body, rec.Code, rec.Body, tt.status, tt.code)
		}
	}
}

func TestMethods(t *testing.T) {
	t.Parallel()
	ok := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Handled", r.Method)
			w.WriteHeader(status)
		}
	}
	tests := []struct {
		name    string
		m       methods
		method  string
		status  int
		handled string
		allow   string
	}{
		{"get", methods{http.MethodGet: ok(200), http.MethodPost: ok(201)}, http.MethodGet, 200, "GET", ""},
		{"post", methods{http.MethodGet: ok(200), http.MethodPost: ok(201)}, http.MethodPost, 201, "POST", ""},
		{"head falls back to get", methods{http.MethodGet: ok(200)}, http.MethodHead, 200, "HEAD", ""},
		{"explicit head", methods{http.MethodGet: ok(200), http.MethodHead: ok(204)}, http.MethodHead, 204, "HEAD", ""},
		{"delete not allowed", methods{http.MethodGet: ok(200), http.MethodPost: ok(201)}, http.MethodDelete, 405, "", "GET, POST"},
		{"head without get", methods{http.MethodPost: ok(201)}, http.MethodHead, 405, "", "POST"},
		{"sorted allow", methods{http.MethodPut: ok(200), http.MethodDelete: ok(200), http.MethodGet: ok(200), http.MethodPatch: ok(200)},
			http.MethodPost, 405, "", "DELETE, GET, PATCH, PUT"},
		{"options", methods{http.MethodPost: ok(201)}, http.MethodOptions, 405, "", "POST"},
		{"unknown method", methods{http.MethodGet: ok(200)}, "BREW", 405, "", "GET"},
		{"lower case method", methods{http.MethodGet: ok(200)}, "get", 405, "", "GET"},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		tt.m.ServeHTTP(rec, httptest.NewRequest(tt.method, "/x", nil))
		if rec.Code != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, rec.Code, tt.status)
		}
		if got := rec.Header().Get("X-Handled"); got != tt.handled {
			t.Errorf("%s: handled as %q, want %q", tt.name, got, tt.handled)
		}
		if got := rec.Header().Get("Allow"); got != tt.allow {
			t.Errorf("%s: Allow %q, want %q", tt.name, got, tt.allow)
		}
		if tt.status != 405 {
			continue
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: Content-Type %q", tt.name, ct)
		}
		var body errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Errorf("%s: body %q: %v", tt.name, rec.Body, err)
			continue
		}
		if body.Error.Code != "METHOD_NOT_ALLOWED" || body.Error.Message == "" {
			t.Errorf("%s: error %+v", tt.name, body.Error)
		}
	}
}

func TestBearer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header []string
		want   string
	}{
		{[]string{"Bearer abc"}, "abc"},
		{[]string{"bearer abc"}, "abc"},
		{[]string{"BEARER abc"}, "abc"},
		{[]string{"BeArEr abc.def-ghi_j"}, "abc.def-ghi_j"},
		{[]string{"Bearer   abc  "}, "abc"},
		{[]string{"Bearer abc def"}, "abc def"},
		{[]string{"Bearer st_1", "Bearer st_2"}, "st_1"},
		{nil, ""},
		{[]string{""}, ""},
		{[]string{"Bearer"}, ""},
		{[]string{"Bearer "}, ""},
		{[]string{"Bearer    "}, ""},
		{[]string{"Bearerabc"}, ""},
		{[]string{"Bearer\tabc"}, ""},
		{[]string{"Basic YWxhZGRpbjpvcGVu"}, ""},
		{[]string{"Token abc"}, ""},
		{[]string{"abc"}, ""},
		{[]string{" Bearer abc"}, ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, h := range tt.header {
			r.Header.Add("Authorization", h)
		}
		if got := bearer(r); got != tt.want {
			t.Errorf("bearer(%q) = %q, want %q", tt.header, got, tt.want)
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"text":"hi","count":2}`, ``, `{`, `{}{}`, `null`, `[1]`, `{"count":1e999}`,
		`{"text":"\ud800"}`, "\xff\xfe", `{"text":"a"} `, `"str"`, `{"text":{"nested":[1,2,{"x":null}]}}`,
	} {
		f.Add([]byte(s), "application/json")
	}
	f.Add([]byte(`{}`), "text/plain")
	f.Add([]byte(`{}`), "")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		r.Header["Content-Type"] = []string{contentType}
		var v decodeTarget
		err := decodeJSON(httptest.NewRecorder(), r, &v)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrPayloadTooLarge) {
				t.Fatalf("error %v is neither bad request nor too large", err)
			}
			if we, _ := classify(err); we.status >= 500 {
				t.Fatalf("decode error %v classified as %d", err, we.status)
			}
			return
		}
		if len(body) > maxBodyBytes {
			t.Fatalf("accepted a %d byte body", len(body))
		}
		// Accepted input is one JSON value, and v holds what it says.
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}

// FuzzRequestDecoders feeds arbitrary bodies to the decoder with every
// request type of the API: nothing panics, every refusal is a coded 4xx.
func FuzzRequestDecoders(f *testing.F) {
	for _, s := range []string{
		`{"widget_key":"pk_demo"}`, `{"widget_key":"pk_demo","challenge":"v1.a.b","mode":"voice","language":"pt-BR"}`,
		`{"token":"x","visitor_token":"a.b.c","user_id":"u","user_hash":"00"}`, `{"body":"hi","client_message_id":"c1","wait":true,"upload_ids":["upl_x"]}`,
		`{"mode":"chat"}`, `{"kind":"email","value":"a@b.co","source":"volunteered"}`, `{"origin":"https://a.com","visitor":{"sub":"u"}}`,
		`{"user_id":"u","email":"a@b.co"}`, `{"grace_seconds":60}`, `{"name":"n","scopes":["config:read"],"tenant":"t"}`,
		`{"public_key":"pk_x","allowed_origins":["example.com"],"nav_map":[{"id":"a","path":"/"}],"triggers":[{"type":"exit_intent"}],"translations":{"fr":{}}}`,
		`{"type":"offer","sdp":"v=0"}`, `{"unknown":1}`, `{"body":null}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{&resolveRequest{}, &createSessionRequest{}, &postMessageRequest{}, &modeRequest{},
			&captureRequest{}, &bootstrapRequest{}, &userTokenRequest{}, &rotateRequest{}, &createKeyRequest{},
			&configs.WidgetConfig{}, &sdpJSON{}}
		for _, v := range targets {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
			r.Header.Set("Content-Type", "application/json")
			err := decodeJSON(httptest.NewRecorder(), r, v)
			if err == nil {
				continue
			}
			if we, _ := classify(err); we.status != http.StatusBadRequest && we.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("decoding into %T: %v classified as %d", v, err, we.status)
			}
		}
		// Widgets that decode are validated without panicking.
		var w configs.WidgetConfig
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		if decodeJSON(httptest.NewRecorder(), r, &w) == nil {
			w.Normalize()
			_ = w.Validate()
		}
	})
}

func TestDecodeOptionalJSON(t *testing.T) {
	t.Parallel()
	// No body: nothing decoded, no error; the defaults stay.
	w, r := postJSON("", "application/json")
	got := decodeTarget{Text: "default"}
	if err := decodeOptionalJSON(w, r, &got); err != nil || got != (decodeTarget{Text: "default"}) {
		t.Errorf("empty body: %+v, %v", got, err)
	}
	// A body is decoded as decodeJSON does, refusals included.
	w, r = postJSON(`{"count":3}`, "application/json")
	if err := decodeOptionalJSON(w, r, &got); err != nil || got != (decodeTarget{Text: "default", Count: 3}) {
		t.Errorf("body: %+v, %v", got, err)
	}
	w, r = postJSON(`{"other":1}`, "application/json")
	if err := decodeOptionalJSON(w, r, &got); !errors.Is(err, ErrBadRequest) {
		t.Errorf("unknown field: %v", err)
	}
}

// TestGate: a gated route runs its handler only after auth passed, with
// what auth found; an error of either is written through the error table,
// and a handler that answered is left alone.
func TestGate(t *testing.T) {
	t.Parallel()
	auth := func(r *http.Request) (string, error) {
		if tok := bearer(r); tok != "" {
			return tok, nil
		}
		return "", ErrSessionTokenInvalid
	}
	h := gate(auth, func(w http.ResponseWriter, r *http.Request, who string) error {
		if who == "missing" {
			return fmt.Errorf("%w: no such thing", ErrNotFound)
		}
		w.Header().Set("X-Who", who)
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	tests := []struct {
		token  string
		status int
		code   string
		who    string
	}{
		{"", 401, "SESSION_TOKEN_INVALID", ""},
		{"missing", 404, "NOT_FOUND", ""},
		{"ada", 204, "", "ada"},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if tt.token != "" {
			r.Header.Set("Authorization", "Bearer "+tt.token)
		}
		h(rec, r)
		if rec.Code != tt.status || rec.Header().Get("X-Who") != tt.who {
			t.Errorf("%q: %d who %q, want %d who %q", tt.token, rec.Code, rec.Header().Get("X-Who"), tt.status, tt.who)
		}
		if tt.code != "" && !strings.Contains(rec.Body.String(), `"code":"`+tt.code+`"`) {
			t.Errorf("%q: body %s, want code %s", tt.token, rec.Body, tt.code)
		}
		if tt.code == "" && rec.Body.Len() != 0 {
			t.Errorf("%q: body %s after the handler answered", tt.token, rec.Body)
		}
	}
}
