package media

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	pmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/thesyncim/gopus"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

// Test helpers: an engine on loopback, a pion "browser" client and
// recorders for the leg's callbacks. Waits poll a condition with
// agenttest.Poll (never a sleep), for at most testWait.

const testWait = 10 * time.Second

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MEDIA_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return discardLogger()
}

// testConfig is loopback-only with short ICE timers.
func testConfig() Config {
	return Config{
		IncludeLoopback:     true,
		DisconnectedTimeout: time.Second,
		FailedTimeout:       2 * time.Second,
		KeepAliveInterval:   200 * time.Millisecond,
	}
}

func newTestEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := NewEngine(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// clientOpts shape the test browser.
type clientOpts struct {
	codecs  []webrtc.RTPCodecParameters // default: Opus 111
	kind    webrtc.RTPCodecType         // default: audio
	noTrack bool                        // recvonly transceiver instead of a track
	// audioLevel offers the RFC 6464 audio level extension and sends on an
	// RTP track (sendRTP) instead of a sample track.
	audioLevel bool
	// video adds a sendonly VP8 camera transceiver, as many WHIP clients
	// offer by default: "after" the audio one or "before" it.
	video string
}

// client is a pion peer playing the browser.
type client struct {
	t         testing.TB
	pc        *webrtc.PeerConnection
	track     *webrtc.TrackLocalStaticSample
	rtpTrack  *webrtc.TrackLocalStaticRTP // with clientOpts.audioLevel
	sender    *webrtc.RTPSender
	seq       uint16 // of packets sent by sendRTP
	ts        uint32
	connected chan struct{}
	connOnce  sync.Once

	mu      sync.Mutex
	closed  bool
	got     [][]byte    // payloads of audio received from the leg
	gotAt   []time.Time // when each arrived
	markers int
	wg      sync.WaitGroup
}

func newClient(t testing.TB, o clientOpts) *client {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if o.kind == 0 {
		o.kind = webrtc.RTPCodecTypeAudio
	}
	if o.codecs == nil {
		o.codecs = []webrtc.RTPCodecParameters{{RTPCodecCapability: opusCapability(), PayloadType: 111}}
	}
	for _, c := range o.codecs {
		kind := webrtc.RTPCodecTypeAudio
		if strings.HasPrefix(c.MimeType, "video/") {
			kind = webrtc.RTPCodecTypeVideo
		}
		if err := me.RegisterCodec(c, kind); err != nil {
			t.Fatal(err)
		}
	}
	if o.video != "" {
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: vp8(), PayloadType: 96},
			webrtc.RTPCodecTypeVideo); err != nil {
			t.Fatal(err)
		}
	}
	if o.audioLevel {
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI},
			webrtc.RTPCodecTypeAudio); err != nil {
			t.Fatal(err)
		}
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(time.Second, 2*time.Second, 200*time.Millisecond)
	se.LoggerFactory = pionLoggers{log: testLogger(t)}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, pc: pc, connected: make(chan struct{})}
	t.Cleanup(c.close)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			c.connOnce.Do(func() { close(c.connected) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		c.wg.Add(2)
		c.mu.Unlock()
		defer c.wg.Done()
		go func() { // RTCP through the interceptors, as a browser does
			defer c.wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, _, err := r.Read(buf); err != nil {
					return
				}
			}
		}()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			now := time.Now()
			c.mu.Lock()
			c.got = append(c.got, append([]byte(nil), p.Payload...))
			c.gotAt = append(c.gotAt, now)
			if p.Marker {
				c.markers++
			}
			c.mu.Unlock()
		}
	})
	addVideo := func() {
		cam, err := webrtc.NewTrackLocalStaticSample(vp8(), "camera", "browser")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.AddTransceiverFromTrack(cam, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	if o.video == "before" {
		addVideo()
	}
	switch {
	case o.noTrack:
		if _, err := pc.AddTransceiverFromKind(o.kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	case o.audioLevel:
		c.rtpTrack, err = webrtc.NewTrackLocalStaticRTP(o.codecs[0].RTPCodecCapability, "mic", "browser")
		if err != nil {
			t.Fatal(err)
		}
		if c.sender, err = pc.AddTrack(c.rtpTrack); err != nil {
			t.Fatal(err)
		}
	default:
		c.track, err = webrtc.NewTrackLocalStaticSample(o.codecs[0].RTPCodecCapability, "mic", "browser")
		if err != nil {
			t.Fatal(err)
		}
		if c.sender, err = pc.AddTrack(c.track); err != nil {
			t.Fatal(err)
		}
	}
	if o.video == "after" {
		addVideo()
	}
	return c
}

// vp8 is the test camera's codec.
func vp8() webrtc.RTPCodecCapability {
	return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
}

func (c *client) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	_ = c.pc.Close()
	c.wg.Wait()
}

// offer makes a complete (gathered) offer.
func (c *client) offer(opts *webrtc.OfferOptions) string {
	c.t.Helper()
	o, err := c.pc.CreateOffer(opts)
	if err != nil {
		c.t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(o); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-g:
	case <-time.After(testWait):
		c.t.Fatal("client gathering timed out")
	}
	return c.pc.LocalDescription().SDP
}

func (c *client) setAnswer(sdp string) {
	c.t.Helper()
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) waitConnected() {
	c.t.Helper()
	select {
	case <-c.connected:
	case <-time.After(testWait):
		c.t.Fatal("client did not connect")
	}
}

// send writes frames as 20 ms samples, a little faster than real time.
func (c *client) send(frames [][]byte) {
	c.t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for _, f := range frames {
		if err := c.track.WriteSample(pmedia.Sample{Data: f, Duration: 20 * time.Millisecond}); err != nil {
			c.t.Fatal(err)
		}
		<-tick.C
	}
}

func (c *client) received() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *client) payloads() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.got...)
}

