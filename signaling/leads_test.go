package signaling_test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

func TestCaptureLeads(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	s := e.newSession(nil)
	auth := []string{"Authorization", "Bearer " + s.Token}
	path := "/v1/sessions/" + s.ID + "/captures"

	r := e.do("POST", path, map[string]any{"kind": "email", "value": "Jane@Example.com", "source": "volunteered"}, auth...)
	if r.status != http.StatusCreated || r.str("value") != "jane@example.com" || r.str("id") == "" ||
		r.str("conversation_id") != s.ConversationID || r.str("widget_id") != "wdg_demo" {
		t.Fatalf("capture: %d %s", r.status, r.raw)
	}
	leadID := r.str("id")

	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"bad email", map[string]any{"kind": "email", "value": "jane at example", "source": "volunteered"}},
		{"email without a dot in the domain", map[string]any{"kind": "email", "value": "jane@localhost", "source": "volunteered"}},
		{"display-name email", map[string]any{"kind": "email", "value": "Jane <jane@example.com>", "source": "volunteered"}},
		{"kind ssn", map[string]any{"kind": "ssn", "value": "123-45-6789", "source": "volunteered"}},
		{"source guess", map[string]any{"kind": "email", "value": "jane@example.com", "source": "guess"}},
		{"phone with letters", map[string]any{"kind": "phone", "value": "call me", "source": "agent_asked"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectErr(t, tc.name, e.do("POST", path, tc.body, auth...), 422, "VALIDATION_FAILED")
		})
	}
	expectErr(t, "no token", e.do("POST", path, map[string]any{"kind": "name", "value": "Jane", "source": "volunteered"}), 401, "SESSION_TOKEN_INVALID")
	expectErr(t, "unknown field", e.do("POST", path, map[string]any{"kind": "name", "value": "Jane", "source": "volunteered", "x": 1}, auth...), 400, "BAD_REQUEST")

	// The agent gets it as a capture event in the log.
	var captures []agentbridge.Event
	for _, ev := range e.readLog(s.ConversationID) {
		if ev.Type == agentbridge.EventCapture {
			captures = append(captures, ev)
		}
	}
	if len(captures) != 1 {
		t.Fatalf("%d capture events, want 1 (refused captures must not be logged)", len(captures))
	}
	var data map[string]string
	if err := json.Unmarshal(captures[0].Data, &data); err != nil {
		t.Fatal(err)
	}
	if data["lead_id"] != leadID || data["kind"] != "email" || data["value"] != "jane@example.com" || data["source"] != "volunteered" ||
		captures[0].SessionID != s.ID {
		t.Fatalf("capture event = %+v, data %v", captures[0], data)
	}

	// And the admin sees the lead.
	ak, _ := e.newAdminKey("", broker.ScopeOpsRead)
	r = e.do("GET", "/v1/admin/leads?widget=wdg_demo", nil, "Authorization", "Bearer "+ak)
	leads, _ := r.body["leads"].([]any)
	if r.status != http.StatusOK || len(leads) != 1 {
		t.Fatalf("leads: %d %s", r.status, r.raw)
	}
	if l := leads[0].(map[string]any); l["id"] != leadID || l["value"] != "jane@example.com" || l["conversation_id"] != s.ConversationID {
		t.Fatalf("lead = %v", l)
	}
}

