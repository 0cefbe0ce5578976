package signaling_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// The WHIP surface of the voice endpoint (RFC 9725), with a real pion
// offerer: the ETag of a leg's ICE session, If-Match on PATCH, STUN/TURN
// servers as Link headers, OPTIONS, and the CORS headers a cross-origin
// page needs for all of it.

const (
	testSTUN       = "stun:127.0.0.1:3478"
	testTURN       = "turn:127.0.0.1:3478?transport=udp"
	testTURNSecret = "a-turn-secret-of-some-length"
)

// withICEServers configures a STUN and a TURN server (never contacted:
// the pion clients here use loopback host candidates).
func withICEServers(c *configs.Config) {
	c.Media.STUNURLs = []string{testSTUN}
	c.Media.TURN.URLs = []string{testTURN}
	c.Media.TURN.Secret = testTURNSecret
}

var strongETag = regexp.MustCompile(`^"[A-Za-z0-9_-]{16,}"$`)

// checkICEServerLinks checks the Link headers of h: the STUN server, and
// the TURN server with its per-session credentials (TURN REST API style)
// when withTURN; nothing else.
func checkICEServerLinks(t *testing.T, h http.Header, sessionID string, withTURN bool) {
	t.Helper()
	links := h.Values("Link")
	want := 1
	if withTURN {
		want = 2
	}
	if len(links) != want || links[0] != "<"+testSTUN+`>; rel="ice-server"` {
		t.Fatalf("Link headers %q, want the STUN server (and TURN: %v)", links, withTURN)
	}
	if !withTURN {
		return
	}
	m := regexp.MustCompile(`^<` + regexp.QuoteMeta(testTURN) + `>; rel="ice-server"; username="(\d+:` + sessionID +
		`)"; credential="([^"]+)"; credential-type="password"$`).FindStringSubmatch(links[1])
	if m == nil {
		t.Fatalf("TURN link %q", links[1])
	}
	mac := hmac.New(sha1.New, []byte(testTURNSecret))
	mac.Write([]byte(m[1]))
	if m[2] != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
		t.Fatalf("TURN credential %q is not HMAC-SHA1(secret, %q)", m[2], m[1])
	}
}

// TestWHIPCreatedHeaders: the 201 of an offer carries the leg's ETag (a
// strong entity-tag) and the session's STUN and TURN servers as Link
// headers; to a page on an allowed origin, CORS exposes both.
func TestWHIPCreatedHeaders(t *testing.T) {
	e := startEnv(t, withICEServers)
	s := e.NewSession(nil)
	c, r := e.OfferVoice(s, "", "Origin", testOrigin)
	if r.Status != http.StatusCreated {
		t.Fatalf("offer: %d %s", r.Status, r.Raw)
	}
	if !strongETag.MatchString(c.ETag) {
		t.Fatalf("ETag %q", c.ETag)
	}
	checkICEServerLinks(t, r.Header, s.ID, true)
	exposed := strings.Split(r.Header.Get("Access-Control-Expose-Headers"), ", ")
	for _, h := range []string{"Location", "ETag", "Link"} {
		if !slices.Contains(exposed, h) {
			t.Fatalf("Access-Control-Expose-Headers %q lacks %s", exposed, h)
		}
	}
	c.WaitConnected()
	c.HangUp(s.Token)
}

