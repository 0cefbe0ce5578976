package media

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// keepFlowing sends batches of frames until the leg has delivered n more
// mic frames than before (an ICE restart may lose a few in the switch).
func keepFlowing(t *testing.T, c *client, rec *recorder, n int) {
	t.Helper()
	want := rec.numFrames() + n
	deadline := time.Now().Add(testWait)
	for rec.numFrames() < want {
		if time.Now().After(deadline) {
			t.Fatalf("media stopped: %d mic frames, want %d", rec.numFrames(), want)
		}
		c.send(fakeOpus(10))
	}
	frames, _, _, _ := rec.snapshot()
	for i := 1; i < len(frames); i++ {
		if frames[i].Seq <= frames[i-1].Seq {
			t.Fatalf("seq %d after %d", frames[i].Seq, frames[i-1].Seq)
		}
	}
}

func localUfrag(t *testing.T, pc *webrtc.PeerConnection) string {
	t.Helper()
	var s sdp.SessionDescription
	if err := s.UnmarshalString(pc.LocalDescription().SDP); err != nil {
		t.Fatal(err)
	}
	u, _ := iceCredentials(&s)
	return u
}

// flowingLeg connects an Opus leg on its own engine and sends audio until
// it flows; it returns the leg's ICE ufrag before any restart with it.
func flowingLeg(t *testing.T) (*client, *Leg, *recorder, string) {
	t.Helper()
	c, leg, rec := connect(t, newTestEngine(t, testConfig()), clientOpts{}, FormatOpus())
	keepFlowing(t, c, rec, 10)
	return c, leg, rec, localUfrag(t, leg.pc)
}

func TestTrickleCandidates(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	c, leg, rec := connect(t, e, clientOpts{}, FormatOpus())

	var cur sdp.SessionDescription
	if err := cur.UnmarshalString(c.pc.LocalDescription().SDP); err != nil {
		t.Fatal(err)
	}
	u, p := iceCredentials(&cur)
	for _, frag := range []string{
		"a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n",
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\na=candidate:2 1 udp 2130706431 127.0.0.1 40001 typ host\na=end-of-candidates\n",
		"a=ice-ufrag:" + u + "\r\na=ice-pwd:" + p + "\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:3 1 udp 2130706431 127.0.0.1 40002 typ host\r\n",
		"a=end-of-candidates\r\n",
	} {
		ans, restarted, err := leg.Trickle(frag)
		if err != nil || restarted || ans != "" {
			t.Fatalf("Trickle(%q) = %q, %v, %v", frag, ans, restarted, err)
		}
	}
	for _, frag := range []string{
		"",
		"hello world",
		"a=ice-ufrag:abcd\r\n",
		"a=candidate:nonsense\r\n",
		"a=candidate:1 1 udp notapriority 127.0.0.1 40000 typ host\r\n",
		"a=mid:7\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n",
	} {
		if _, _, err := leg.Trickle(frag); !errors.Is(err, ErrBadFragment) {
			t.Errorf("Trickle(%q) err = %v, want ErrBadFragment", frag, err)
		}
	}
	keepFlowing(t, c, rec, 20)
}

func TestTrickleICERestart(t *testing.T) {
	t.Parallel()
	c, leg, rec, oldUfrag := flowingLeg(t)

	// The browser side of a WHIP ICE restart: new credentials and
	// candidates, sent as a fragment.
	offer := c.offer(&webrtc.OfferOptions{ICERestart: true})
	frag, err := answerFrag(offer)
	if err != nil {
		t.Fatal(err)
	}
	ans, restarted, err := leg.Trickle(frag)
	if err != nil || !restarted {
		t.Fatalf("Trickle restart: %v, restarted=%v", err, restarted)
	}
	af, err := parseSDPFrag(ans)
	if err != nil {
		t.Fatalf("answer fragment %q: %v", ans, err)
	}
	if af.Ufrag == "" || af.Ufrag == oldUfrag || af.candidates() == 0 || !af.Media[0].End ||
		af.Media[0].Mid != "0" || !strings.HasPrefix(af.Media[0].MLine, "audio 9 ") {
		t.Fatalf("answer fragment (old ufrag %s):\n%s", oldUfrag, ans)
	}
	for _, c := range af.Media[0].Candidates {
		if strings.Fields(c)[1] != "1" {
			t.Fatalf("candidate of component %s in the answer fragment (RTCP is muxed):\n%s", strings.Fields(c)[1], ans)
		}
	}
	t.Logf("answer fragment:\n%s", ans)

	// Apply our fragment to the client as the answer to its restart offer.
	answer, err := restartOffer(c.pc.RemoteDescription().SDP, af)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	keepFlowing(t, c, rec, 30)
	if leg.State() != StateConnected {
		t.Fatalf("state %s", leg.State())
	}
}

