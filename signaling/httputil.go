package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"

	"github.com/parley-rtc/parley/broker"
)

// maxBodyBytes bounds every JSON request body.
const maxBodyBytes = 64 << 10

// errorBody is the one error shape of the API.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may have gone; nothing to do
}

// writeError writes err as {"error":{"code","message"}} with its status.
func writeError(w http.ResponseWriter, err error) {
	writeErrorDetails(w, err, nil)
}

func writeErrorDetails(w http.ResponseWriter, err error, details map[string]any) {
	we, msg := classify(err)
	var ve *broker.ValidationError
	if errors.As(err, &ve) {
		fields := make([]map[string]string, len(ve.Problems))
		for i, p := range ve.Problems {
			fields[i] = map[string]string{"field": p.Field, "message": p.Message}
		}
		if details == nil {
			details = map[string]any{}
		}
		details["fields"] = fields
		msg = fmt.Sprintf("%d field(s) are invalid", len(fields))
	}
	writeJSON(w, we.status, errorBody{Error: errorDetail{Code: we.code, Message: msg, Details: details}})
}

// decodeJSON reads one JSON object from the body into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return fmt.Errorf("%w: Content-Type must be application/json", ErrBadRequest)
		}
	}
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return fmt.Errorf("%w: body over %d bytes", ErrPayloadTooLarge, maxBodyBytes)
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: empty body", ErrBadRequest)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return fmt.Errorf("%w: unknown field %s", ErrBadRequest, strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return fmt.Errorf("%w: invalid JSON: %v", ErrBadRequest, err)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	return nil
}

// decodeOptionalJSON is decodeJSON for a body the caller may leave out: an
// empty body leaves v as it is.
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decodeJSON(w, r, v)
}

// errorHandler is the body of a route that either answers or returns an
// error; it must not return an error after it has started to answer.
type errorHandler func(w http.ResponseWriter, r *http.Request) error

// orError runs h and writes the error it returns through the error table
// (errors.go), so a handler states each failure once, as a return.
func orError(h errorHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, err)
			noteInternal(r, err)
		}
	}
}

// failure is where the request log (Server.logRequests) learns the cause
// of a 500 INTERNAL, which the answer itself does not carry.
type failure struct{ err error }

type failureKey struct{}

// noteInternal hands err to the request log when the error table has no
// entry for it (it was answered 500 INTERNAL).
func noteInternal(r *http.Request, err error) {
	if we, _ := classify(err); we != internalError {
		return
	}
	if f, ok := r.Context().Value(failureKey{}).(*failure); ok {
		f.err = err
	}
}

// gate is how an authenticated route runs: auth finds who calls (the
// session, the secret key's widget, the admin key) and h runs with it,
// under the rules of errorHandler; an error of either is written.
func gate[T any](auth func(*http.Request) (T, error), h func(http.ResponseWriter, *http.Request, T) error) http.HandlerFunc {
	return orError(func(w http.ResponseWriter, r *http.Request) error {
		who, err := auth(r)
		if err != nil {
			return err
		}
		return h(w, r, who)
	})
}

// strictUnmarshal decodes one JSON value, refusing unknown fields.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data")
	}
	return nil
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// methods routes one path by method and answers others with a JSON 405.
type methods map[string]http.HandlerFunc

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h(w, r)
		return
	}
	if r.Method == http.MethodHead {
		if h, ok := m[http.MethodGet]; ok {
			h(w, r)
			return
		}
	}
	allow := make([]string, 0, len(m))
	for k := range m {
		allow = append(allow, k)
	}
	sort.Strings(allow)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, fmt.Errorf("%w: %s", ErrMethodNotAllowed, r.Method))
}
