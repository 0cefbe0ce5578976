package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/cmd/internal/livekitserver"
	"github.com/parley-rtc/parley/configs"
)

// Interop with a WHIP client nobody here wrote: the npm package whip-whep
// (medooze's whip.js, by the author of RFC 9725), as `make whip-client`
// fetches it into .cache/whip-client, pinned and checksum-checked, loaded
// unmodified by a page of another origin in headless Chromium. It
// publishes the fake microphone and camera (audio and video, as WHIP
// clients do by default) to Parley's voice endpoint with the session token
// as its Bearer token.

// whipClientDir is where `make whip-client` unpacks the client.
const whipClientDir = ".cache/whip-client"

const (
	whipKey    = "pk_whipclient"
	whipSecret = "a-turn-secret-for-the-whip-test"
)

// whipClient finds the unpacked client under the module root, or skips
// the test loudly (fails it under PARLEY_REQUIRE_BROWSER=1, as in CI,
// where `make test` fetches it).
func whipClient(t *testing.T) (dir, stamp string) {
	t.Helper()
	root, err := os.Getwd()
	for err == nil {
		if _, e := os.Stat(filepath.Join(root, "go.mod")); e == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			err = errors.New("no go.mod above the working directory")
		}
		root = parent
	}
	if err == nil {
		dir = filepath.Join(root, whipClientDir)
		var b []byte
		if b, err = os.ReadFile(filepath.Join(dir, ".stamp")); err == nil {
			_, err = os.Stat(filepath.Join(dir, "whip.js"))
		}
		if err == nil {
			return dir, strings.TrimSpace(string(b))
		}
	}
	skipMissing(t, fmt.Sprintf("the third-party WHIP client is missing (%v):", err),
		"WHIP interop is NOT tested. Fetch it with `make whip-client`.")
	return "", ""
}

