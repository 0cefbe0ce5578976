package signaling_test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

func TestCaptureLeads(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	s := e.NewSession(nil)
	auth := []string{"Authorization", "Bearer " + s.Token}
	path := "/v1/sessions/" + s.ID + "/captures"

	r := e.Do("POST", path, map[string]any{"kind": "email", "value": "Jane@Example.com", "source": "volunteered"}, auth...)
	if r.Status != http.StatusCreated || r.Str("value") != "jane@example.com" || r.Str("id") == "" ||
		r.Str("conversation_id") != s.ConversationID || r.Str("widget_id") != "wdg_demo" {
		t.Fatalf("capture: %d %s", r.Status, r.Raw)
	}
	leadID := r.Str("id")

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
		{"name with a line break", map[string]any{"kind": "name", "value": "Jane\nDoe", "source": "volunteered"}},
		{"name with a carriage return", map[string]any{"kind": "name", "value": "Jane\r\nFORGED: admin", "source": "volunteered"}},
		{"name with a right-to-left override", map[string]any{"kind": "name", "value": "Jane \u202eeoD", "source": "volunteered"}},
		{"name with a zero-width space", map[string]any{"kind": "name", "value": "Ja\u200bne", "source": "volunteered"}},
		{"name with a line separator", map[string]any{"kind": "name", "value": "Jane\u2028Doe", "source": "volunteered"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signalingtest.ExpectErr(t, tc.name, e.Do("POST", path, tc.body, auth...), 422, "VALIDATION_FAILED")
		})
	}
	signalingtest.ExpectErr(t, "no token", e.Do("POST", path, map[string]any{"kind": "name", "value": "Jane", "source": "volunteered"}), 401, "SESSION_TOKEN_INVALID")
	signalingtest.ExpectErr(t, "unknown field", e.Do("POST", path, map[string]any{"kind": "name", "value": "Jane", "source": "volunteered", "x": 1}, auth...), 400, "BAD_REQUEST")

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
	r = e.Do("GET", "/v1/admin/leads?widget=wdg_demo", nil, "Authorization", "Bearer "+ak)
	leads, _ := r.Body["leads"].([]any)
	if r.Status != http.StatusOK || len(leads) != 1 {
		t.Fatalf("leads: %d %s", r.Status, r.Raw)
	}
	if l := leads[0].(map[string]any); l["id"] != leadID || l["value"] != "jane@example.com" || l["conversation_id"] != s.ConversationID {
		t.Fatalf("lead = %v", l)
	}
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
	s := e.NewSession(nil)

	pic := tinyPNG(t)
	r := e.Upload(s, "dot.png", "application/octet-stream", pic) // the type is sniffed, not believed
	if r.Status != http.StatusCreated || r.Str("content_type") != "image/png" || r.Str("file_name") != "dot.png" ||
		r.Body["size_bytes"] != float64(len(pic)) || !strings.HasPrefix(r.Str("upload_id"), "upl_") {
		t.Fatalf("png upload: %d %s", r.Status, r.Raw)
	}
	picID := r.Str("upload_id")

	r = e.Upload(s, "notes.txt", "text/plain", []byte("a few plain words\n"))
	if r.Status != http.StatusCreated || !strings.HasPrefix(r.Str("content_type"), "text/plain") {
		t.Fatalf("text upload: %d %s", r.Status, r.Raw)
	}
	r = e.Upload(s, `..\..\etc/passwd`, "text/plain", []byte("root"))
	if r.Status != http.StatusCreated || r.Str("file_name") != "passwd" {
		t.Fatalf("path in the file name: %d %s", r.Status, r.Raw)
	}
	// Names that name no file, or would forge lines or reverse text where
	// people read them; filename* is RFC 2231 (percent-encoded UTF-8).
	for _, tc := range []struct{ disposition, want string }{
		{`filename=".."`, "upload"},
		{`filename="a/.."`, "upload"},
		{`filename="."`, "upload"},
		{`filename*=UTF-8''a%0D%0Ab.txt`, "ab.txt"},
		{`filename*=UTF-8''invoice%E2%80%AEtxt.exe`, "invoicetxt.exe"},
		{`filename*=UTF-8''..%2F..%2Fsecret.txt`, "secret.txt"},
		{`filename*=UTF-8''%E2%80%8B%E2%80%A8.txt`, "txt"},
	} {
		ct, body := signalingtest.MultipartDisposition(t, `form-data; name="file"; `+tc.disposition, "text/plain", []byte("words"))
		r := e.DoRaw("POST", "/v1/sessions/"+s.ID+"/uploads", ct, body, "Authorization", "Bearer "+s.Token)
		if r.Status != http.StatusCreated || r.Str("file_name") != tc.want {
			t.Fatalf("upload with %s: %d %s, want file_name %q", tc.disposition, r.Status, r.Raw, tc.want)
		}
		up, err := e.b.GetUpload(t.Context(), s.ConversationID, r.Str("upload_id"))
		if err != nil || up.Name != tc.want {
			t.Fatalf("stored upload of %s: %+v, %v", tc.disposition, up, err)
		}
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
			signalingtest.ExpectErr(t, tc.name, e.Upload(s, tc.file, tc.claimed, tc.data), tc.status, tc.code)
		})
	}
	ct, body := signalingtest.MultipartFile(t, "attachment", "dot.png", "image/png", pic)
	r = e.DoRaw("POST", "/v1/sessions/"+s.ID+"/uploads", ct, body, "Authorization", "Bearer "+s.Token)
	signalingtest.ExpectErr(t, "no file part", r, 422, "VALIDATION_FAILED")
	r = e.DoRaw("POST", "/v1/sessions/"+s.ID+"/uploads", "application/json", `{}`, "Authorization", "Bearer "+s.Token)
	signalingtest.ExpectErr(t, "not multipart", r, 415, "UNSUPPORTED_MEDIA_TYPE")
	r = e.DoRaw("POST", "/v1/sessions/"+s.ID+"/uploads", ct, body)
	signalingtest.ExpectErr(t, "no session token", r, 401, "SESSION_TOKEN_INVALID")

	// A message carries the upload to the agent.
	r = e.Do("POST", "/v1/sessions/"+s.ID+"/messages",
		map[string]any{"body": "see the picture", "client_message_id": "up-1", "upload_ids": []string{picID}},
		"Authorization", "Bearer "+s.Token)
	if r.Status != http.StatusAccepted {
		t.Fatalf("message with upload: %d %s", r.Status, r.Raw)
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
	other := e.NewSession(nil)
	otherPic := e.Upload(other, "other.png", "image/png", pic).Str("upload_id")
	for name, id := range map[string]string{"unknown upload": "upl_doesnotexist", "malformed id": "../x",
		"another conversation's upload": otherPic} {
		r := e.Do("POST", "/v1/sessions/"+s.ID+"/messages",
			map[string]any{"body": "attached", "upload_ids": []string{id}}, "Authorization", "Bearer "+s.Token)
		signalingtest.ExpectErr(t, name, r, 422, "VALIDATION_FAILED")
	}
}
