package main

import (
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// voiceConfig turns on loopback candidates: tests may run where lo is the
// only interface.
func voiceConfig(c *configs.Config) { c.Media.IncludeLoopback = true }

// tapAudio collects the frames published on subject of the env's NATS.
func (e *env) tapAudio(subject string) *agenttest.AudioTap {
	e.t.Helper()
	return agenttest.TapAudio(e.t, e.natsConn(), subject)
}

// waitEchoed waits until the echo agent's audio for all sent frames is on
// NATS (onNATS counts it) and the client got at least 90% of it back
// (received counts it).
func (e *env) waitEchoed(s session, sent int, onNATS func() int, received func() int64) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for onNATS() < sent || received() < int64(sent)*9/10 {
		if time.Now().After(deadline) {
			leg, _ := e.app.broker.Voice(s.ID)
			e.t.Fatalf("echo: %d frames from the agent on NATS, %d received by the client, of %d sent; media stats %+v",
				onNATS(), received(), sent, legStats(leg))
		}
		<-time.After(20 * time.Millisecond)
	}
}

// voiceReplies reads ws until n replies are done and returns the final
// voice transcripts and the replies; saw is given every frame read, for
// the test's own checks.
func voiceReplies(ws *wsClient, n int, saw func(frame)) (transcripts, replies []string) {
	for len(replies) < n {
		f := ws.Next()
		saw(f)
		switch f.Str("type") {
		case "transcript":
			if f["final"] == true && f.Str("via") == "voice" {
				transcripts = append(transcripts, f.Str("text"))
			}
		case "done":
			replies = append(replies, f.Str("body"))
		}
	}
	return transcripts, replies
}

// hangUp ends the voice leg at location with DELETE: the conversation goes
// back to chat, and a second DELETE finds no leg.
func (e *env) hangUp(s session, ws *wsClient, location string) {
	e.t.Helper()
	auth := []string{"Authorization", "Bearer " + s.Token}
	if r := e.Do("DELETE", location, nil, auth...); r.Status != http.StatusNoContent {
		e.t.Fatalf("DELETE leg: %d %s", r.Status, r.Raw)
	}
	if f, _ := ws.Until("mode"); f.Str("mode") != "chat" {
		e.t.Fatalf("after hang-up: %v", f)
	}
	if r := e.Do("DELETE", location, nil, auth...); r.Status != http.StatusNotFound || r.ErrCode() != "LEG_NOT_FOUND" {
		e.t.Fatalf("second DELETE: %d %s", r.Status, r.Raw)
	}
}

// TestVoiceRoundTrip: a pion client offers over HTTP, its Opus frames reach
// the agent on NATS in order with the contract's headers, the echo agent
// sends them back and the client receives them; the echo's transcripts and
// replies reach the WebSocket; hanging up returns to chat.
func TestVoiceRoundTrip(t *testing.T) {
	e := startEnv(t, voiceConfig)
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	subj := e.app.broker.Subjects()
	in := e.tapAudio(subj.InAudio(configs.DefaultAgent, s.ConversationID))
	out := e.tapAudio(subj.OutAudio(configs.DefaultAgent, s.ConversationID))
	e.settle(s, ws)
	baseline := runtime.NumGoroutine()
	before := goleak.IgnoreCurrent()

	c := e.NewVoiceClient(s)
	if !strings.HasPrefix(c.Location, "/v1/sessions/"+s.ID+"/webrtc/leg_") {
		t.Fatalf("Location = %q", c.Location)
	}
	c.WaitConnected()
	frames := signalingtest.Speech(t, 3, 400, 600) // 3 utterances, 150 frames
	c.Send(frames)

	agenttest.Poll(t, 10*time.Second, "every frame on NATS", func() bool { return len(in.Frames()) >= len(frames) })
	got := in.Frames()
	for i, f := range got {
		if f.Codec != agentbridge.CodecOpus || f.CapturedAt.IsZero() || len(f.Payload) == 0 {
			t.Fatalf("frame %d = %+v", i, f)
		}
		if i > 0 && (f.Seq != got[i-1].Seq+1 || f.Timestamp != got[i-1].Timestamp+960) {
			t.Fatalf("frames %d,%d out of order: seq %d→%d ts %d→%d", i-1, i, got[i-1].Seq, f.Seq, got[i-1].Timestamp, f.Timestamp)
		}
	}
	if len(got) != len(frames) {
		t.Fatalf("%d frames on NATS, sent %d", len(got), len(frames))
	}
	e.waitEchoed(s, len(frames), out.Len, c.Received.Load)

	// The echo agent heard three utterances: transcripts and replies.
	sawVoice, sawConnected := false, false
	transcripts, replies := voiceReplies(ws, 3, func(f frame) {
		switch f.Str("type") {
		case "mode":
			sawVoice = sawVoice || f.Str("mode") == "voice"
		case "media_state":
			sawConnected = sawConnected || f.Str("state") == "connected"
		}
	})
	if !sawVoice || !sawConnected || len(transcripts) != 3 || !strings.HasPrefix(replies[0], "echo: utterance 1 (") {
		t.Fatalf("voice frames: mode voice %v, connected %v, transcripts %q, replies %q", sawVoice, sawConnected, transcripts, replies)
	}

	// Hang up: back to chat; a second hang-up finds no leg.
	e.hangUp(s, ws, c.Location)
	c.Close()
	waitForGoroutines(t, baseline, before)
}

