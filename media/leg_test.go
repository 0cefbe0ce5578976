package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	pmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/thesyncim/gopus"
	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

func TestLegOpusMic(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	start := time.Now()
	c, leg, rec := connect(t, e, clientOpts{}, FormatOpus())
	if e.NumLegs() != 1 {
		t.Fatalf("NumLegs = %d", e.NumLegs())
	}
	const n = 100
	sent := fakeOpus(n)
	c.send(sent)
	agenttest.Poll(t, testWait, "100 mic frames", func() bool { return rec.numFrames() >= n })

	frames, _, _, _ := rec.snapshot()
	if len(frames) != n {
		t.Fatalf("got %d frames, want %d", len(frames), n)
	}
	for i, f := range frames {
		if f.Codec != agentbridge.CodecOpus {
			t.Fatalf("frame %d codec %q", i, f.Codec)
		}
		if i > 0 && f.Seq != frames[i-1].Seq+1 {
			t.Fatalf("frame %d seq %d after %d", i, f.Seq, frames[i-1].Seq)
		}
		if i > 0 && f.Timestamp != frames[i-1].Timestamp+960 {
			t.Fatalf("frame %d timestamp %d after %d", i, f.Timestamp, frames[i-1].Timestamp)
		}
		if f.CapturedAt.Before(start) {
			t.Fatalf("frame %d CapturedAt %v", i, f.CapturedAt)
		}
		if !bytes.Equal(f.Payload, sent[i]) {
			t.Fatalf("frame %d payload %x, want %x", i, f.Payload, sent[i])
		}
	}
	st := leg.Stats()
	if st.FramesIn != n || st.Lost != 0 || st.Late != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st.FirstFrameAt.IsZero() || st.ConnectedAt.IsZero() || st.CreatedAt.IsZero() {
		t.Fatalf("times not set: %+v", st)
	}
	if st.ConnectedAt.Before(st.CreatedAt) || st.FirstFrameAt.Before(st.ConnectedAt) {
		t.Fatalf("times out of order: %+v", st)
	}
	if leg.State() != StateConnected {
		t.Fatalf("state %s", leg.State())
	}
	t.Logf("offer→connected %v, connected→first frame %v, jitter %.1f ms, bitrate in %.0f",
		st.ConnectedAt.Sub(st.CreatedAt), st.FirstFrameAt.Sub(st.ConnectedAt), st.JitterMS, st.BitrateIn)
}

func TestLegPlay(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	c, leg, _ := connect(t, e, clientOpts{}, FormatOpus())

	for i, p := range fakeOpus(100) {
		leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Seq: uint64(i), Payload: p})
	}
	leg.Play(agentbridge.AudioFrame{Codec: "pcm_s16le/16000/1", Payload: make([]byte, 640)})
	leg.Play(agentbridge.AudioFrame{Codec: "speex/8000/1", Payload: []byte{1}})
	agenttest.Poll(t, testWait, "95 frames at the client", func() bool { return c.received() >= 95 })
	agenttest.Poll(t, testWait, "100 frames out", func() bool { return leg.Stats().FramesOut == 100 })
	if st := leg.Stats(); st.Rejected != 2 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	got := c.payloads()
	want := fakeOpus(100)
	for i, p := range got {
		if !bytes.Equal(p, want[i]) {
			t.Fatalf("payload %d = %x, want %x (in order)", i, p, want[i])
		}
	}

	// Barge-in: queue 200 (4 s), let a few play, clear.
	before := c.received()
	for _, p := range fakeOpus(200) {
		leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: p})
	}
	agenttest.Poll(t, testWait, "some of the 200 played", func() bool { return c.received() >= before+5 })
	leg.ClearAudio()
	out := leg.Stats().FramesOut
	// One more frame after the clear proves the pacer is still running.
	leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: []byte{0xfc, 1, 2, 3}})
	agenttest.Poll(t, testWait, "frame after clear", func() bool { return leg.Stats().FramesOut > out })
	agenttest.Poll(t, testWait, "client got it", func() bool {
		p := c.payloads()
		return bytes.Equal(p[len(p)-1], []byte{0xfc, 1, 2, 3})
	})
	st := leg.Stats()
	after := c.received() - before
	if st.Dropped < 150 || after > 50 {
		t.Fatalf("after ClearAudio: %d of 200 played, stats %+v", after, st)
	}
	if st.FramesOut+st.Dropped != 301 {
		t.Fatalf("frames out %d + dropped %d != 301", st.FramesOut, st.Dropped)
	}
	agenttest.Poll(t, testWait, "RTT from receiver reports", func() bool { return leg.Stats().RTTMS > 0 })
	st = leg.Stats()
	t.Logf("barge-in: %d of 200 frames played, %d dropped; bitrate out %.0f, rtt %.3f ms", after, st.Dropped, st.BitrateOut, st.RTTMS)
}

