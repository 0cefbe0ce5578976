package media

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// checkRejectedVideo checks the form of our answer's video m-line: port 0,
// the offer's proto and a format of its own, a=mid of the offer, a=inactive,
// nothing else of a live m-line, and out of a=group:BUNDLE; the accepted
// audio m-line carries the candidates and is in the group.
func checkRejectedVideo(t *testing.T, offer, answer string) {
	t.Helper()
	var o, a sdp.SessionDescription
	if err := o.UnmarshalString(offer); err != nil {
		t.Fatal(err)
	}
	if err := a.UnmarshalString(answer); err != nil {
		t.Fatalf("answer: %v\n%s", err, answer)
	}
	if len(a.MediaDescriptions) != len(o.MediaDescriptions) {
		t.Fatalf("%d m-lines for %d offered:\n%s", len(a.MediaDescriptions), len(o.MediaDescriptions), answer)
	}
	group, _ := a.Attribute("group")
	bundle := strings.Fields(group)
	for i, m := range a.MediaDescriptions {
		om := o.MediaDescriptions[i]
		mid := mediaMid(m)
		if mid == "" || mid != mediaMid(om) || m.MediaName.Media != om.MediaName.Media {
			t.Fatalf("m-line %d: %s mid %q, offered %s mid %q:\n%s", i, m.MediaName.Media, mid, om.MediaName.Media, mediaMid(om), answer)
		}
		_, inactive := m.Attribute("inactive")
		_, hasCand := m.Attribute("candidate")
		switch m.MediaName.Media {
		case "video":
			f := m.MediaName.Formats
			if m.MediaName.Port.Value != 0 || !inactive || hasCand || len(f) != 1 || !slices.Contains(om.MediaName.Formats, f[0]) ||
				strings.Join(m.MediaName.Protos, "/") != strings.Join(om.MediaName.Protos, "/") || slices.Contains(bundle, mid) {
				t.Fatalf("video m-line not rejected as it should be (bundle %v):\n%s", bundle, answer)
			}
			for _, key := range []string{"ice-ufrag", "ice-pwd", "fingerprint", "setup", "sendrecv", "recvonly", "sendonly", "msid", "ssrc"} {
				if _, ok := m.Attribute(key); ok {
					t.Fatalf("rejected video m-line has a=%s:\n%s", key, answer)
				}
			}
		case "audio":
			if m.MediaName.Port.Value == 0 || inactive || !hasCand || !slices.Contains(bundle, mid) {
				t.Fatalf("audio m-line (bundle %v):\n%s", bundle, answer)
			}
		}
	}
	if len(bundle) != 2 || bundle[0] != "BUNDLE" {
		t.Fatalf("a=group:%s", group)
	}
}

// TestAnswerRejectsVideo: a real pion offerer with a microphone and a
// sendonly camera (as many WHIP clients offer), the camera's m-line after
// the audio one or before it. pion accepts our answer (it refused pion's
// own rejection: "codec is not supported by remote"), the call connects,
// and audio flows both ways.
func TestAnswerRejectsVideo(t *testing.T) {
	t.Parallel()
	for _, order := range []string{"after", "before"} {
		t.Run("video "+order, func(t *testing.T) {
			t.Parallel()
			c, leg, rec := connect(t, newTestEngine(t, testConfig()), clientOpts{video: order}, FormatOpus())
			checkRejectedVideo(t, c.pc.LocalDescription().SDP, c.pc.RemoteDescription().SDP)
			keepFlowing(t, c, rec, 20)
			for i, p := range fakeOpus(10) {
				leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: uint64(i), Payload: p})
			}
			agenttest.Poll(t, testWait, "agent audio at the client", func() bool { return c.received() >= 5 })

			// An ICE restart by fragment keeps the rejection, and its answer
			// fragment carries the audio m-line alone.
			offer := c.offer(&webrtc.OfferOptions{ICERestart: true})
			frag, err := answerFrag(offer)
			if err != nil {
				t.Fatal(err)
			}
			u, err := leg.TrickleIf(context.Background(), frag, nil)
			if err != nil || !u.Restarted {
				t.Fatalf("restart: %+v, %v", u, err)
			}
			af, err := parseSDPFrag(u.Answer)
			if err != nil || len(af.Media) != 1 || !strings.HasPrefix(af.Media[0].MLine, "audio ") || af.candidates() == 0 {
				t.Fatalf("answer fragment %v:\n%s", err, u.Answer)
			}
			answer, err := restartOffer(c.pc.RemoteDescription().SDP, af)
			if err != nil {
				t.Fatal(err)
			}
			c.setAnswer(answer)
			keepFlowing(t, c, rec, 20)
		})
	}
}

// TestRejectUnusedForm: the rewrite of pion's rejected m-lines, on fixed
// SDP: port 0, the offer's proto, first format and its rtpmap, a=mid,
// a=inactive; out of BUNDLE; candidates off a rejected first m-line.
func TestRejectUnusedForm(t *testing.T) {
	t.Parallel()
	offer := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE v a d\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=sendonly\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n" +
		"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:d\r\na=sctp-port:5000\r\n"
	// What pion answers: rejected m-lines without a mid, candidates on
	// the first m-line.
	pion := "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a d\r\n" +
		"m=video 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n" +
		"a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n" +
		"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:d\r\na=sctp-port:5000\r\n"
	got, err := rejectUnused(pion, offer)
	if err != nil {
		t.Fatal(err)
	}
	want := "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a d\r\n" +
		"m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=inactive\r\na=rtpmap:96 VP8/90000\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n" +
		"a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n" +
		"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:d\r\na=sctp-port:5000\r\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}

	// The BUNDLE group loses a rejected mid pion left in it; an answer
	// with nothing rejected comes back unchanged.
	stale := strings.Replace(pion, "a=group:BUNDLE a d", "a=group:BUNDLE v a d", 1)
	if got, err := rejectUnused(stale, offer); err != nil || !strings.Contains(got, "a=group:BUNDLE a d\r\n") {
		t.Fatalf("stale group: %v\n%s", err, got)
	}
	accepted := strings.Replace(pion, "m=video 0 UDP/TLS/RTP/SAVPF 0", "m=video 9 UDP/TLS/RTP/SAVPF 96", 1)
	if got, err := rejectUnused(accepted, offer); err != nil || got != accepted {
		t.Fatalf("nothing rejected: %v\n%s", err, got)
	}
	if _, err := rejectUnused("garbage", offer); !errors.Is(err, ErrBadSDP) {
		t.Fatalf("garbage answer: %v", err)
	}
}