// TestVoiceAndChatOneConversation: chat → voice → transcript → chat, one
// conversation, every turn in order with the right via.
func TestVoiceAndChatOneConversation(t *testing.T) {
	e := startEnv(t, voiceConfig)
	s, ws := e.chatSession("v-1", "typed first")

	r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": "voice"}, "Authorization", "Bearer "+s.Token)
	if r.Status != 200 || r.Body["changed"] != true || r.Str("previous_mode") != "chat" {
		t.Fatalf("mode voice: %d %s", r.Status, r.Raw)
	}
	c := e.NewVoiceClient(s)
	c.WaitConnected()
	c.Send(signalingtest.Speech(t, 1, 400, 400))
	done, _ := ws.Until("done")
	heard, ok := strings.CutPrefix(done.Str("body"), "echo: ")
	if !ok || !strings.HasPrefix(heard, "utterance 1 (0.4") {
		t.Fatalf("voice reply = %v", done)
	}
	// Typing during the call goes into the same context.
	ws.Send(map[string]any{"type": "message", "body": "typed in the call", "client_message_id": "v-2"})
	if f, _ := ws.Until("done"); f.Str("body") != "echo: typed in the call" {
		t.Fatalf("reply during the call = %v", f)
	}
	ws.Send(map[string]any{"type": "mode", "mode": "chat"})
	if f, _ := ws.Until("mode"); f.Str("mode") != "chat" {
		t.Fatalf("mode frame = %v", f)
	}
	ws.Send(map[string]any{"type": "message", "body": "typed last", "client_message_id": "v-3"})
	if f, _ := ws.Until("done"); f.Str("body") != "echo: typed last" {
		t.Fatalf("last reply = %v", f)
	}

	var got []string
	for _, m := range e.History(s) {
		got = append(got, m["role"].(string)+"/"+m["via"].(string)+": "+m["body"].(string))
	}
	want := []string{
		"visitor/chat: typed first", "agent/chat: echo: typed first",
		"visitor/voice: " + heard, "agent/voice: echo: " + heard,
		"visitor/chat: typed in the call", "agent/voice: echo: typed in the call",
		"visitor/chat: typed last", "agent/chat: echo: typed last",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("history:\n got %q\nwant %q", got, want)
	}
	// The leg was hung up by the switch to chat.
	if _, ok := e.app.broker.Voice(s.ID); ok {
		t.Fatal("voice leg still up after switching to chat")
	}
}

