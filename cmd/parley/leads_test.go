package main

import (
	"bytes"
	"mime/multipart"
	"net/textproto"
	"testing"
)

// The upload tests live in signaling (leads_test.go); these helpers stay
// for the end-to-end tests here that upload (retention_test.go).

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