// recorder records a leg's callbacks.
type recorder struct {
	mu     sync.Mutex
	frames []agentbridge.AudioFrame
	states []string
	closed int
	reason string
}

func (r *recorder) onMic(f agentbridge.AudioFrame) {
	r.mu.Lock()
	r.frames = append(r.frames, f)
	r.mu.Unlock()
}

func (r *recorder) onState(s State, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, string(s))
	if s == StateClosed {
		r.closed++
		r.reason = reason
	}
}

func (r *recorder) numFrames() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames)
}

func (r *recorder) snapshot() (frames []agentbridge.AudioFrame, states []string, closed int, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]agentbridge.AudioFrame(nil), r.frames...), append([]string(nil), r.states...), r.closed, r.reason
}

func (r *recorder) has(s State) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.states {
		if x == string(s) {
			return true
		}
	}
	return false
}

// closedOnce fails t unless the leg closed exactly once, for reason.
func (r *recorder) closedOnce(t testing.TB, reason string) {
	t.Helper()
	if _, _, closed, got := r.snapshot(); closed != 1 || got != reason {
		t.Fatalf("closed %d reason %q, want once for %q", closed, got, reason)
	}
}

// waitDone waits for leg to end; what says which ending the test waits for.
func waitDone(t testing.TB, leg *Leg, what string) {
	t.Helper()
	select {
	case <-leg.Done():
	case <-time.After(testWait):
		t.Fatal(what)
	}
}

// connectSilenceTimeout connects one Opus leg on an engine whose legs
// close after d without audio.
func connectSilenceTimeout(t testing.TB, d time.Duration) (*client, *Leg, *recorder) {
	t.Helper()
	cfg := testConfig()
	cfg.SilenceTimeout = d
	return connect(t, newTestEngine(t, cfg), clientOpts{}, FormatOpus())
}

// connect makes a client, a leg for its offer, and waits until both sides
// are connected.
func connect(t testing.TB, e *Engine, o clientOpts, f Format) (*client, *Leg, *recorder) {
	t.Helper()
	return connectLeg(t, e, o, LegOptions{AgentFormat: f})
}

// connectLeg is connect with more leg options (lo: the offer, ID, log and
// the recorder's callbacks are filled in).
func connectLeg(t testing.TB, e *Engine, o clientOpts, lo LegOptions) (*client, *Leg, *recorder) {
	t.Helper()
	c := newClient(t, o)
	rec := &recorder{}
	lo.ID, lo.Offer, lo.OnMicFrame, lo.OnState, lo.Log = t.Name(), c.offer(nil), rec.onMic, rec.onState, testLogger(t)
	leg, answer, err := e.NewLeg(context.Background(), lo)
	if err != nil {
		t.Fatalf("NewLeg: %v", err)
	}
	t.Cleanup(func() { _ = leg.Close() })
	c.setAnswer(answer)
	c.waitConnected()
	agenttest.Poll(t, testWait, "leg connected", func() bool { return rec.has(StateConnected) })
	return c, leg, rec
}

// fakeOpus makes n distinct "Opus" payloads (passthrough does not decode).
func fakeOpus(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte{0xfc, byte(i), byte(i >> 8), 0xaa, 0x55}
	}
	return out
}

// sine fills n samples of a 440 Hz tone at rate, starting at sample off.
func sine(n, rate, off int) []int16 {
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(10000 * math.Sin(2*math.Pi*440*float64(off+i)/float64(rate)))
	}
	return s
}

// realOpus encodes n 20 ms frames of a tone at 48 kHz mono.
func realOpus(t testing.TB, n int) [][]byte {
	t.Helper()
	return toneOpus(t, n, 0)
}

// toneOpus encodes n 20 ms frames of a tone at 48 kHz mono, at bitrate
// bit/s (0: the encoder's default).
func toneOpus(t testing.TB, n, bitrate int) [][]byte {
	t.Helper()
	enc, err := gopus.NewEncoder(gopus.EncoderConfig{SampleRate: 48000, Channels: 1, Application: gopus.ApplicationVoIP})
	if err != nil {
		t.Fatal(err)
	}
	if bitrate != 0 {
		if err := enc.SetBitrate(bitrate); err != nil {
			t.Fatal(err)
		}
	}
	out := make([][]byte, n)
	buf := make([]byte, 1500)
	for i := range out {
		k, err := enc.EncodeInt16(sine(960, 48000, i*960), buf)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = append([]byte(nil), buf[:k]...)
	}
	return out
}

// rms is the root mean square of little-endian int16 PCM.
func rms(pcm []int16) float64 {
	var sum float64
	for _, v := range pcm {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(max(len(pcm), 1)))
}

func isErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
}