// TestVoiceBadInput: coded errors for bad offers and leg operations.
func TestVoiceBadInput(t *testing.T) {
	e := startEnv(t, voiceConfig)
	s := e.NewSession(nil)
	other := e.NewSession(nil)
	path := "/v1/sessions/" + s.ID + "/webrtc"
	auth := []string{"Authorization", "Bearer " + s.Token}
	videoOnly := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n"
	cases := []struct {
		name, ctype, body string
		headers           []string
		status            int
		code              string
	}{
		{"garbage SDP", "application/sdp", "this is not sdp", auth, 400, "SDP_INVALID"},
		{"empty SDP", "application/sdp", "", auth, 400, "SDP_INVALID"},
		{"SDP over 64 KiB", "application/sdp", "v=0\r\n" + strings.Repeat("a=x\r\n", 14000), auth, 413, "PAYLOAD_TOO_LARGE"},
		{"no audio", "application/sdp", videoOnly, auth, 422, "SDP_NO_AUDIO"},
		{"JSON answer instead of offer", "application/json", `{"type":"answer","sdp":"v=0"}`, auth, 400, "SDP_INVALID"},
		{"wrong content type", "text/plain", "v=0", auth, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"another session's token", "application/sdp", videoOnly, []string{"Authorization", "Bearer " + other.Token}, 401, "SESSION_TOKEN_INVALID"},
		{"no token", "application/sdp", videoOnly, nil, 401, "SESSION_TOKEN_INVALID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.DoRaw("POST", path, tc.ctype, tc.body, tc.headers...)
			if r.Status != tc.status || r.ErrCode() != tc.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, tc.status, tc.code)
			}
		})
	}
	for _, tc := range []struct{ method, path, ctype, body, code string }{
		{"PATCH", path + "/leg_nope", "application/trickle-ice-sdpfrag", "a=ice-ufrag:x\r\n", "LEG_NOT_FOUND"},
		{"DELETE", path + "/leg_nope", "", "", "LEG_NOT_FOUND"},
	} {
		if r := e.DoRaw(tc.method, tc.path, tc.ctype, tc.body, auth...); r.Status != 404 || r.ErrCode() != tc.code {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, r.Status, r.Raw)
		}
	}
	// A failed offer leaves the conversation in chat, with nothing logged.
	if r := e.Post(s, "still chat", "", true); r.Status != 200 {
		t.Fatalf("post: %d %s", r.Status, r.Raw)
	}
	for _, m := range e.History(s) {
		if m["via"] != "chat" {
			t.Fatalf("history after bad offers: %v", m)
		}
	}
	// A bad trickle fragment on a live leg.
	c := e.NewVoiceClient(s)
	for _, bad := range []string{"garbage", strings.Repeat("a=candidate:x\r\n", 10)} {
		if r := c.Trickle(s.Token, bad); r.Status != 400 || r.ErrCode() != "SDP_FRAGMENT_INVALID" {
			t.Fatalf("bad fragment %.10q: %d %s", bad, r.Status, r.Raw)
		}
	}
	if r := e.DoRaw("PATCH", c.Location, "application/json", "{}", auth...); r.Status != 415 {
		t.Fatalf("PATCH json: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": "fax"}, auth...); r.Status != 422 || r.ErrCode() != "VALIDATION_FAILED" {
		t.Fatalf("bad mode: %d %s", r.Status, r.Raw)
	}
}

// waitForGoroutines waits until no more goroutines run than at baseline,
// and shows the extra ones if they stay.
func waitForGoroutines(t *testing.T, baseline int, before goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, baseline %d: %v", runtime.NumGoroutine(), baseline, goleak.Find(before))
		}
		<-time.After(20 * time.Millisecond)
	}
}

// legStats returns the media counters of a voice leg, if it is a media leg.
func legStats(v *broker.Voice) any {
	if v == nil {
		return nil
	}
	if m, ok := v.Media().(interface{ Stats() media.Stats }); ok {
		return m.Stats()
	}
	return nil
}

