package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lklog "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media"
	"github.com/parley-rtc/parley/media/speech"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// lkClient plays the widget on the LiveKit transport: a LiveKit participant
// (server-sdk-go) that joins with the token Parley issued, publishes its
// microphone and counts the agent audio it gets from the bridge.
type lkClient struct {
	t            testing.TB
	room         *lksdk.Room
	track        *lksdk.LocalTrack
	received     atomic.Int64
	disconnected chan struct{}
	discOnce     sync.Once
	readers      sync.WaitGroup
	leaveOnce    sync.Once
}

// roomGone checks that LiveKit deleted room after what (a hang-up, a
// switch to chat) and disconnected c from it, then has c leave.
func (e *env) roomGone(c *lkClient, room, after string) {
	e.t.Helper()
	if _, err := e.app.lk.RoomState(context.Background(), room); !errors.Is(err, media.ErrNoRoom) {
		e.t.Fatalf("room after %s: %v", after, err)
	}
	select {
	case <-c.disconnected:
	case <-time.After(10 * time.Second):
		e.t.Fatalf("the visitor was not disconnected when the room was deleted (after %s)", after)
	}
	c.leave()
}

// joinLiveKit connects a client with token; the error is LiveKit's answer.
func joinLiveKit(t testing.TB, url, token string) (*lkClient, error) {
	t.Helper()
	c := &lkClient{t: t, disconnected: make(chan struct{})}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		if rp.Identity() != media.BridgeIdentity {
			return
		}
		c.readers.Go(func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				c.received.Add(1)
			}
		})
	}
	cb.OnDisconnected = func() { c.discOnce.Do(func() { close(c.disconnected) }) }
	room, err := lksdk.ConnectToRoomWithToken(url, token, cb, lksdk.WithAutoSubscribe(true),
		lksdk.WithLogger(lklog.GetDiscardLogger()))
	if err != nil {
		return nil, err
	}
	c.room = room
	t.Cleanup(c.leave)
	return c, nil
}

// publishMic publishes an Opus microphone track and waits until it is
// bound (LiveKit accepted it and negotiated).
func (c *lkClient) publishMic() {
	c.t.Helper()
	track, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "microphone",
		Source: livekit.TrackSource_MICROPHONE}); err != nil {
		c.t.Fatalf("publish microphone: %v", err)
	}
	c.track = track
	agenttest.Poll(c.t, 10*time.Second, "the microphone track bound", track.IsBound)
}

