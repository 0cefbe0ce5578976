package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/broker"
)

// TestInternalErrorLogged: an error the table does not know is answered
// 500 INTERNAL with a fixed message, and its cause goes to the log at
// ERROR with the route (never to the client); a mapped error, even a 503,
// logs nothing here.
func TestInternalErrorLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	s := &Server{log: log, refusals: newRefusalLog(log), metrics: newMetrics(nil, nil, nil)}
	cause := errors.New("dtls: handshake state corrupted (detail only for the operator)")
	mux := http.NewServeMux()
	mux.Handle("/boom/{id}", orError(func(http.ResponseWriter, *http.Request) error {
		return fmt.Errorf("voice: answer: %w", cause)
	}))
	mux.Handle("/busy", orError(func(http.ResponseWriter, *http.Request) error { return broker.ErrStoreTimeout }))
	h := s.logRequests(mux)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/boom/ses_1", nil))
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 500 || body.Error.Code != "INTERNAL" {
		t.Fatalf("got %d %s, want 500 INTERNAL", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "dtls") {
		t.Fatalf("the cause reached the client: %s", rec.Body)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("no one log line for the 500: %q", buf.String())
	}
	if line["level"] != "ERROR" || line["route"] != "/boom/{id}" || !strings.Contains(fmt.Sprint(line["err"]), cause.Error()) {
		t.Fatalf("the log line does not name the route and the cause: %v", line)
	}

	buf.Reset()
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/busy", nil))
	if rec.Code != 503 || buf.Len() != 0 {
		t.Fatalf("a mapped error: %d, logged %q; want 503 and no line", rec.Code, buf.String())
	}
}
