package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/media"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// The widget's LiveKit transport in headless Chromium: a site's page embeds
// a widget with voice_transport: livekit; the visitor chats, calls (the
// widget loads the vendored livekit-client, joins the conversation's room
// on a real livekit-server, publishes the fake microphone and plays the
// bridge's audio), goes back to text, and everything is one conversation.
// A page whose widget uses Parley's own WebRTC never fetches the SDK.

// lkSiteKey is the site's LiveKit widget (siteWidget with voice_transport:
// livekit); the site's pages /lk embed it, the others pk_site (webrtc).
const lkSiteKey = "pk_site_livekit"

func TestWidgetLiveKit(t *testing.T) {
	requireChromium(t)
	started := time.Now()
	lkw := siteWidget()
	lkw.Key, lkw.ID, lkw.VoiceTransport = lkSiteKey, "wdg_site_livekit", "livekit"
	lkw.Triggers = nil
	e := startLiveKitEnv(t, withWidget(siteWidget()), withWidget(lkw))
	signalingtest.StartWorker(t, e.agentConn(siteAgent), siteAgent, guideAgent)
	_, port, _ := strings.Cut(e.app.server.Addr(), ":")
	s := &site{e: e.env, parley: "http://localhost:" + port}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/lk" {
			if r.URL.Query().Get("csp") == "strict" {
				// A site that allows Parley but forgot LiveKit in connect-src.
				w.Header().Set("Content-Security-Policy", "script-src 'unsafe-inline' "+s.parley+"; connect-src "+s.parley+
					" ws://localhost:"+port)
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			_ = sitePage.Execute(w, map[string]string{"Title": "Acme (LiveKit)", "Parley": s.parley, "Key": lkSiteKey})
			return
		}
		s.serve(w, r)
	}))
	t.Cleanup(s.srv.Close)
	s.b = newBrowser(t)
	t.Logf("livekit-server, Parley, site and Chromium up in %v", time.Since(started).Round(time.Millisecond))

	// The resolve response names each widget's transport.
	for key, want := range map[string]string{siteKey: "webrtc", lkSiteKey: "livekit"} {
		r := e.Do("POST", "/v1/widget/resolve", map[string]any{"widget_key": key}, "Origin", s.srv.URL)
		w, _ := r.Body["widget"].(map[string]any)
		if r.Status != http.StatusOK || w["voice_transport"] != want {
			t.Fatalf("resolve %s: %d %s; want voice_transport %q", key, r.Status, r.Raw, want)
		}
	}

	// A direct-WebRTC page never fetches the SDK, even with the panel open.
	direct := s.chatTab(t, "/")
	if sess := direct.session(); sess.VoicePath != "/v1/sessions/"+sess.SessionID+"/webrtc" {
		t.Fatalf("webrtc widget: voice_path %q", sess.VoicePath)
	}
	const vendorFetched = `performance.getEntriesByType("resource").filter((r) => r.name.includes("/widget/vendor/livekit-client")).length`
	var n int
	direct.mustEval(vendorFetched, &n)
	if n != 0 || strings.Contains(e.logs.String(), "/widget/vendor/") {
		t.Fatalf("a webrtc widget's page fetched the LiveKit SDK (%d resource entries; server log: %v)",
			n, strings.Contains(e.logs.String(), "/widget/vendor/"))
	}

	// The LiveKit page: chat first; the SDK is not loaded until the call.
	b := s.tab(t, "/lk")
	b.mustEval(`window.modes = []; addEventListener("parley:mode", (e) => modes.push(e.detail.mode)); true`, nil)
	b.openChat()
	sess := b.session()
	if sess.VoicePath != "/v1/sessions/"+sess.SessionID+"/livekit-token" {
		t.Fatalf("livekit widget: voice_path %q", sess.VoicePath)
	}
	b.typeMessage("typed before the call")
	b.waitJS(10*time.Second, "the echo of the first typed message", hasLine("agent", "echo: typed before the call"))
	b.mustEval(vendorFetched, &n)
	if n != 0 {
		t.Fatal("the LiveKit SDK was fetched before the visitor called")
	}

	// The call: mic frames reach the agent on NATS.
	tap := e.tapAudio(e.app.broker.Subjects().InAudio(siteAgent, sess.ConversationID))
	b.mustEval(`Parley._debug.audioConstraints = {echoCancellation: false, noiseSuppression: false, autoGainControl: false}; true`, nil)
	b.click("button.mic")
	clicked := time.Now()
	b.waitJS(20*time.Second, "the LiveKit call to connect", widgetJS+`.call === "connected" && `+widgetJS+`.mode === "voice"
		&& Parley._debug.room() !== null && Parley._debug.room().state === "connected"
		&& !`+sq(".callbar")+`.hidden && `+sq("button.mic")+`.getAttribute("aria-pressed") === "true"`)
	t.Logf("click → call connected over LiveKit: %v", time.Since(clicked).Round(time.Millisecond))
	agenttest.Poll(t, 15*time.Second, "the first mic frame on NATS", func() bool { return len(tap.Frames()) > 0 })
	t.Logf("click → first mic frame on NATS: %v", time.Since(clicked).Round(time.Millisecond))
	b.mustEval(vendorFetched, &n)
	if n != 1 || !strings.Contains(e.logs.String(), `"path":"/widget/vendor/livekit-client-`) {
		t.Fatalf("the LiveKit SDK was fetched %d times (want once); in the server's request log: %v", n,
			strings.Contains(e.logs.String(), `"path":"/widget/vendor/livekit-client-`))
	}
	if !b.consoleHas("[parley:voice] LiveKit call set up:") {
		t.Fatal("no [parley:voice] LiveKit call set up console line")
	}
	var room struct {
		Name    string `json:"name"`
		Leg     string `json:"leg"`
		Visitor string `json:"visitor"`
	}
	b.mustEval(`({name: Parley._debug.room().name, leg: `+widgetJS+`.legId, visitor: Parley._debug.room().localParticipant.identity})`, &room)
	if room.Name != e.app.lk.RoomName(sess.ConversationID) || room.Visitor != "visitor-"+sess.SessionID || room.Leg == "" {
		t.Fatalf("the page's room %+v; want %s as visitor-%s", room, e.app.lk.RoomName(sess.ConversationID), sess.SessionID)
	}
	if v, ok := e.app.broker.Voice(sess.SessionID); !ok || v.ID() != room.Leg {
		t.Fatalf("the broker's voice leg (%v) is not the page's %s", ok, room.Leg)
	}

	// The agent's audio plays: the bridge's track is attached to the
	// widget's <audio>, live, and Chromium decodes audible samples from it:
	// the echo of the fake mic's beeps, well above decoded silence (whose
	// totalAudioEnergy stays under 1e-9; one beep echoed adds about 0.01).
	connected := time.Now()
	agenttest.Poll(t, 20*time.Second, "the agent's audio playing in the page", func() bool {
		var ok bool
		err := b.eval(`(async () => {
			const a = Parley._debug.shadow().querySelector("audio");
			const tr = a && a.srcObject && a.srcObject.getAudioTracks()[0];
			if (!tr || tr.readyState !== "live" || a.paused) return false;
			const s = await `+lkInboundJS+`, audible = 1e-3;
			return s.packetsReceived > 0 && s.totalAudioEnergy > audible;
		})()`, &ok)
		return err == nil && ok
	})
	waited := time.Since(connected)
	var in inboundAudio
	b.mustEval(lkInboundJS, &in)
	t.Logf("page inbound-rtp from the bridge %v after connecting: %+v", waited.Round(time.Millisecond), in)
	// The echo agent hears the fake mic's beeps: transcripts and replies.
	b.waitJS(15*time.Second, "a transcript and its caption", voiceLinesJS+` > 0
		&& `+sq(".cap-agent")+`.textContent.startsWith("echo: utterance 1 (")`)
	b.viewportShot("widget-livekit.png")

	// LiveKit's signalling WebSocket drops and is resumed: the call goes
	// on, the same leg, mic frames still reaching the agent.
	b.mustEval(`Parley._debug.room().simulateScenario("signal-reconnect").then(() => true)`, nil)
	b.waitJS(15*time.Second, "the SDK to resume", `Parley._debug.room() !== null && Parley._debug.room().state === "connected"`)
	before := len(tap.Frames())
	agenttest.Poll(t, 10*time.Second, "mic frames after the resume", func() bool { return len(tap.Frames()) > before+25 })
	var after struct {
		Call, LegID string
	}
	b.mustEval(widgetJS, &after)
	if after.Call != "connected" || after.LegID != room.Leg {
		t.Fatalf("after the signalling resume: call %q on leg %q, want connected on %s", after.Call, after.LegID, room.Leg)
	}

	// Back to text: the room goes, the conversation goes on.
	b.backToText(e.env, sess.SessionID, "Parley._debug.room()")
	agenttest.Poll(t, 10*time.Second, "LiveKit to delete the room", func() bool {
		_, err := e.app.lk.RoomState(context.Background(), room.Name)
		return errors.Is(err, media.ErrNoRoom)
	})
	b.typeMessage("typed after the call")
	b.waitJS(10*time.Second, "the echo of the typed message", hasLine("agent", "echo: typed after the call"))

	// One conversation: the same session and conversation all along; the
	// history has the typed turn, the voice turns, the typed turn, with how
	// each came in, as the widget showed them; the page saw chat → voice → chat.
	if after := b.session(); after.SessionID != sess.SessionID || after.ConversationID != sess.ConversationID {
		t.Fatalf("session after the call %+v, before %+v", after, sess)
	}
	var hist []map[string]any
	agenttest.Poll(t, 10*time.Second, "the widget and the history to agree", func() bool {
		hist = e.History(session{ID: sess.SessionID, Token: b.token()})
		return strings.Join(signalingtest.Transcript(hist), "|") == strings.Join(b.lines(), "|")
	})
	var vias []string
	for _, m := range hist {
		if m["role"] == "visitor" {
			vias = append(vias, fmt.Sprint(m["via"]))
		}
	}
	if len(vias) < 3 || vias[0] != "chat" || vias[len(vias)-1] != "chat" || !strings.Contains(strings.Join(vias, ","), "voice") ||
		signalingtest.Transcript(hist)[0] != "visitor: typed before the call" {
		t.Fatalf("history: %q (visitor turns via %v)", signalingtest.Transcript(hist), vias)
	}
	r := e.Do("GET", "/v1/sessions/"+sess.SessionID+"/history?message_limit=500", nil, "Authorization", "Bearer "+b.token())
	if r.Body["conversation_id"] != sess.ConversationID {
		t.Fatalf("history of conversation %v, want %s", r.Body["conversation_id"], sess.ConversationID)
	}
	var modes []string
	b.mustEval(`modes`, &modes)
	if strings.Join(modes, ",") != "voice,chat" {
		t.Fatalf("mode events in the page: %v; want voice, chat", modes)
	}
	t.Logf("one conversation %s: %d turns, visitor turns via %v; mode events %v", sess.ConversationID, len(hist), vias, modes)

	// A second call, hung up by Parley (DELETE on the leg, as another tab
	// or an operator would): the room is deleted under the widget, which
	// ends the call quietly and goes on in chat.
	b.click("button.mic")
	b.waitJS(20*time.Second, "the second call", widgetJS+`.call === "connected" && Parley._debug.room() !== null`)
	var leg string
	b.mustEval(widgetJS+`.legId`, &leg)
	if leg == "" || leg == room.Leg {
		t.Fatalf("second call's leg %q (first %s)", leg, room.Leg)
	}
	del := e.Do("DELETE", "/v1/sessions/"+sess.SessionID+"/livekit/"+leg, nil, "Authorization", "Bearer "+b.token())
	if del.Status != http.StatusNoContent {
		t.Fatalf("DELETE the leg: %d %s", del.Status, del.Raw)
	}
	waited = b.waitJS(10*time.Second, "the widget to see the hang-up", widgetJS+`.call === "ended" && `+widgetJS+`.mode === "chat"
		&& Parley._debug.room() === null && `+sq(".callbar")+`.hidden`)
	t.Logf("hang-up by Parley → call ended in the page: %v", waited.Round(time.Millisecond))
	var text string
	b.mustEval(`Parley._debug.shadow().querySelector(".log").textContent`, &text)
	if strings.Contains(text, "The voice call was lost") {
		t.Fatalf("a hang-up by Parley reads as a lost call: %q", text)
	}

	// A site whose Content-Security-Policy leaves LiveKit out of
	// connect-src: the visitor reads that voice is unavailable, the owner
	// gets LIVEKIT_UNAVAILABLE naming the URL and connect-src, the leg is
	// hung up, and the chat goes on.
	c := s.b.newTab(t)
	c.must("open the strict-CSP page", chromedp.EmulateViewport(1000, 760), chromedp.Navigate(s.srv.URL+"/lk?csp=strict"))
	c.waitReady()
	c.openChat()
	strict := c.session()
	c.click("button.mic")
	waited = c.waitJS(30*time.Second, "the call to fail", widgetJS+`.call === "failed" && `+widgetJS+`.errors.includes("LIVEKIT_UNAVAILABLE")
		&& `+widgetJS+`.mode === "chat" && Parley._debug.room() === null`)
	t.Logf("LiveKit blocked by connect-src → the call failed in %v", waited.Round(time.Millisecond))
	if !c.consoleHas("[parley:voice] LiveKit call setup failed: LIVEKIT_UNAVAILABLE could not join the LiveKit room at "+e.lk.URL) ||
		!c.consoleHas("connect-src") {
		t.Fatal("no console line naming the LiveKit URL and connect-src")
	}
	c.waitJS(5*time.Second, "the visitor's note", hasLine("error", "Voice isn't available right now; you can type instead."))
	agenttest.Poll(t, 10*time.Second, "the failed call's leg to be hung up", func() bool {
		_, ok := e.app.broker.Voice(strict.SessionID)
		return !ok
	})
	agenttest.Poll(t, 10*time.Second, "LiveKit to delete the failed call's room", func() bool {
		_, err := e.app.lk.RoomState(context.Background(), e.app.lk.RoomName(strict.ConversationID))
		return errors.Is(err, media.ErrNoRoom)
	})
	c.typeMessage("typing instead")
	c.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: typing instead"))

	if b.consoleCount(" exception: ") > 0 {
		t.Fatal("exceptions in the page's console")
	}
}

// lkInboundJS is the inbound-rtp audio report of the LiveKit call's
// subscribed tracks (the bridge's), through the SDK's own stats.
const lkInboundJS = `(async () => {
	const out = {packetsReceived: 0, packetsLost: 0, jitter: 0, totalAudioEnergy: 0, packetsSent: 0};
	const room = Parley._debug.room();
	if (!room) return out;
	for (const p of room.remoteParticipants.values()) {
		for (const pub of p.audioTrackPublications.values()) {
			if (!pub.track) continue;
			const rep = await pub.track.getRTCStatsReport();
			if (!rep) continue;
			rep.forEach((r) => {
				if (r.type === "inbound-rtp" && r.kind === "audio") Object.assign(out, {packetsReceived: r.packetsReceived || 0,
					packetsLost: r.packetsLost || 0, jitter: r.jitter || 0, totalAudioEnergy: r.totalAudioEnergy || 0});
			});
		}
	}
	return out;
})()`
