package signaling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/parley-rtc/parley/broker"
)

type captureRequest struct {
	Kind   string `json:"kind"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

// serveCapture: POST /v1/sessions/{id}/captures {"kind":"email"|"phone"|
// "name","value","source":"agent_asked"|"volunteered"} — a lead, stored
// per conversation and handed to the agent as a capture event.
func (s *Server) serveCapture(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	var req captureRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := s.limit(w, r, limitCaptures, sess.Widget); err != nil {
		return err
	}
	lead, err := s.convs.Capture(context.WithoutCancel(r.Context()), sess, req.Kind, req.Value, req.Source)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, lead)
	return nil
}

// Upload content types accepted after sniffing the bytes: images, PDF and
// plain text (not HTML or XML, which a browser would run if ever served).
func uploadTypeAllowed(ct string) bool {
	return strings.HasPrefix(ct, "image/") || strings.HasPrefix(ct, "text/plain") || ct == "application/pdf"
}

// serveUpload: POST /v1/sessions/{id}/uploads, multipart/form-data with one
// "file" part of at most limits.max_upload_bytes. The type is decided by
// the content (http.DetectContentType), not by what the client claims.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	if wc, err := s.widgets.WidgetByID(sess.Widget); err == nil && !wc.AllowsUploads() {
		return ErrUploadsNotAllowed
	}
	if err := s.limit(w, r, limitUploads, sess.Widget); err != nil {
		return err
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return fmt.Errorf("%w: Content-Type must be multipart/form-data", ErrUnsupportedMediaType)
	}
	max := s.cfg.Limits.MaxUploadBytes
	extendBodyDeadline(w, s.cfg.Limits.UploadTimeout)   // a large file on a slow link
	r.Body = http.MaxBytesReader(w, r.Body, max+64<<10) // room for the multipart framing
	mr, err := r.MultipartReader()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: a \"file\" part is required", broker.ErrValidation)
		}
		if err != nil {
			return uploadReadError(err)
		}
		if part.FormName() != "file" {
			_ = part.Close()
			continue
		}
		name := part.FileName() // the broker cleans it (broker.CleanFileName)
		head := make([]byte, 512)
		n, err := io.ReadFull(part, head)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return uploadReadError(err)
		}
		if n == 0 {
			return fmt.Errorf("%w: the file is empty", broker.ErrValidation)
		}
		ct := http.DetectContentType(head[:n])
		if i := strings.IndexByte(ct, ';'); i >= 0 && !strings.HasPrefix(ct, "text/") {
			ct = ct[:i]
		}
		if !uploadTypeAllowed(ct) {
			return fmt.Errorf("%w: %s files are not accepted (images, PDF and text are)", ErrUnsupportedMediaType, ct)
		}
		content := &limitedReader{r: io.MultiReader(strings.NewReader(string(head[:n])), part), left: max}
		up, err := s.convs.PutUpload(context.WithoutCancel(r.Context()), sess, name, ct, content)
		if content.over {
			return fmt.Errorf("%w: the file is over %d bytes", ErrPayloadTooLarge, max)
		}
		if err != nil {
			return uploadReadError(err)
		}
		writeJSON(w, http.StatusCreated, up)
		return nil
	}
}

func uploadReadError(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return fmt.Errorf("%w: the upload is too large", ErrPayloadTooLarge)
	}
	if errors.Is(err, broker.ErrStore) {
		return err
	}
	return fmt.Errorf("%w: reading the upload: %v", ErrBadRequest, err)
}

// limitedReader fails once more than left bytes were read.
type limitedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		return n, errors.New("upload too large")
	}
	return n, err
}