// multipartFile builds a multipart/form-data body with one part.
func multipartFile(t testing.TB, field, name, contentType string, data []byte) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="`+field+`"; filename="`+name+`"`)
	h.Set("Content-Type", contentType)
	part, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := part.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.String()
}

func (e *env) upload(s session, name, claimedType string, data []byte) response {
	e.t.Helper()
	ct, body := multipartFile(e.t, "file", name, claimedType, data)
	return e.doRaw("POST", "/v1/sessions/"+s.ID+"/uploads", ct, body, "Authorization", "Bearer "+s.Token)
}

func tinyPNG(t testing.TB) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	img.Set(0, 0, color.RGBA{R: 255, A: 255})
	img.Set(1, 1, color.RGBA{B: 255, A: 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUploads(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *configs.Config) { c.Limits.MaxUploadBytes = 4096 })
	s := e.newSession(nil)

	pic := tinyPNG(t)
	r := e.upload(s, "dot.png", "application/octet-stream", pic) // the type is sniffed, not believed
	if r.status != http.StatusCreated || r.str("content_type") != "image/png" || r.str("file_name") != "dot.png" ||
		r.body["size_bytes"] != float64(len(pic)) || !strings.HasPrefix(r.str("upload_id"), "upl_") {
		t.Fatalf("png upload: %d %s", r.status, r.raw)
	}
	picID := r.str("upload_id")

	r = e.upload(s, "notes.txt", "text/plain", []byte("a few plain words\n"))
	if r.status != http.StatusCreated || !strings.HasPrefix(r.str("content_type"), "text/plain") {
		t.Fatalf("text upload: %d %s", r.status, r.raw)
	}
	r = e.upload(s, `..\..\etc/passwd`, "text/plain", []byte("root"))
	if r.status != http.StatusCreated || r.str("file_name") != "passwd" {
		t.Fatalf("path in the file name: %d %s", r.status, r.raw)
	}

	elf := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 120)...)
	mz := append([]byte("MZ\x90\x00\x03\x00\x00\x00"), make([]byte, 120)...)
	for _, tc := range []struct {
		name, file, claimed string
		data                []byte
		status              int
		code                string
	}{
		{"ELF binary", "a.out", "application/octet-stream", elf, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"ELF claiming to be a PNG", "cat.png", "image/png", elf, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"MZ executable", "setup.exe", "application/octet-stream", mz, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"over max_upload_bytes", "big.txt", "text/plain", bytes.Repeat([]byte("x"), 5000), 413, "PAYLOAD_TOO_LARGE"},
		{"empty", "empty.txt", "text/plain", nil, 422, "VALIDATION_FAILED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectErr(t, tc.name, e.upload(s, tc.file, tc.claimed, tc.data), tc.status, tc.code)
		})
	}
	ct, body := multipartFile(t, "attachment", "dot.png", "image/png", pic)
	r = e.doRaw("POST", "/v1/sessions/"+s.ID+"/uploads", ct, body, "Authorization", "Bearer "+s.Token)
	expectErr(t, "no file part", r, 422, "VALIDATION_FAILED")
	r = e.doRaw("POST", "/v1/sessions/"+s.ID+"/uploads", "application/json", `{}`, "Authorization", "Bearer "+s.Token)
	expectErr(t, "not multipart", r, 415, "UNSUPPORTED_MEDIA_TYPE")
	r = e.doRaw("POST", "/v1/sessions/"+s.ID+"/uploads", ct, body)
	expectErr(t, "no session token", r, 401, "SESSION_TOKEN_INVALID")

	// A message carries the upload to the agent.
	r = e.do("POST", "/v1/sessions/"+s.ID+"/messages",
		map[string]any{"body": "see the picture", "client_message_id": "up-1", "upload_ids": []string{picID}},
		"Authorization", "Bearer "+s.Token)
	if r.status != http.StatusAccepted {
		t.Fatalf("message with upload: %d %s", r.status, r.raw)
	}
	var msg *agentbridge.Event
	for _, ev := range e.readLog(s.ConversationID) {
		if ev.Type == agentbridge.EventUserMessage && ev.ClientMessageID == "up-1" {
			msg = &ev
		}
	}
	want := agentbridge.Attachment{UploadID: picID, Name: "dot.png", ContentType: "image/png", Size: uint64(len(pic))}
	if msg == nil || len(msg.Attachments) != 1 || msg.Attachments[0] != want {
		t.Fatalf("user_message = %+v, want attachment %+v", msg, want)
	}

	// Only this conversation's uploads can be attached.
	other := e.newSession(nil)
	otherPic := e.upload(other, "other.png", "image/png", pic).str("upload_id")
	for name, id := range map[string]string{"unknown upload": "upl_doesnotexist", "malformed id": "../x",
		"another conversation's upload": otherPic} {
		r := e.do("POST", "/v1/sessions/"+s.ID+"/messages",
			map[string]any{"body": "attached", "upload_ids": []string{id}}, "Authorization", "Bearer "+s.Token)
		expectErr(t, name, r, 422, "VALIDATION_FAILED")
	}
}