// TestWHIPPatchPreconditions: every PATCH names the ICE session it is for
// (RFC 9725 §4.3.1). Trickle without If-Match is 428, with another
// session's tag (or a weak one) 412, with the leg's ETag or * 204. An ICE
// restart (If-Match: *) answers 200 with a new ETag, after which the old
// one is 412; a restart for a stale tag is 412 and changes nothing. The
// call goes on: audio reaches the agent after it all, and DELETE, which
// ignores If-Match, hangs up.
func TestWHIPPatchPreconditions(t *testing.T) {
	e := startEnv(t, withICEServers)
	s := e.NewSession(nil)
	in := agenttest.TapAudio(t, e.agentConn(configs.DefaultAgent), e.b.Subjects().InAudio(configs.DefaultAgent, s.ConversationID))
	c := e.NewVoiceClient(s)
	c.WaitConnected()
	first := c.ETag
	auth := []string{"Authorization", "Bearer " + s.Token}
	patch := func(ctype, body string, ifMatch ...string) response {
		t.Helper()
		h := slices.Clone(auth)
		if len(ifMatch) > 0 {
			h = append(h, "If-Match", ifMatch[0])
		}
		return e.DoRaw("PATCH", c.Location, ctype, body, h...)
	}
	var cand string
	for _, line := range strings.Split(c.PC.LocalDescription().SDP, "\r\n") {
		if strings.HasPrefix(line, "a=candidate:") {
			cand = line
			break
		}
	}
	trickle := "a=mid:0\r\n" + cand + "\r\n"
	const frag = "application/trickle-ice-sdpfrag"
	for _, tc := range []struct {
		name    string
		ifMatch []string
		status  int
		code    string
	}{
		{"no If-Match", nil, 428, "PRECONDITION_REQUIRED"},
		{"another session's tag", []string{`"c3RhbGUtdGFnLW9mLWFub3RoZXI"`}, 412, "PRECONDITION_FAILED"},
		{"the ETag as a weak tag", []string{"W/" + first}, 412, "PRECONDITION_FAILED"},
		{"an empty If-Match", []string{""}, 412, "PRECONDITION_FAILED"},
		{"the ETag", []string{first}, 204, ""},
		{"the ETag in a list", []string{`"other", ` + first}, 204, ""},
		{"*", []string{"*"}, 204, ""},
	} {
		if r := patch(frag, trickle, tc.ifMatch...); r.Status != tc.status || r.ErrCode() != tc.code {
			t.Fatalf("trickle, %s: %d %s, want %d %s", tc.name, r.Status, r.Raw, tc.status, tc.code)
		}
	}
	// The content type is checked first; then If-Match, before the body.
	if r := patch("application/json", "{}"); r.Status != 415 {
		t.Fatalf("PATCH json without If-Match: %d %s", r.Status, r.Raw)
	}
	if r := patch(frag, "garbage"); r.Status != 428 {
		t.Fatalf("bad fragment without If-Match: %d %s", r.Status, r.Raw)
	}

	// An ICE restart by fragment, as a WHIP client sends it: new
	// credentials (and, here, no candidates yet).
	restart := "a=ice-ufrag:RstA\r\na=ice-pwd:" + strings.Repeat("p", 24) + "\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
	if r := patch(frag, restart, `"c3RhbGUtdGFnLW9mLWFub3RoZXI"`); r.Status != 412 || r.ErrCode() != "PRECONDITION_FAILED" {
		t.Fatalf("restart for a stale session: %d %s", r.Status, r.Raw)
	}
	r := patch(frag, restart, "*")
	second := r.Header.Get("ETag")
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != frag || !strongETag.MatchString(second) || second == first ||
		!strings.Contains(r.Raw, "a=ice-ufrag:") || !strings.Contains(r.Raw, "a=end-of-candidates") {
		t.Fatalf("restart: %d %q ETag %q (was %q)\n%s", r.Status, r.Header.Get("Content-Type"), second, first, r.Raw)
	}
	checkICEServerLinks(t, r.Header, s.ID, true)
	if r := patch(frag, trickle, first); r.Status != 412 || r.ErrCode() != "PRECONDITION_FAILED" {
		t.Fatalf("trickle for the session before the restart: %d %s", r.Status, r.Raw)
	}
	if r := patch(frag, "a=end-of-candidates\r\n", second); r.Status != 204 {
		t.Fatalf("trickle for the new session: %d %s", r.Status, r.Raw)
	}

	// The pion client restarts ICE its own way (a full re-offer, with
	// If-Match: *): the call connects again on a third session and audio
	// reaches the agent.
	if r := c.RestartICE(s.Token); r.Status != http.StatusOK || c.ETag == second || !strongETag.MatchString(c.ETag) {
		t.Fatalf("re-offer: %d %s, ETag %q", r.Status, r.Raw, c.ETag)
	}
	agenttest.Poll(t, 15*time.Second, "connected after the restarts", func() bool {
		return c.PC.ConnectionState() == webrtc.PeerConnectionStateConnected
	})
	before := len(in.Frames())
	c.Send(signalingtest.Speech(t, 1, 200, 200))
	agenttest.Poll(t, 10*time.Second, "mic frames on NATS after the restarts", func() bool { return len(in.Frames()) >= before+10 })

	// DELETE ignores If-Match, even a stale one.
	if r := e.DoRaw("DELETE", c.Location, "", "", append(slices.Clone(auth), "If-Match", first)...); r.Status != http.StatusNoContent {
		t.Fatalf("hang up: %d %s", r.Status, r.Raw)
	}
}