// TestVoiceICERestart: an ICE restart through PATCH keeps the leg, its id
// and the conversation; frames keep flowing. Trickled candidates get 204.
func TestVoiceICERestart(t *testing.T) {
	e := startEnv(t, voiceConfig)
	s := e.NewSession(nil)
	in := e.tapAudio(e.app.broker.Subjects().InAudio(configs.DefaultAgent, s.ConversationID))
	c := e.NewVoiceClient(s)
	c.WaitConnected()
	c.Send(signalingtest.Speech(t, 1, 200, 200))
	agenttest.Poll(t, 10*time.Second, "frames before the restart", func() bool { return len(in.Frames()) >= 20 })

	// A trickled candidate (the client's own, again) is accepted.
	var cand string
	for _, line := range strings.Split(c.PC.LocalDescription().SDP, "\r\n") {
		if strings.HasPrefix(line, "a=candidate:") {
			cand = line
			break
		}
	}
	if r := c.Trickle(s.Token, "a=mid:0\r\n"+cand+"\r\n"); r.Status != http.StatusNoContent {
		t.Fatalf("trickle: %d %s", r.Status, r.Raw)
	}

	// ICE restart with a full re-offer, as a browser does after restartIce():
	// a new ICE session, so a new ETag.
	etag := c.ETag
	if r := c.RestartICE(s.Token); r.Status != http.StatusOK || !strings.HasPrefix(r.Raw, "v=0") || c.ETag == "" || c.ETag == etag {
		t.Fatalf("restart: %d %s, ETag %q after %q", r.Status, r.Raw, c.ETag, etag)
	}
	before := len(in.Frames())
	c.Send(signalingtest.Speech(t, 1, 200, 200))
	agenttest.Poll(t, 10*time.Second, "frames after the restart", func() bool { return len(in.Frames()) >= before+15 })
	if v, ok := e.app.broker.Voice(s.ID); !ok || !strings.HasSuffix(c.Location, v.ID()) {
		t.Fatal("the leg changed with the restart")
	}
}

// TestVoiceSilenceEndsLeg: a leg with no audio past media.silence_timeout
// is ended and the conversation goes on in chat.
func TestVoiceSilenceEndsLeg(t *testing.T) {
	e := startEnv(t, voiceConfig, func(c *configs.Config) { c.Media.SilenceTimeout = time.Second })
	s, ws, _ := e.voiceSession()
	var states []string
	for {
		f := ws.Next()
		if f.Str("type") == "media_state" {
			states = append(states, f.Str("state")+"/"+f.Str("reason"))
		}
		if f.Str("type") == "mode" && f.Str("mode") == "chat" {
			if f.Str("reason") != "silence_timeout" {
				t.Fatalf("back to chat with %v", f)
			}
			break
		}
	}
	if !slices.Contains(states, "closed/silence_timeout") {
		t.Fatalf("media states %q", states)
	}
	if r := e.Post(s, "still here", "", true); r.Status != 200 {
		t.Fatalf("chat after the leg ended: %d %s", r.Status, r.Raw)
	}
}

// TestVoiceClientGone: a client that disappears without hanging up ends
// its leg (ICE or DTLS notices) and the conversation returns to chat.
func TestVoiceClientGone(t *testing.T) {
	e := startEnv(t, voiceConfig, func(c *configs.Config) {
		c.Media.DisconnectedTimeout, c.Media.FailedTimeout = 500*time.Millisecond, time.Second
	})
	s, ws, c := e.voiceSession()
	c.Send(signalingtest.Speech(t, 1, 100, 100))
	c.Close()
	f, _ := ws.Until("mode")
	for f.Str("mode") != "chat" {
		f, _ = ws.Until("mode")
	}
	if _, ok := e.app.broker.Voice(s.ID); ok {
		t.Fatal("voice leg still up")
	}
}

// TestVoicePCMAgent: an agent configured for 16 kHz PCM gets decoded
// frames and its PCM is encoded back to Opus for the visitor.
func TestVoicePCMAgent(t *testing.T) {
	e := startEnv(t, voiceConfig, func(c *configs.Config) {
		c.Agents.AudioFormats = map[string]string{configs.DefaultAgent: "pcm_s16le/16000"}
	})
	s := e.NewSession(nil)
	ws := e.MustDialWS(s)
	in := e.tapAudio(e.app.broker.Subjects().InAudio(configs.DefaultAgent, s.ConversationID))
	c := e.NewVoiceClient(s)
	c.WaitConnected()
	frames := signalingtest.Speech(t, 2, 400, 400)
	c.Send(frames)
	agenttest.Poll(t, 10*time.Second, "PCM frames on NATS", func() bool { return len(in.Frames()) >= len(frames) })
	for _, f := range in.Frames() {
		if f.Codec != "pcm_s16le/16000/1" || len(f.Payload) != 640 {
			t.Fatalf("frame %+v", f.Codec)
		}
	}
	agenttest.Poll(t, 10*time.Second, "the encoded echo at the client", func() bool { return c.Received.Load() >= int64(len(frames))*9/10 })
	if f, _ := ws.Until("transcript"); f.Str("via") != "voice" {
		t.Fatalf("transcript frame %v", f)
	}
}