// sendUntil writes Opus silence every 20 ms until start closes, then
// frames on a 20 ms schedule, then 200 ms of silence; it returns when
// everything is written, with the time each of frames was written.
func (c *lkClient) sendUntil(start <-chan struct{}, silence []byte, frames [][]byte) []time.Time {
	write := func(f []byte) {
		if err := c.track.WriteSample(pionmedia.Sample{Data: f, Duration: 20 * time.Millisecond}, nil); err != nil &&
			!errors.Is(err, io.ErrClosedPipe) {
			c.t.Errorf("write sample: %v", err)
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(15 * time.Second)
priming:
	for {
		select {
		case <-start:
			break priming
		case <-deadline:
			c.t.Errorf("the bridge never got the microphone")
			return nil
		case <-tick.C:
			write(silence)
		}
	}
	sent := make([]time.Time, len(frames))
	signalingtest.Paced(frames, func(i int, f []byte) {
		sent[i] = time.Now()
		write(f)
	})
	if silence != nil {
		for range 10 { // a tail, so nothing waits on the jitter window
			<-tick.C
			write(silence)
		}
	}
	return sent
}

func (c *lkClient) leave() {
	c.leaveOnce.Do(func() {
		c.room.Disconnect()
		c.readers.Wait()
	})
}

// rms is the root mean square of little-endian 16-bit PCM.
func rms(pcm []byte) float64 {
	var sum float64
	n := len(pcm) / 2
	for i := range n {
		v := float64(int16(binary.LittleEndian.Uint16(pcm[2*i:])))
		sum += v * v
	}
	if n == 0 {
		return 0
	}
	return math.Sqrt(sum / float64(n))
}

// liveKitToken asks Parley for the session's LiveKit token.
func (e *env) liveKitToken(s session) response {
	e.t.Helper()
	return e.Do("POST", "/v1/sessions/"+s.ID+"/livekit-token", nil, "Authorization", "Bearer "+s.Token)
}

// liveKitCall joins the session's room as its visitor, with the token
// Parley gives (returned too), and publishes a microphone.
func (e *env) liveKitCall(s session) (*lkClient, response) {
	e.t.Helper()
	r := e.liveKitToken(s)
	if r.Status != http.StatusOK {
		e.t.Fatalf("token: %d %s", r.Status, r.Raw)
	}
	c, err := joinLiveKit(e.t, r.Str("livekit_url"), r.Str("token"))
	if err != nil {
		e.t.Fatal(err)
	}
	c.publishMic()
	return c, r
}

// settle gets everything that lives as long as the conversation running
// before a goroutine baseline is taken: the echo agent has the
// conversation (a chat turn), and the server API client has its keep-alive
// connection (one call).
func (e *liveKitEnv) settle(s session, ws *wsClient) {
	e.t.Helper()
	e.env.settle(s, ws)
	_, err := e.app.lk.RoomState(context.Background(), "warm-up")
	if !errors.Is(err, media.ErrNoRoom) {
		e.t.Fatalf("RoomState of a missing room: %v", err)
	}
}

// TestLiveKitRoundTrip: the widget's participant joins with Parley's token
// and publishes real Opus; the bridge hands the frames to the agent on
// NATS in order with the direct path's headers; the echo agent's audio
// comes back on the bridge's track; the echo's transcripts and replies
// reach the WebSocket; LiveKit's own webhooks reach Parley; hanging up
// (DELETE on the leg) removes the bridge and deletes the room; goroutines
// return to their baseline. Once with an Opus agent, once with a PCM one.
func TestLiveKitRoundTrip(t *testing.T) {
	for _, tc := range []struct{ name, format, codec string }{
		{"opus", "", agentbridge.CodecOpus},
		{"pcm16k", "pcm_s16le/16000", "pcm_s16le/16000/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startLiveKitEnv(t, func(c *configs.Config) {
				if tc.format != "" {
					c.Agents.AudioFormats = map[string]string{configs.DefaultAgent: tc.format}
				}
			})
			s := e.MustCreateSession(liveKitWidgetKey, testOrigin, map[string]any{"mode": "chat"})
			ws := e.MustDialWS(s)
			subj := e.app.broker.Subjects()
			in := agenttest.TapAudio(t, e.natsConn(), subj.InAudio(configs.DefaultAgent, s.ConversationID))
			out := agenttest.TapAudio(t, e.natsConn(), subj.OutAudio(configs.DefaultAgent, s.ConversationID))
			e.settle(s, ws)
			baseline := runtime.NumGoroutine()
			before := goleak.IgnoreCurrent()

			began := time.Now()
			r := e.liveKitToken(s)
			issued := time.Since(began)
			room := "parley-" + s.ConversationID
			if r.Status != http.StatusOK || r.Str("token") == "" || r.Str("livekit_url") != e.lk.URL ||
				r.Str("room_name") != room || r.Str("participant_identity") != "visitor-"+s.ID ||
				r.Body["expires_in_seconds"] != float64(600) || !strings.HasPrefix(r.Str("leg_id"), "leg_") {
				t.Fatalf("token: %d %s", r.Status, r.Raw)
			}
			location := r.Header.Get("Location")
			if location != "/v1/sessions/"+s.ID+"/livekit/"+r.Str("leg_id") {
				t.Fatalf("Location = %q", location)
			}
			// A second request while the bridge is up: a new token, the same leg.
			if r2 := e.liveKitToken(s); r2.Status != http.StatusOK || r2.Str("leg_id") != r.Str("leg_id") {
				t.Fatalf("second token: %d %s", r2.Status, r2.Raw)
			}
			st, err := e.app.lk.RoomState(context.Background(), room)
			if err != nil || len(st.Participants) != 1 || st.Participants[0].Identity != media.BridgeIdentity ||
				st.Participants[0].Kind != "agent" {
				t.Fatalf("room before the visitor: %+v %v", st, err)
			}

			joined := time.Now()
			c, err := joinLiveKit(t, r.Str("livekit_url"), r.Str("token"))
			if err != nil {
				t.Fatalf("join with Parley's token: %v", err)
			}
			if c.room.Name() != room {
				t.Fatalf("joined room %q, want %q", c.room.Name(), room)
			}
			c.publishMic()

			silence := signalingtest.Speech(t, 1, 0, 20)[0]
			frames := signalingtest.Speech(t, 3, 400, 600) // 3 utterances, 150 frames
			start := make(chan struct{})
			var sent []time.Time
			sending := make(chan struct{})
			go func() {
				defer close(sending)
				sent = c.sendUntil(start, silence, frames)
			}()

			// The bridge got the visitor's track: media_state connected,
			// after mode voice; the real webhook reports the visitor.
			var sawVoice, sawJoinedHook bool
			for {
				f := ws.Next()
				switch f.Str("type") {
				case "mode":
					sawVoice = sawVoice || f.Str("mode") == "voice"
				case "media_state":
					sawJoinedHook = sawJoinedHook || f.Str("reason") == "livekit_participant_joined"
				}
				if f.Str("type") == "media_state" && f.Str("state") == "connected" && f.Str("reason") == "" {
					if f.Str("leg_id") != r.Str("leg_id") {
						t.Fatalf("media_state %v", f)
					}
					break
				}
			}
			connectedAfter := time.Since(joined)
			close(start)
			<-sending
			if !sawVoice {
				t.Fatal("no mode voice before media_state connected")
			}
			// The sent frames follow the priming silence: find the first.
			firstOf := func(got []agentbridge.AudioFrame) int {
				if tc.format == "" {
					return slices.IndexFunc(got, func(f agentbridge.AudioFrame) bool { return bytes.Equal(f.Payload, frames[0]) })
				}
				return slices.IndexFunc(got, func(f agentbridge.AudioFrame) bool { return rms(f.Payload) > 500 })
			}
			for deadline := time.Now().Add(15 * time.Second); ; <-time.After(20 * time.Millisecond) {
				got, _ := in.Arrivals()
				first := firstOf(got)
				if first >= 0 && len(got) >= first+len(frames) {
					break
				}
				if time.Now().After(deadline) {
					leg, _ := e.app.broker.Voice(s.ID)
					t.Fatalf("%d frames on NATS, the sent ones from %d, of %d sent; media stats %+v",
						len(got), first, len(frames), legStats(leg))
				}
			}
			got, at := in.Arrivals()
			first := firstOf(got)
			var bridgeLat, e2eLat []time.Duration
			for i, f := range got[first : first+len(frames)] {
				k := first + i
				if f.Codec != tc.codec || f.CapturedAt.IsZero() || len(f.Payload) == 0 {
					t.Fatalf("frame %d = %+v", k, f)
				}
				if tc.format == "" && !bytes.Equal(f.Payload, frames[i]) {
					t.Fatalf("frame %d: payload differs from sent frame %d", k, i)
				}
				if tc.format != "" && len(f.Payload) != 640 {
					t.Fatalf("PCM frame %d of %d bytes", k, len(f.Payload))
				}
				// (The SFU rewrites sequence numbers and timestamps: only the
				// sent frames are checked, not the priming before them.)
				if k > first && (f.Seq != got[k-1].Seq+1 || f.Timestamp-got[k-1].Timestamp != 960) {
					t.Fatalf("frames %d,%d out of order: seq %d→%d ts %d→%d", k-1, k, got[k-1].Seq, f.Seq,
						got[k-1].Timestamp, f.Timestamp)
				}
				bridgeLat = append(bridgeLat, at[k].Sub(f.CapturedAt))
				e2eLat = append(e2eLat, at[k].Sub(sent[i]))
			}
			e.waitEchoed(s, len(frames), out.Len, c.received.Load)

			// The echo agent heard three utterances: transcripts and replies.
			transcripts, replies := voiceReplies(ws, 3, func(f frame) {
				if f.Str("type") == "media_state" {
					sawJoinedHook = sawJoinedHook || f.Str("reason") == "livekit_participant_joined"
				}
			})
			if len(transcripts) != 3 || !strings.HasPrefix(replies[0], "echo: utterance 1 (") {
				t.Fatalf("transcripts %q, replies %q", transcripts, replies)
			}
			if !sawJoinedHook {
				f, _ := ws.Until("media_state")
				if f.Str("reason") != "livekit_participant_joined" {
					t.Fatalf("no webhook media_state from LiveKit: %v", f)
				}
			}
			pct := agenttest.Percentile[time.Duration]
			b50, b99, bmax := pct(bridgeLat, 0.5), pct(bridgeLat, 0.99), pct(bridgeLat, 1)
			e50, e99, emax := pct(e2eLat, 0.5), pct(e2eLat, 0.99), pct(e2eLat, 1)
			leg, _ := e.app.broker.Voice(s.ID)
			t.Logf("token (room + bridge join) %s; join → media_state connected %s; %d priming frames",
				issued.Round(time.Millisecond), connectedAfter.Round(time.Millisecond), first)
			t.Logf("RTP arrival at the bridge → NATS subscriber: p50 %s p99 %s max %s", b50, b99, bmax)
			if tc.format == "" { // (PCM frames are matched by loudness: ± one frame)
				t.Logf("client write → SFU → bridge → NATS subscriber: p50 %s p99 %s max %s", e50, e99, emax)
			}
			t.Logf("client got %d agent packets of %d; bridge stats %+v", c.received.Load(), len(frames), legStats(leg))

			// Ops sees the room from LiveKit's RoomService: the visitor and
			// the bridge, with their audio tracks.
			ak, _ := e.newAdminKey("", broker.ScopeOpsRead)
			agenttest.Poll(t, 10*time.Second, "the LiveKit room state in the ops detail", func() bool {
				r := e.Do("GET", "/v1/ops/rooms/"+s.ConversationID, nil, "Authorization", "Bearer "+ak)
				lk, _ := r.Body["livekit"].(map[string]any)
				ps, _ := lk["participants"].([]any)
				return r.Status == 200 && len(ps) >= 2
			})

			// Hang up with DELETE on the leg: back to chat, the bridge leaves,
			// the room is deleted (the client is disconnected by LiveKit).
			e.hangUp(s, ws, location)
			e.roomGone(c, room, "hang-up")
			if n := e.app.lk.NumBridges(); n != 0 {
				t.Fatalf("%d bridges after hang-up", n)
			}
			waitForGoroutines(t, baseline, before)
		})
	}
}