// whipPage loads the client as the module it is and publishes with it.
const whipPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>WHIP client</title></head><body>
<script type="module">
import { WHIPClient } from "/whip.js";
window.whip = { ready: true };
// publish sends the fake microphone and camera with the unmodified client.
window.publish = async (url, token) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  const client = new WHIPClient();
  Object.assign(window.whip, { pc, client });
  await client.publish(pc, url, token);
  return { etag: client.etag, location: client.resourceURL.href, iceServers: pc.getConfiguration().iceServers,
    answer: pc.remoteDescription.sdp };
};
// sent counts the RTP packets sent, per kind.
window.sent = async () => {
  const out = { audio: 0, video: 0 };
  (await whip.pc.getStats()).forEach((r) => { if (r.type === "outbound-rtp") out[r.kind] += r.packetsSent || 0; });
  return out;
};
</script></body></html>`

// TestWHIPClient: the third-party client publishes to Parley. Its offer
// (audio and video) is answered with the video m-line rejected, which
// Chromium applies; it learns the STUN and TURN servers from the Link
// headers; it trickles its candidates with the ETag in If-Match; the fake
// microphone's packets reach the agent on NATS; its ICE restart (If-Match:
// *) gets a new ETag, the call goes on and so does the audio; stop()
// DELETEs the leg and the conversation goes back to chat.
func TestWHIPClient(t *testing.T) {
	requireChromium(t)
	dir, stamp := whipClient(t)
	t.Logf("WHIP client: %s", stamp)
	noServer, err := livekitserver.FreePort("udp") // STUN/TURN that nobody answers, on loopback
	if err != nil {
		t.Fatal(err)
	}
	stun := fmt.Sprintf("stun:127.0.0.1:%d", noServer)
	turn := fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", noServer)
	e := startEnv(t, voiceConfig, withWidget(configs.WidgetConfig{Key: whipKey, Mode: "both", Agent: configs.DefaultAgent,
		AllowedOrigins: []string{"http://127.0.0.1:*"}}), func(c *configs.Config) {
		// One address, as a server behind 1:1 NAT has: whip.js 1.2.0
		// joins the candidates of a restart's answer with commas
		// (candidates.join()), so it applies an answer of one candidate
		// only; with two, its own setRemoteDescription fails.
		c.Media.Interfaces = []string{"lo"}
		c.Media.NAT1To1IPs = []string{"127.0.0.1"}
		c.Media.STUNURLs = []string{stun}
		c.Media.TURN.URLs = []string{turn}
		c.Media.TURN.Secret = whipSecret
	})
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(whipPage))
		case "/whip.js":
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			http.ServeFileFS(w, r, os.DirFS(dir), "whip.js")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(page.Close)
	_, port, _ := strings.Cut(e.app.server.Addr(), ":")
	parley := "http://localhost:" + port // another origin than the page's

	s := e.MustCreateSession(whipKey, page.URL, nil)
	tap := e.tapAudio(e.app.broker.Subjects().InAudio(configs.DefaultAgent, s.ConversationID))
	b := newBrowser(t)
	b.must("open the page", chromedp.Navigate(page.URL+"/"))
	b.waitJSOr(10*time.Second, "the client module to load", `window.whip && whip.ready`, func() string { return "" })

	var pub struct {
		ETag, Location, Answer string
		ICEServers             []struct {
			URLs                 any
			Username, Credential string
		} `json:"iceServers"`
	}
	start := time.Now()
	b.mustEval(fmt.Sprintf(`publish(%q, %q)`, parley+"/v1/sessions/"+s.ID+"/webrtc", s.Token), &pub)
	if !regexp.MustCompile(`^"[A-Za-z0-9_-]{16,}"$`).MatchString(pub.ETag) || !strings.HasPrefix(pub.Location, parley+"/v1/sessions/"+s.ID+"/webrtc/leg_") {
		t.Fatalf("published: ETag %q, Location %q", pub.ETag, pub.Location)
	}
	// The ice-server Link headers, as the client read them.
	urls := func(i int) string { return strings.Trim(fmt.Sprint(pub.ICEServers[i].URLs), "[]") } // a string or a list
	if len(pub.ICEServers) != 2 || urls(0) != stun || urls(1) != turn ||
		!strings.HasSuffix(pub.ICEServers[1].Username, ":"+s.ID) || pub.ICEServers[1].Credential == "" {
		t.Fatalf("ICE servers from the Link headers: %+v", pub.ICEServers)
	}
	// Chromium applied an answer whose video m-line is rejected.
	if !regexp.MustCompile(`(?m)^m=video 0 UDP/TLS/RTP/SAVPF \d+\r\n(?:[^m].*\r\n)*?a=inactive\r\n`).MatchString(pub.Answer) {
		t.Fatalf("answer's video m-line:\n%s", pub.Answer)
	}
	b.waitJSOr(15*time.Second, "the call to connect", `whip.pc.connectionState === "connected"`, b.whipState)
	t.Logf("publish → connected: %v", time.Since(start).Round(time.Millisecond))
	agenttest.Poll(t, 15*time.Second, "the client's audio on NATS", func() bool { return len(tap.Frames()) >= 100 })

	// Trickle ICE: the client PATCHed its candidates with If-Match: the ETag.
	patched := regexp.MustCompile(`"method":"PATCH","path":"/v1/sessions/` + s.ID + `/webrtc/leg_[^"]+","status":204`)
	agenttest.Poll(t, 10*time.Second, "a trickle PATCH answered 204", func() bool { return patched.MatchString(e.logs.String()) })
	if strings.Contains(e.logs.String(), `"status":428`) || strings.Contains(e.logs.String(), `"status":412`) {
		t.Fatal("a PATCH of the client was refused its precondition")
	}

	// ICE restart, the client's way: a fragment with If-Match: *.
	b.mustEval(`whip.client.restart().then(() => true)`, nil)
	var etag string
	b.mustEval(`whip.client.etag`, &etag)
	if etag == pub.ETag || !strings.HasPrefix(etag, `"`) {
		t.Fatalf("ETag after the restart %q (was %q)", etag, pub.ETag)
	}
	restarted := regexp.MustCompile(`"method":"PATCH","path":"/v1/sessions/` + s.ID + `/webrtc/leg_[^"]+","status":200`)
	if !restarted.MatchString(e.logs.String()) {
		t.Fatal("no 200 PATCH (the restart) in the server's log")
	}
	before := len(tap.Frames())
	b.waitJSOr(15*time.Second, "the call after the restart", `whip.pc.connectionState === "connected" && whip.pc.iceConnectionState !== "checking"`, b.whipState)
	agenttest.Poll(t, 15*time.Second, "audio on NATS after the restart", func() bool { return len(tap.Frames()) >= before+100 })

	// What the browser sent and what reached the agent.
	var sent struct{ Audio, Video int }
	b.mustEval(`sent()`, &sent)
	got := len(tap.Frames())
	t.Logf("packets sent: audio %d, video %d; audio frames on NATS %d (%.1f %%)", sent.Audio, sent.Video, got, 100*float64(got)/float64(max(sent.Audio, 1)))
	if sent.Video != 0 {
		t.Fatalf("Chromium sent %d video packets on a rejected m-line", sent.Video)
	}

	// stop(): the client closes and DELETEs the leg.
	b.mustEval(`whip.client.stop().then(() => true)`, nil)
	agenttest.Poll(t, 10*time.Second, "the broker to drop the voice leg", func() bool {
		_, ok := e.app.broker.Voice(s.ID)
		return !ok
	})
	deleted := regexp.MustCompile(`"method":"DELETE","path":"/v1/sessions/` + s.ID + `/webrtc/leg_[^"]+","status":204`)
	if !deleted.MatchString(e.logs.String()) {
		t.Fatalf("no 204 DELETE of the leg in the server's log:\n%s", regexp.MustCompile(`.*"method":"DELETE".*`).FindAllString(e.logs.String(), -1))
	}
}

// whipState describes the page's call for a failure message.
func (b *browser) whipState() string {
	var s string
	if err := b.eval(`JSON.stringify(window.whip && whip.pc ? {conn: whip.pc.connectionState, ice: whip.pc.iceConnectionState,
		signaling: whip.pc.signalingState, etag: whip.client.etag} : null)`, &s); err != nil {
		return "\npage: " + err.Error()
	}
	return "\npage: " + s
}