func TestLegPlayQueueBound(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.PlayoutQueue = 10
	e := newTestEngine(t, cfg)
	c := newClient(t, clientOpts{})
	rec := &recorder{}
	leg, answer, err := e.NewLeg(context.Background(), LegOptions{ID: "q", Offer: c.offer(nil), OnState: rec.onState})
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	// Not connected yet: the pacer waits, so the queue overflows.
	for _, p := range fakeOpus(25) {
		leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: p})
	}
	if st := leg.Stats(); st.Dropped != 15 {
		t.Fatalf("dropped %d, want 15", st.Dropped)
	}
	c.setAnswer(answer)
	agenttest.Poll(t, testWait, "the newest 10 played", func() bool { return c.received() == 10 })
	if got := c.payloads()[0]; !bytes.Equal(got, fakeOpus(25)[15]) {
		t.Fatalf("first played %x: oldest were not the dropped ones", got)
	}
}

func TestLegPCM(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	f, err := ParseFormat("pcm_s16le/16000/1")
	if err != nil {
		t.Fatal(err)
	}
	c, leg, rec := connect(t, e, clientOpts{}, f)

	// Mic: real Opus in, 20 ms of 16 kHz mono PCM out.
	c.send(realOpus(t, 50))
	agenttest.Poll(t, testWait, "50 PCM frames", func() bool { return rec.numFrames() >= 50 })
	frames, _, _, _ := rec.snapshot()
	for i, fr := range frames {
		if fr.Codec != "pcm_s16le/16000/1" || len(fr.Payload) != 640 {
			t.Fatalf("frame %d: codec %q, %d bytes", i, fr.Codec, len(fr.Payload))
		}
	}
	if e := rms(pcmOf(frames[len(frames)-1].Payload)); e < 1000 {
		t.Fatalf("decoded mic RMS %.0f: not the tone", e)
	}

	// Playout: 20 ms chunks, then 30 ms chunks (cut and re-framed).
	off := 0
	for range 25 {
		leg.Play(agentbridge.AudioFrame{Codec: "pcm_s16le/16000/1", Payload: leBytes(sine(320, 16000, off))})
		off += 320
	}
	for range 10 {
		leg.Play(agentbridge.AudioFrame{Codec: "pcm_s16le/16000", Payload: leBytes(sine(480, 16000, off))})
		off += 480
	}
	// 25 + 15 frames; the last is whole, so no padding.
	agenttest.Poll(t, testWait, "40 frames at the client", func() bool { return c.received() >= 40 })
	dec, err := gopus.NewDecoder(gopus.DefaultDecoderConfig(48000, 1))
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, 5760)
	var loud int
	for i, p := range c.payloads() {
		n, err := dec.DecodeInt16(p, pcm)
		if err != nil {
			t.Fatalf("client decode of packet %d: %v", i, err)
		}
		if n != 960 {
			t.Fatalf("packet %d is %d samples, want 960 (20 ms)", i, n)
		}
		if i >= 5 && rms(pcm[:n]) > 1000 {
			loud++
		}
	}
	if loud < 30 {
		t.Fatalf("only %d of the played packets carry the tone", loud)
	}
	if st := leg.Stats(); st.Rejected != 0 || st.FramesOut != 40 || st.DecodeErrors != 0 {
		t.Fatalf("stats %+v", st)
	}

	// An odd tail (10 ms) is padded and played once the agent pauses.
	leg.Play(agentbridge.AudioFrame{Codec: "pcm_s16le/16000/1", Payload: leBytes(sine(160, 16000, 0))})
	agenttest.Poll(t, testWait, "padded tail", func() bool { return leg.Stats().FramesOut == 41 })
	// Opus frames are accepted on a PCM leg too.
	leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: c.payloads()[0]})
	agenttest.Poll(t, testWait, "opus on a PCM leg", func() bool { return leg.Stats().FramesOut == 42 })
}