// TestLiveKitTokens: Parley's token carries exactly the grants it should;
// it joins its own room only; LiveKit refuses an expired or forged token.
func TestLiveKitTokens(t *testing.T) {
	e := startLiveKitEnv(t)
	a := e.MustCreateSession(liveKitWidgetKey, testOrigin, nil)
	b := e.MustCreateSession(liveKitWidgetKey, testOrigin, nil)
	ra, rb := e.liveKitToken(a), e.liveKitToken(b)
	if ra.Status != http.StatusOK || rb.Status != http.StatusOK {
		t.Fatalf("tokens: %d %s / %d %s", ra.Status, ra.Raw, rb.Status, rb.Raw)
	}
	roomA, roomB := ra.Str("room_name"), rb.Str("room_name")

	// The grants, decoded with LiveKit's own verifier.
	v, err := auth.ParseAPIToken(ra.Str("token"))
	if err != nil {
		t.Fatal(err)
	}
	claims, grants, err := v.Verify(liveKitDevSecret)
	if err != nil {
		t.Fatalf("verify with the API secret: %v", err)
	}
	vg := grants.Video
	if v.APIKey() != liveKitDevKey || grants.Identity != "visitor-"+a.ID || vg == nil || !vg.RoomJoin || vg.Room != roomA ||
		!vg.GetCanPublish() || !slices.Equal(vg.CanPublishSources, []string{"microphone"}) || !vg.GetCanSubscribe() ||
		vg.GetCanPublishData() || vg.GetCanUpdateOwnMetadata() || vg.RoomAdmin || vg.RoomCreate || vg.RoomList ||
		vg.RoomRecord || vg.Recorder || vg.Hidden || vg.Agent || vg.IngressAdmin || vg.DestinationRoom != "" {
		t.Fatalf("grants: %+v video %+v", grants, vg)
	}
	var md map[string]string
	if err := json.Unmarshal([]byte(grants.Metadata), &md); err != nil || md["conversation_id"] != a.ConversationID {
		t.Fatalf("metadata %q: %v", grants.Metadata, err)
	}
	if ttl := claims.ExpiresAt.Sub(claims.NotBefore.Time); ttl < 10*time.Minute-2*time.Second || ttl > 10*time.Minute+2*time.Second {
		t.Fatalf("token lifetime %s, want livekit.token_ttl 10m", ttl)
	}
	if _, _, err := v.Verify("not-the-secret"); err == nil {
		t.Fatal("the token verified with another secret")
	}

	// A's token puts A in room A, never in B; it is no server API key.
	c, err := joinLiveKit(t, e.lk.URL, ra.Str("token"))
	if err != nil {
		t.Fatalf("join A: %v", err)
	}
	if c.room.Name() != roomA {
		t.Fatalf("A's token joined %q", c.room.Name())
	}
	stB, err := e.app.lk.RoomState(context.Background(), roomB)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range stB.Participants {
		if p.Identity == "visitor-"+a.ID {
			t.Fatalf("A's visitor is in room B: %+v", stB)
		}
	}
	for _, call := range []struct{ method, body string }{
		{"ListParticipants", `{"room":"` + roomB + `"}`},
		{"RemoveParticipant", `{"room":"` + roomB + `","identity":"` + media.BridgeIdentity + `"}`},
		{"DeleteRoom", `{"room":"` + roomB + `"}`},
		{"CreateRoom", `{"name":"someone-elses"}`},
	} {
		req, _ := http.NewRequest("POST", strings.Replace(e.lk.URL, "ws://", "http://", 1)+"/twirp/livekit.RoomService/"+call.method,
			strings.NewReader(call.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+ra.Str("token"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized && res.StatusCode != http.StatusForbidden {
			t.Fatalf("RoomService.%s with a visitor token: %d %s", call.method, res.StatusCode, body)
		}
	}
	c.leave()

	// Tokens LiveKit must refuse: expired (past LiveKit's one-minute
	// leeway; auth.AccessToken cannot mint one, so the JWT is built by
	// hand); signed with another secret, for A's room or B's.
	mint := func(secret, room string, exp time.Time) string {
		claims := jwt.MapClaims{"iss": liveKitDevKey, "sub": "visitor-" + a.ID, "nbf": exp.Add(-time.Hour).Unix(),
			"exp": exp.Unix(), "video": map[string]any{"roomJoin": true, "room": room}}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if c, err := joinLiveKit(t, e.lk.URL, mint(liveKitDevSecret, roomA, time.Now().Add(time.Minute))); err != nil {
		t.Fatalf("the hand-built token is refused even when valid: %v", err)
	} else {
		c.leave()
	}
	for name, tok := range map[string]string{
		"expired":      mint(liveKitDevSecret, roomA, time.Now().Add(-5*time.Minute)),
		"forged":       mint("a-secret-that-is-not-livekits", roomA, time.Now().Add(time.Minute)),
		"forged other": mint("a-secret-that-is-not-livekits", roomB, time.Now().Add(time.Minute)),
	} {
		if c, err := joinLiveKit(t, e.lk.URL, tok); err == nil {
			c.leave()
			t.Fatalf("%s token: LiveKit let it join %s", name, c.room.Name())
		}
	}
}

// signedWebhook is a webhook request the way LiveKit signs one: a JWT from
// the API key and secret whose sha256 claim is the body's hash.
func signedWebhook(t *testing.T, key, secret string, body []byte) string {
	t.Helper()
	sum := sha256.Sum256(body)
	tok, err := auth.NewAccessToken(key, secret).SetValidFor(5 * time.Minute).
		SetSha256(base64.StdEncoding.EncodeToString(sum[:])).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestLiveKitWebhook: a correctly signed event is accepted and recorded as
// media_state (once, however often it is delivered); a tampered body, a
// wrong signature or none at all is 401; events for rooms that are not
// Parley's are acknowledged and ignored.
func TestLiveKitWebhook(t *testing.T) {
	// No livekit-server needed: the webhook is checked against the
	// configured key and secret.
	e := startEnv(t, func(c *configs.Config) {
		c.LiveKit.URL, c.LiveKit.APIKey, c.LiveKit.APISecret = "ws://127.0.0.1:9", liveKitDevKey, liveKitDevSecret
	}, withWidget(configs.WidgetConfig{Key: liveKitWidgetKey, ID: "wdg_livekit", AllowDevOrigins: true, VoiceTransport: "livekit"}))
	s := e.MustCreateSession(liveKitWidgetKey, testOrigin, nil)
	ws := e.MustDialWS(s)
	event := func(kind, room, identity, id string) []byte {
		ev := &livekit.WebhookEvent{Event: kind, Id: id, CreatedAt: time.Now().Unix(), Room: &livekit.Room{Name: room}}
		if identity != "" {
			ev.Participant = &livekit.ParticipantInfo{Identity: identity}
		}
		data, err := protojson.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	post := func(body []byte, authz string) response {
		h := []string{"Content-Type", "application/webhook+json"}
		if authz != "" {
			h = append(h, "Authorization", authz)
		}
		return e.DoRaw("POST", "/v1/livekit/webhook", "application/webhook+json", string(body), h...)
	}
	room := "parley-" + s.ConversationID
	joined := event("participant_joined", room, "visitor-"+s.ID, "EV_joined1")
	sig := signedWebhook(t, liveKitDevKey, liveKitDevSecret, joined)
	r := post(joined, sig)
	if r.Status != http.StatusOK || r.Body["recorded"] != true {
		t.Fatalf("signed webhook: %d %s", r.Status, r.Raw)
	}
	f, _ := ws.Until("media_state")
	if f.Str("state") != "connected" || f.Str("reason") != "livekit_participant_joined" {
		t.Fatalf("media_state frame %v", f)
	}
	// LiveKit retries: the same event is recorded once.
	if again := post(joined, sig); again.Status != http.StatusOK || again.Body["seq"] != r.Body["seq"] {
		t.Fatalf("redelivered webhook: %d %s (first %s)", again.Status, again.Raw, r.Raw)
	}

	tampered := bytes.Replace(joined, []byte("participant_joined"), []byte("participant_left"), 1)
	for name, c := range map[string]struct {
		body  []byte
		authz string
	}{
		"tampered body":  {tampered, sig},
		"wrong secret":   {joined, signedWebhook(t, liveKitDevKey, "not-the-secret", joined)},
		"unknown key":    {joined, signedWebhook(t, "otherkey", liveKitDevSecret, joined)},
		"no signature":   {joined, ""},
		"garbage header": {joined, "Bearer nope"},
	} {
		if r := post(c.body, c.authz); r.Status != http.StatusUnauthorized || r.ErrCode() != "WEBHOOK_SIGNATURE_INVALID" {
			t.Fatalf("%s: %d %s", name, r.Status, r.Raw)
		}
	}

	// Left and room_finished; a room that is not ours; the bridge itself.
	for _, c := range []struct {
		body     []byte
		recorded bool
	}{
		{event("participant_left", room, "visitor-"+s.ID, "EV_left1"), true},
		{event("participant_joined", room, media.BridgeIdentity, "EV_bridge1"), false},
		{event("participant_joined", "someone-elses-room", "visitor-x", "EV_other1"), false},
		{event("track_published", room, "visitor-"+s.ID, "EV_track1"), false},
		{event("room_finished", room, "", "EV_finished1"), true},
	} {
		r := post(c.body, signedWebhook(t, liveKitDevKey, liveKitDevSecret, c.body))
		if r.Status != http.StatusOK || r.Body["recorded"] != c.recorded {
			t.Fatalf("%s: %d %s", c.body, r.Status, r.Raw)
		}
	}
	var got []string
	for len(got) < 2 {
		f, _ := ws.Until("media_state")
		got = append(got, f.Str("state")+"/"+f.Str("reason"))
	}
	if want := []string{"disconnected/livekit_participant_left", "closed/livekit_room_finished"}; !slices.Equal(got, want) {
		t.Fatalf("media_state frames %q, want %q", got, want)
	}
}

// TestLiveKitModeChatEndsBridge: switching the session to chat ends the
// LiveKit leg like a WebRTC one: the bridge leaves, the room is deleted,
// the visitor is disconnected, goroutines return to their baseline.
func TestLiveKitModeChatEndsBridge(t *testing.T) {
	e := startLiveKitEnv(t)
	s := e.MustCreateSession(liveKitWidgetKey, testOrigin, nil)
	ws := e.MustDialWS(s)
	e.settle(s, ws)
	baseline := runtime.NumGoroutine()
	before := goleak.IgnoreCurrent()
	c, r := e.liveKitCall(s)
	start, sending := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sending)
		c.sendUntil(start, signalingtest.Speech(t, 1, 0, 20)[0], signalingtest.Speech(t, 1, 200, 0))
	}()
	for {
		if f, _ := ws.Until("media_state"); f.Str("state") == "connected" && f.Str("reason") == "" {
			break
		}
	}
	close(start)
	<-sending
	room := r.Str("room_name")
	st, err := e.app.lk.RoomState(context.Background(), room)
	if err != nil || len(st.Participants) != 2 {
		t.Fatalf("room in the call: %+v %v", st, err)
	}
	t.Logf("room state: %+v", st)

	if r := e.Do("POST", "/v1/sessions/"+s.ID+"/mode", map[string]any{"mode": "chat"}, "Authorization", "Bearer "+s.Token); r.Status != http.StatusOK {
		t.Fatalf("mode chat: %d %s", r.Status, r.Raw)
	}
	if _, ok := e.app.broker.Voice(s.ID); ok {
		t.Fatal("voice leg still up after switching to chat")
	}
	e.roomGone(c, room, "mode chat")
	waitForGoroutines(t, baseline, before)
}

// TestLiveKitTokenErrors: coded errors without a LiveKit server.
func TestLiveKitTokenErrors(t *testing.T) {
	widgets := func(c *configs.Config) {
		for _, w := range []configs.WidgetConfig{
			{Key: liveKitWidgetKey, ID: "wdg_livekit", AllowDevOrigins: true, VoiceTransport: "livekit"},
			{Key: "pk_lk_chat", ID: "wdg_lk_chat", AllowDevOrigins: true, VoiceTransport: "livekit", Mode: "chat"},
		} {
			withWidget(w)(c)
		}
	}
	e := startEnv(t, voiceConfig, widgets) // no livekit.url
	lkSess := e.MustCreateSession(liveKitWidgetKey, testOrigin, nil)
	cases := []struct {
		name   string
		s      session
		status int
		code   string
	}{
		{"webrtc widget", e.NewSession(nil), http.StatusConflict, "TRANSPORT_MISMATCH"},
		{"chat-only widget", e.MustCreateSession("pk_lk_chat", testOrigin, nil), http.StatusForbidden, "MODE_NOT_ALLOWED"},
		{"livekit not configured", lkSess, http.StatusServiceUnavailable, "VOICE_UNAVAILABLE"},
		{"bad session token", session{ID: lkSess.ID, Token: "nope"}, http.StatusUnauthorized, "SESSION_TOKEN_INVALID"},
	}
	for _, c := range cases {
		if r := e.liveKitToken(c.s); r.Status != c.status || r.ErrCode() != c.code {
			t.Fatalf("%s: %d %s", c.name, r.Status, r.Raw)
		}
	}
	// A livekit widget's visitor cannot go around the SFU.
	if _, r := e.OfferVoice(lkSess, ""); r.Status != http.StatusConflict || r.ErrCode() != "TRANSPORT_MISMATCH" {
		t.Fatalf("webrtc offer on a livekit widget: %d %s", r.Status, r.Raw)
	}
	// The webhook needs LiveKit configured.
	if r := e.DoRaw("POST", "/v1/livekit/webhook", "application/webhook+json", "{}"); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("webhook without LiveKit: %d %s", r.Status, r.Raw)
	}

	// LiveKit configured but not reachable: 503 LIVEKIT_UNAVAILABLE, no leg.
	down := startEnv(t, voiceConfig, widgets, func(c *configs.Config) {
		c.LiveKit.URL, c.LiveKit.APIKey, c.LiveKit.APISecret = "ws://127.0.0.1:"+strconv.Itoa(freePort(t, "tcp")), liveKitDevKey, liveKitDevSecret
	})
	ds := down.MustCreateSession(liveKitWidgetKey, testOrigin, nil)
	if r := down.liveKitToken(ds); r.Status != http.StatusServiceUnavailable || r.ErrCode() != "LIVEKIT_UNAVAILABLE" {
		t.Fatalf("unreachable LiveKit: %d %s", r.Status, r.Raw)
	}
	if _, ok := down.app.broker.Voice(ds.ID); ok {
		t.Fatal("a voice leg was left behind")
	}
}

// TestLiveKitSpeechPipeline: the speech pipeline works the same on the
// LiveKit transport: the visitor's participant speaks (flite's voice, real
// Opus through livekit-server), the bridge's utterance becomes a voice
// turn for the text-only echo agent, and the reply is spoken back on the
// bridge's track.
func TestLiveKitSpeechPipeline(t *testing.T) {
	_, f := signalingtest.RequireSpeech(t)
	e := startLiveKitEnv(t, withSpeech)
	s := e.MustCreateSession(liveKitWidgetKey, testOrigin, map[string]any{"mode": "chat"})
	ws := e.MustDialWS(s)
	c, _ := e.liveKitCall(s)
	silence := signalingtest.Quiet(t, 1)[0]
	start := make(chan struct{})
	go c.sendUntil(start, silence, append(signalingtest.Say(t, f, "where is my order"), signalingtest.Quiet(t, 50)...))
	for {
		fr := ws.Next()
		if fr.Str("type") == "media_state" && fr.Str("state") == "connected" && fr.Str("reason") == "" {
			break
		}
	}
	close(start)
	var heard frame
	for {
		fr := ws.Next()
		if fr.Str("type") == "message" && fr.Str("via") == "voice" {
			heard = fr
		}
		if fr.Str("type") == "done" && heard != nil && fr.Str("reply_to") == heard.Str("message_id") {
			if w := speech.WordErrorRate("where is my order", heard.Str("body")); w > 0.25 || !strings.HasPrefix(fr.Str("body"), "You said: ") {
				t.Fatalf("heard %q (WER %.2f), replied %q", heard.Str("body"), w, fr.Str("body"))
			}
			break
		}
	}
	agenttest.Poll(t, 30*time.Second, "the spoken reply on the bridge's track", func() bool { return c.received.Load() >= 50 })
}