func TestRenegotiateICERestart(t *testing.T) {
	t.Parallel()
	c, leg, rec, oldUfrag := flowingLeg(t)

	offer := c.offer(&webrtc.OfferOptions{ICERestart: true})
	answer, err := leg.Renegotiate(context.Background(), offer)
	if err != nil {
		t.Fatal(err)
	}
	c.setAnswer(answer)
	if u := localUfrag(t, leg.pc); u == oldUfrag {
		t.Fatalf("ufrag unchanged after restart: %s", u)
	}
	keepFlowing(t, c, rec, 30)

	// A plain re-offer (no restart) also works, and bad ones fail cleanly.
	c.setAnswer(mustRenegotiate(t, leg, c.offer(nil)))
	keepFlowing(t, c, rec, 10)
	if _, err := leg.Renegotiate(context.Background(), "garbage"); !errors.Is(err, ErrBadSDP) {
		t.Fatalf("garbage re-offer: %v", err)
	}
	keepFlowing(t, c, rec, 10)
	if st := leg.Stats(); st.FramesIn < 60 {
		t.Fatalf("stats %+v", st)
	}
}

func mustRenegotiate(t *testing.T, l *Leg, offer string) string {
	t.Helper()
	a, err := l.Renegotiate(context.Background(), offer)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseSDPFrag(t *testing.T) {
	t.Parallel()
	good := "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n" +
		"a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n" +
		"a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n" +
		"a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw network-id 1\r\n" +
		"a=end-of-candidates\r\n"
	f, err := parseSDPFrag(good)
	if err != nil {
		t.Fatal(err)
	}
	if f.Ufrag != "EsAw" || f.Pwd != "P2uYro0UCOQ4zxjKXaWCBui1" || len(f.Media) != 1 ||
		f.Media[0].Mid != "0" || len(f.Media[0].Candidates) != 3 || !f.Media[0].End {
		t.Fatalf("%+v", f)
	}
	if f.String() != good {
		t.Fatalf("round trip:\n%q\n%q", f.String(), good)
	}
	lf, err := parseSDPFrag(strings.ReplaceAll(good, "\r\n", "\n"))
	if err != nil || lf.String() != good {
		t.Fatalf("LF body: %v", err)
	}

	bad := []string{
		"",
		"\r\n\r\n",
		"v=0\r\n",
		"x",
		"a=ice-ufrag:ab\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n",
		"a=ice-ufrag:EsAw\r\n",
		"a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n",
		"a=ice-ufrag:Es Aw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n",
		"a=candidate:1 1 udp\r\n",
		"m=audio\r\n",
		"a=mid:\r\na=end-of-candidates\r\n",
		"a=candidate:1 1 udp 1 1.2.3.4 5 typ host\x00\r\n",
		strings.Repeat("a=end-of-candidates\r\n", maxFragLines+1),
		strings.Repeat("x", maxFragBytes+1),
		"a=end-of-candidates\r\n" + strings.Repeat("a=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n", maxFragCandidates+1),
	}
	for _, b := range bad {
		if _, err := parseSDPFrag(b); !errors.Is(err, ErrBadFragment) {
			t.Errorf("parseSDPFrag(%.40q) err = %v", b, err)
		}
	}
}

func FuzzParseSDPFrag(f *testing.F) {
	f.Add("a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n" +
		"a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\na=end-of-candidates\r\n")
	f.Add("a=mid:0\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\n")
	f.Add("a=end-of-candidates")
	f.Add("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n")
	f.Fuzz(func(t *testing.T, body string) {
		fr, err := parseSDPFrag(body)
		if err != nil {
			if !errors.Is(err, ErrBadFragment) {
				t.Fatalf("error %v does not wrap ErrBadFragment", err)
			}
			return
		}
		again, err := parseSDPFrag(fr.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", fr.String(), err)
		}
		if again.String() != fr.String() {
			t.Fatalf("round trip %q != %q", again.String(), fr.String())
		}
	})
}

func TestRestartOffer(t *testing.T) {
	t.Parallel()
	offer := newClient(t, clientOpts{}).offer(nil)
	f := sdpFrag{Ufrag: "NewU", Pwd: "NewPasswordNewPassword00", Media: []fragMedia{{
		Mid: "0", Candidates: []string{"1 1 udp 2130706431 127.0.0.1 40000 typ host"}, End: true,
	}}}
	out, err := restartOffer(offer, f)
	if err != nil {
		t.Fatal(err)
	}
	var s sdp.SessionDescription
	if err := s.UnmarshalString(out); err != nil {
		t.Fatal(err)
	}
	if u, p := iceCredentials(&s); u != "NewU" || p != "NewPasswordNewPassword00" {
		t.Fatalf("credentials %s %s", u, p)
	}
	if n := strings.Count(out, "a=candidate:"); n != 1 || !strings.Contains(out, "a=end-of-candidates") {
		t.Fatalf("candidates: %d\n%s", n, out)
	}
	if strings.Count(out, "a=ice-ufrag:") != strings.Count(offer, "a=ice-ufrag:") {
		t.Fatalf("ufrag lines changed in number:\n%s", out)
	}
	if _, err := restartOffer("garbage", f); !errors.Is(err, ErrBadSDP) {
		t.Fatalf("garbage: %v", err)
	}
}

// TestICESessionTags: a leg names its ICE session with a tag that
// trickled candidates and plain re-offers keep, and every ICE restart (by
// fragment or by re-offer) replaces; an update whose condition refuses the
// current tag changes nothing and is ErrICESessionChanged.
func TestICESessionTags(t *testing.T) {
	t.Parallel()
	c, leg, rec, oldUfrag := flowingLeg(t)
	first := leg.ICESession()
	if len(first) < 16 || strings.ContainsAny(first, "\" ,") {
		t.Fatalf("tag %q", first)
	}
	is := func(tag string) func(string) bool { return func(s string) bool { return s == tag } }
	ctx := context.Background()

	// Candidates for the current session: applied, tag kept.
	cand := "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
	if u, err := leg.TrickleIf(ctx, cand, is(first)); err != nil || u.Restarted || u.Answer != "" || u.Session != first {
		t.Fatalf("trickle: %+v, %v", u, err)
	}
	// For another session: refused. A malformed body is ErrBadFragment
	// whatever the session.
	if _, err := leg.TrickleIf(ctx, cand, is("stale")); !errors.Is(err, ErrICESessionChanged) {
		t.Fatalf("stale trickle: %v", err)
	}
	if _, err := leg.TrickleIf(ctx, "garbage", is("stale")); !errors.Is(err, ErrBadFragment) {
		t.Fatalf("bad fragment: %v", err)
	}

	// A restart by fragment for a stale session changes nothing.
	offer := c.offer(&webrtc.OfferOptions{ICERestart: true})
	frag, err := answerFrag(offer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leg.TrickleIf(ctx, frag, is("stale")); !errors.Is(err, ErrICESessionChanged) {
		t.Fatalf("stale restart: %v", err)
	}
	if u := localUfrag(t, leg.pc); u != oldUfrag || leg.ICESession() != first {
		t.Fatalf("a refused restart changed the leg: ufrag %s (was %s), tag %s", u, oldUfrag, leg.ICESession())
	}
	// Any session (If-Match: *): the restart runs; a new tag.
	u, err := leg.TrickleIf(ctx, frag, func(string) bool { return true })
	if err != nil || !u.Restarted || u.Session == first || u.Session != leg.ICESession() {
		t.Fatalf("restart: %+v, %v (first %s)", u, err, first)
	}
	af, err := parseSDPFrag(u.Answer)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := restartOffer(c.pc.RemoteDescription().SDP, af)
	if err != nil {
		t.Fatal(err)
	}
	c.setAnswer(answer)
	keepFlowing(t, c, rec, 20)
	second := u.Session

	// Re-offers: a plain one keeps the tag, a restart replaces it; one
	// for the first session is refused.
	if _, err := leg.RenegotiateIf(ctx, c.pc.LocalDescription().SDP, is(first)); !errors.Is(err, ErrICESessionChanged) {
		t.Fatalf("stale re-offer: %v", err)
	}
	u, err = leg.RenegotiateIf(ctx, c.offer(nil), is(second))
	if err != nil || u.Restarted || u.Session != second || !strings.HasPrefix(u.Answer, "v=0") {
		t.Fatalf("plain re-offer: %+v, %v", u, err)
	}
	c.setAnswer(u.Answer)
	u, err = leg.RenegotiateIf(ctx, c.offer(&webrtc.OfferOptions{ICERestart: true}), is(second))
	if err != nil || !u.Restarted || u.Session == second || u.Session == first {
		t.Fatalf("restart by re-offer: %+v, %v", u, err)
	}
	c.setAnswer(u.Answer)
	keepFlowing(t, c, rec, 20)
}