func pcmOf(b []byte) []int16 {
	out := make([]int16, len(b)/2)
	for i := range out {
		out[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return out
}

func leBytes(s []int16) []byte {
	out := make([]byte, 2*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint16(out[2*i:], uint16(v))
	}
	return out
}

func TestLegClose(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	_, leg, rec := connect(t, e, clientOpts{}, FormatOpus())
	if err := leg.Close(); err != nil {
		t.Fatal(err)
	}
	_ = leg.Close()
	<-leg.Done()
	_, states, closed, reason := rec.snapshot()
	if closed != 1 || reason != ReasonClosed || states[len(states)-1] != string(StateClosed) {
		t.Fatalf("states %v closed %d reason %q", states, closed, reason)
	}
	if leg.State() != StateClosed || leg.Reason() != ReasonClosed || e.NumLegs() != 0 {
		t.Fatalf("state %s reason %q legs %d", leg.State(), leg.Reason(), e.NumLegs())
	}
	leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: []byte{1}})
	leg.ClearAudio()
	if _, _, err := leg.Trickle("a=end-of-candidates"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Trickle on closed leg: %v", err)
	}
	if _, err := leg.Renegotiate(context.Background(), "v=0"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Renegotiate on closed leg: %v", err)
	}
}

func TestLegCloseFromOnState(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	c := newClient(t, clientOpts{})
	var leg *Leg
	ready := make(chan struct{})
	leg, answer, err := e.NewLeg(context.Background(), LegOptions{
		ID:    "reentrant",
		Offer: c.offer(nil),
		OnState: func(s State, _ string) {
			<-ready
			_ = leg.Close() // must not deadlock, whatever the state
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	c.setAnswer(answer)
	waitDone(t, leg, "leg did not close")
}

func TestEngineCloseClosesLegs(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	_, leg1, rec1 := connect(t, e, clientOpts{}, FormatOpus())
	_, leg2, rec2 := connect(t, e, clientOpts{}, FormatOpus())
	if e.NumLegs() != 2 {
		t.Fatalf("NumLegs %d", e.NumLegs())
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	_ = e.Close()
	<-leg1.Done()
	<-leg2.Done()
	for _, r := range []*recorder{rec1, rec2} {
		r.closedOnce(t, ReasonClosed)
	}
	c := newClient(t, clientOpts{})
	if _, _, err := e.NewLeg(context.Background(), LegOptions{Offer: c.offer(nil)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewLeg after Close: %v", err)
	}
}

func TestLegSilenceTimeout(t *testing.T) {
	t.Parallel()
	_, leg, rec := connectSilenceTimeout(t, 300*time.Millisecond)
	waitDone(t, leg, "no silence timeout")
	rec.closedOnce(t, ReasonSilence)
	if d := time.Since(leg.Stats().CreatedAt); d < 300*time.Millisecond {
		t.Fatalf("closed after %v", d)
	}
}

func TestLegSilenceResetByAudio(t *testing.T) {
	t.Parallel()
	// The timeout counts from the leg's creation, so connecting and every
	// gap between two packets must stay under it; on a machine busy with
	// other tests both have taken over 300 ms (the timeout this test had).
	// A second leaves room for that and is still far shorter than the 3 s
	// of sending.
	c, leg, rec := connectSilenceTimeout(t, time.Second)
	c.send(fakeOpus(600)) // 3 s of sending (5 ms apart), three times the timeout
	if leg.State() == StateClosed {
		t.Fatal("leg closed while audio was flowing")
	}
	agenttest.Poll(t, testWait, "silence after the audio", func() bool { return leg.State() == StateClosed })
	if _, _, _, reason := rec.snapshot(); reason != ReasonSilence {
		t.Fatalf("reason %q", reason)
	}
}

func TestLegRemoteClose(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	c, leg, rec := connect(t, e, clientOpts{}, FormatOpus())
	c.close()
	waitDone(t, leg, "leg did not end after the client closed")
	_, states, closed, reason := rec.snapshot()
	if closed != 1 || (reason != ReasonRemoteClosed && reason != ReasonFailed) {
		t.Fatalf("states %v reason %q", states, reason)
	}
	t.Logf("client close → %q, states %v", reason, states)
}

func TestNewLegErrors(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	good := newClient(t, clientOpts{}).offer(nil)
	video := newClient(t, clientOpts{
		kind:    webrtc.RTPCodecTypeVideo,
		noTrack: true,
		codecs: []webrtc.RTPCodecParameters{{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
			PayloadType:        96,
		}},
	}).offer(nil)
	pcmu := newClient(t, clientOpts{codecs: []webrtc.RTPCodecParameters{{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1},
		PayloadType:        0,
	}}}).offer(nil)

	cases := []struct {
		name  string
		offer string
		f     Format
		want  error
	}{
		{"empty", "", Format{}, ErrBadSDP},
		{"garbage", "hello, I am not SDP", Format{}, ErrBadSDP},
		{"answer", strings.ReplaceAll(good, "a=setup:actpass", "a=setup:active"), Format{}, ErrBadSDP},
		{"video only", video, Format{}, ErrNoAudio},
		{"audio without opus", pcmu, Format{}, ErrNoAudio},
		{"huge", good + strings.Repeat("a=x\r\n", maxSDPBytes/5), Format{}, ErrBadSDP},
		{"bad format", good, Format{Codec: "pcm_s16le", SampleRate: 8000, Channels: 1}, ErrBadFormat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := e.NewLeg(context.Background(), LegOptions{Offer: tc.offer, AgentFormat: tc.f})
			isErr(t, err, tc.want)
		})
	}
	if e.NumLegs() != 0 {
		t.Fatalf("NumLegs %d after failures", e.NumLegs())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := e.NewLeg(ctx, LegOptions{Offer: newClient(t, clientOpts{}).offer(nil)})
	isErr(t, err, context.Canceled)
}

func TestLegUDPMux(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Interfaces = []string{loopbackName(t)}
	// A free port: bind, note, release (the mux binds it again).
	var e *Engine
	for range 5 {
		l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		cfg.UDPPort = l.LocalAddr().(*net.UDPAddr).Port
		_ = l.Close()
		if e, err = NewEngine(cfg, testLogger(t)); err == nil {
			break
		}
	}
	if e == nil {
		t.Fatal("no free UDP port for the mux")
	}
	t.Cleanup(func() { _ = e.Close() })
	c, leg, rec := connect(t, e, clientOpts{}, FormatOpus())
	c.send(fakeOpus(20))
	agenttest.Poll(t, testWait, "frames over the mux", func() bool { return rec.numFrames() == 20 })
	port := cfg.UDPPort
	if sd := leg.pc.LocalDescription().SDP; !strings.Contains(sd, " "+strconv.Itoa(port)+" typ host") {
		t.Fatalf("answer does not use mux port %d:\n%s", port, sd)
	}
	// A second leg shares the port.
	c2, _, rec2 := connect(t, e, clientOpts{}, FormatOpus())
	c2.send(fakeOpus(10))
	agenttest.Poll(t, testWait, "frames on the second leg", func() bool { return rec2.numFrames() == 10 })
}

func loopbackName(t testing.TB) string {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			return i.Name
		}
	}
	t.Skip("no loopback interface")
	return ""
}

func TestNoLeaks(t *testing.T) {
	// Not parallel: goleak looks at every goroutine.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e, err := NewEngine(testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, clientOpts{})
	rec := &recorder{}
	leg, answer, err := e.NewLeg(context.Background(), LegOptions{
		ID: "leak", Offer: c.offer(nil), OnMicFrame: rec.onMic, OnState: rec.onState,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.setAnswer(answer)
	c.waitConnected()
	c.send(fakeOpus(20))
	for _, p := range fakeOpus(20) {
		leg.Play(agentbridge.AudioFrame{Codec: agentbridge.CodecOpus, Payload: p})
	}
	agenttest.Poll(t, testWait, "media both ways", func() bool { return rec.numFrames() == 20 && c.received() >= 15 })
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	c.close()
	// A failed NewLeg must not leak either.
	e2, err := NewEngine(testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c2 := newClient(t, clientOpts{})
	if _, _, err := e2.NewLeg(ctx, LegOptions{Offer: c2.offer(nil)}); err == nil {
		t.Fatal("NewLeg with a cancelled context succeeded")
	}
	_ = e2.Close()
	c2.close()
}

// TestLegGapFlushedByDeadline: after a gap, the held packet is released
// when the jitter window passes even though nothing else arrives.
func TestLegGapFlushedByDeadline(t *testing.T) {
	t.Parallel()
	e := newTestEngine(t, testConfig())
	c, leg, rec := connect(t, e, clientOpts{}, FormatOpus())
	c.send(fakeOpus(10))
	agenttest.Poll(t, testWait, "10 frames", func() bool { return rec.numFrames() == 10 })
	// One sequence number skipped (a lost packet), then silence.
	err := c.track.WriteSample(pmedia.Sample{Data: []byte{0xfc, 9, 9}, Duration: 20 * time.Millisecond, PrevDroppedPackets: 1})
	if err != nil {
		t.Fatal(err)
	}
	agenttest.Poll(t, testWait, "the frame after the gap", func() bool { return rec.numFrames() == 11 })
	frames, _, _, _ := rec.snapshot()
	if last, prev := frames[10], frames[9]; last.Seq != prev.Seq+2 || !bytes.Equal(last.Payload, []byte{0xfc, 9, 9}) {
		t.Fatalf("seq %d after %d, payload %x", last.Seq, prev.Seq, last.Payload)
	}
	if st := leg.Stats(); st.Lost != 1 {
		t.Fatalf("stats %+v", st)
	}
	if d := time.Since(frames[10].CapturedAt); d < 60*time.Millisecond {
		t.Fatalf("released after %v, before the jitter window", d)
	}
}