// TestWHIPOptions: OPTIONS on the endpoint (RFC 9725 §4.2, §4.6). A bare
// one answers 200 with Allow and Accept-Post and the STUN server as a Link
// header; the TURN server (its credentials are per session) only to a
// caller with the session's token. A CORS preflight from an allowed origin
// gets the CORS answer with Accept-Post too, and no Link (§4.6); the
// preflight of a PATCH may send If-Match.
func TestWHIPOptions(t *testing.T) {
	e := startEnv(t, withICEServers)
	s := e.NewSession(nil)
	path := "/v1/sessions/" + s.ID + "/webrtc"

	r := e.DoRaw("OPTIONS", path, "", "")
	if r.Status != http.StatusOK || r.Header.Get("Accept-Post") != "application/sdp" || r.Header.Get("Allow") != "OPTIONS, POST" {
		t.Fatalf("bare OPTIONS: %d %v", r.Status, r.Header)
	}
	checkICEServerLinks(t, r.Header, s.ID, false)
	r = e.DoRaw("OPTIONS", path, "", "", "Authorization", "Bearer "+s.Token)
	if r.Status != http.StatusOK || r.Header.Get("Accept-Post") != "application/sdp" {
		t.Fatalf("OPTIONS with the token: %d %v", r.Status, r.Header)
	}
	checkICEServerLinks(t, r.Header, s.ID, true)
	r = e.DoRaw("OPTIONS", path, "", "", "Authorization", "Bearer not-the-token")
	checkICEServerLinks(t, r.Header, s.ID, false)

	r = e.DoRaw("OPTIONS", path, "", "", "Origin", testOrigin, "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type")
	if r.Status != http.StatusNoContent || r.Header.Get("Access-Control-Allow-Origin") != testOrigin ||
		r.Header.Get("Accept-Post") != "application/sdp" || r.Header.Get("Allow") != "OPTIONS, POST" || len(r.Header.Values("Link")) != 0 {
		t.Fatalf("preflight of the POST: %d %v", r.Status, r.Header)
	}
	r = e.DoRaw("OPTIONS", path+"/leg_x", "", "", "Origin", testOrigin, "Access-Control-Request-Method", "PATCH",
		"Access-Control-Request-Headers", "authorization, content-type, if-match")
	allowed := strings.Split(strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")), ", ")
	if r.Status != http.StatusNoContent || !slices.Contains(allowed, "if-match") ||
		!strings.Contains(r.Header.Get("Access-Control-Allow-Methods"), "PATCH") {
		t.Fatalf("preflight of a PATCH: %d %v", r.Status, r.Header)
	}
}

// TestWHIPDeleteAfterClose: a WHIP client closes its peer connection, then
// DELETEs (whip.js does): the close already hung up (remote_closed), so the
// DELETE answers 204 too; a DELETE of a leg that is not the session's, or
// was never, stays 404.
func TestWHIPDeleteAfterClose(t *testing.T) {
	e := startEnv(t)
	s := e.NewSession(nil)
	c := e.NewVoiceClient(s)
	c.WaitConnected()
	c.Close()
	agenttest.Poll(t, 10*time.Second, "the leg to end with the peer connection", func() bool {
		_, ok := e.b.Voice(s.ID)
		return !ok
	})
	auth := []string{"Authorization", "Bearer " + s.Token}
	if r := e.DoRaw("DELETE", c.Location, "", "", auth...); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE after the close: %d %s", r.Status, r.Raw)
	}
	other := e.NewSession(nil)
	leg := c.Location[strings.LastIndex(c.Location, "/"):]
	for _, path := range []string{"/v1/sessions/" + other.ID + "/webrtc" + leg, "/v1/sessions/" + s.ID + "/webrtc/leg_never"} {
		tok := s.Token
		if strings.Contains(path, other.ID) {
			tok = other.Token
		}
		if r := e.DoRaw("DELETE", path, "", "", "Authorization", "Bearer "+tok); r.Status != 404 || r.ErrCode() != "LEG_NOT_FOUND" {
			t.Fatalf("DELETE %s: %d %s", path, r.Status, r.Raw)
		}
	}
}
