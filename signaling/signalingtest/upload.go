package signalingtest

import (
	"bytes"
	"mime/multipart"
	"net/textproto"
	"testing"
)

// MultipartFile builds a multipart/form-data body with one part, file
// name in field, and returns its content type and body.
func MultipartFile(t testing.TB, field, name, contentType string, data []byte) (string, string) {
	t.Helper()
	return MultipartDisposition(t, `form-data; name="`+field+`"; filename="`+name+`"`, contentType, data)
}

// MultipartDisposition builds a multipart/form-data body with one part
// whose Content-Disposition is given as is (an RFC 2231 filename*, say).
func MultipartDisposition(t testing.TB, disposition, contentType string, data []byte) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", disposition)
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

// Upload uploads data to s as a file called name, claiming claimedType.
func (c *Client) Upload(s Session, name, claimedType string, data []byte) Response {
	c.T.Helper()
	ct, body := MultipartFile(c.T, "file", name, claimedType, data)
	return c.DoRaw("POST", "/v1/sessions/"+s.ID+"/uploads", ct, body, "Authorization", "Bearer "+s.Token)
}
