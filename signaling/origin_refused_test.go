package signaling_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// A page on an origin no widget allows (the most common first-deploy
// mistake): the browser may read the coded error, and only that. The
// preflight is answered with CORS headers for the page's origin; the
// resolve's 403 ORIGIN_NOT_ALLOWED carries them too and names the origin
// and the key; a success (here the 204 of ending a session that had
// ended) never does, and nothing carries Allow-Credentials. The refusal
// is logged with the origin and the widget's id, never the client's
// address; a flood of refusals from one origin, or from many, leaves a
// bounded number of lines.
func TestOriginRefusedCORS(t *testing.T) {
	e := startEnv(t)
	const foreign = "https://shop.example.net"

	pre := e.Do("OPTIONS", "/v1/widget/resolve", nil, "Origin", foreign,
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type")
	if pre.Status != http.StatusNoContent || pre.Header.Get("Access-Control-Allow-Origin") != foreign ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Content-Type") ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Methods"), "POST") ||
		pre.Header.Get("Access-Control-Allow-Credentials") != "" || !strings.Contains(pre.Header.Get("Vary"), "Origin") {
		t.Fatalf("preflight from %s: %d %v", foreign, pre.Status, pre.Header)
	}

	r := e.ResolveWidget(configs.DemoWidgetKey, foreign)
	signalingtest.ExpectErr(t, "resolve from a foreign origin", r, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	if r.Header.Get("Access-Control-Allow-Origin") != foreign || r.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("the error is not readable by the page: %v", r.Header)
	}
	msg, _ := r.Body["error"].(map[string]any)["message"].(string)
	if msg != foreign+" is not in the widget's allowed_origins" {
		t.Fatalf("message %q", msg) // the origin, never a key (the widget names its own)
	}
	if strings.Contains(r.Raw, "challenge") || strings.Contains(r.Raw, "display_title") {
		t.Fatalf("widget data in the refusal: %s", r.Raw)
	}

	// A session route: the error is readable, a success is not.
	s := e.NewSession(nil)
	h := e.Do("GET", "/v1/sessions/"+s.ID+"/history", nil, "Origin", foreign, "Authorization", "Bearer "+s.Token)
	signalingtest.ExpectErr(t, "history from a foreign origin", h, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	if h.Header.Get("Access-Control-Allow-Origin") != foreign || strings.Contains(h.Raw, "messages") {
		t.Fatalf("history refusal: %v %s", h.Header, h.Raw)
	}
	if r := e.Do("DELETE", "/v1/sessions/"+s.ID, nil, "Origin", signalingtest.DemoOrigin, "Authorization", "Bearer "+s.Token); r.Status != http.StatusNoContent {
		t.Fatalf("end session: %d %s", r.Status, r.Raw)
	}
	end := e.Do("DELETE", "/v1/sessions/"+s.ID, nil, "Origin", foreign, "Authorization", "Bearer "+s.Token)
	if end.Status != http.StatusNoContent || end.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("a success exposed to a foreign origin: %d %v", end.Status, end.Header)
	}
	// An allowed origin is served as before.
	if ok := e.ResolveWidget(configs.DemoWidgetKey, signalingtest.DemoOrigin); ok.Status != http.StatusOK ||
		ok.Header.Get("Access-Control-Allow-Origin") != signalingtest.DemoOrigin {
		t.Fatalf("allowed origin: %d %v", ok.Status, ok.Header)
	}

	// The refusals so far are in the log: origin and widget id, no address.
	lines := refusalLines(e)
	if len(lines) != 2 || !strings.Contains(lines[0], `"origin":"`+foreign+`"`) || !strings.Contains(lines[0], `"widget_id":"wdg_demo"`) ||
		strings.Contains(lines[0], "127.0.0.1") {
		t.Fatalf("refusal lines: %q", lines)
	}

	// A flood from one origin: at most the per-origin burst more lines.
	for range 300 {
		e.ResolveWidget(configs.DemoWidgetKey, foreign)
	}
	if n := len(refusalLines(e)); n > 3 {
		t.Fatalf("%d lines after 302 refusals from one origin, want at most 3 (the burst)", n)
	}
	// A flood of distinct origins: bounded by the global limit.
	start := time.Now()
	for i := range 300 {
		e.ResolveWidget(configs.DemoWidgetKey, fmt.Sprintf("https://s%d.example.net", i))
	}
	elapsed := time.Since(start)
	n := len(refusalLines(e))
	bound := 3 + 10 + int(5*elapsed.Seconds()) + 1 // burst + global burst + 5/s
	t.Logf("300 refusals from distinct origins in %v: %d lines in all (bound %d)", elapsed.Round(time.Millisecond), n, bound)
	if n > bound {
		t.Fatalf("%d refusal lines, want at most %d", n, bound)
	}
	if !regexp.MustCompile(`"suppressed":[1-9]`).MatchString(strings.Join(refusalLines(e), "\n")) {
		t.Fatalf("no line counts the refusals held back: %q", refusalLines(e))
	}
}

func refusalLines(e *env) []string {
	var out []string
	for l := range strings.SplitSeq(e.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"origin refused`) {
			out = append(out, l)
		}
	}
	return out
}

// A widget with uploads: false: resolve says nothing of uploads (the
// widget hides its attach button), and POST …/uploads is 403
// UPLOADS_NOT_ALLOWED; by default resolve gives the limits.
func TestUploadsSwitch(t *testing.T) {
	off := false
	e := startEnv(t, withWidget(configs.WidgetConfig{Key: "pk_nofiles", AllowedOrigins: []string{signalingtest.DemoOrigin}, Uploads: &off}))
	r := e.ResolveWidget("pk_nofiles", signalingtest.DemoOrigin)
	if w, _ := r.Body["widget"].(map[string]any); r.Status != http.StatusOK || w == nil || w["uploads"] != nil {
		t.Fatalf("resolve of a widget without uploads: %d %s", r.Status, r.Raw)
	}
	r = e.ResolveWidget(configs.DemoWidgetKey, signalingtest.DemoOrigin)
	up, _ := r.Body["widget"].(map[string]any)["uploads"].(map[string]any)
	if up == nil || up["max_bytes"] != float64(e.cfg.Limits.MaxUploadBytes) || fmt.Sprint(up["types"]) != "[image/* application/pdf text/plain]" {
		t.Fatalf("resolve's uploads: %s", r.Raw)
	}
	req := map[string]any{"widget_key": "pk_nofiles", "challenge": e.ResolveWidget("pk_nofiles", signalingtest.DemoOrigin).Str("challenge"), "mode": "chat"}
	cr := e.Do("POST", "/v1/sessions", req, "Origin", signalingtest.DemoOrigin)
	if cr.Status != http.StatusCreated {
		t.Fatalf("session: %d %s", cr.Status, cr.Raw)
	}
	s := signalingtest.SessionFrom(cr)
	body := "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n--b--\r\n"
	u := e.DoRaw("POST", "/v1/sessions/"+s.ID+"/uploads", "multipart/form-data; boundary=b", body, "Authorization", "Bearer "+s.Token)
	signalingtest.ExpectErr(t, "upload to a widget without uploads", u, http.StatusForbidden, "UPLOADS_NOT_ALLOWED")
}
