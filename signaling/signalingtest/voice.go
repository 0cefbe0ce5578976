package signalingtest

import (
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/thesyncim/gopus"
)

// frameDuration is the length of one Opus frame the clients send.
const frameDuration = 20 * time.Millisecond

// VoiceClient is a pion peer playing the visitor's browser: it sends Opus
// from a local track and counts the agent audio it gets back. Its reader
// goroutine ends when the peer connection closes (Close, or the test's
// end).
type VoiceClient struct {
	T        testing.TB
	PC       *webrtc.PeerConnection
	Track    *webrtc.TrackLocalStaticSample
	Location string       // the voice leg's URL, from the answer
	ETag     string       // the leg's entity-tag: from the 201, then from each restart's 200
	Received atomic.Int64 // RTP packets of agent audio received

	mu      sync.Mutex
	heard   [][]byte    // the agent audio's Opus payloads, at most maxHeard
	arrived []time.Time // when each of heard arrived

	client    *Client // the one it offered through, for RestartICE
	connected chan struct{}
	readDone  chan struct{}
}

// NewVoiceClient offers audio to s's voice endpoint and applies the
// answer; the offer must be accepted.
func (c *Client) NewVoiceClient(s Session) *VoiceClient {
	c.T.Helper()
	v, r := c.OfferVoice(s, "")
	if r.Status != http.StatusCreated {
		c.T.Fatalf("voice offer: %d %s", r.Status, r.Raw)
	}
	return v
}

// OfferVoice creates a client and posts its offer, with headers (name,
// value, …) besides the session token; on success the answer is applied.
// sdpOverride, when set, is posted instead of the real offer. The response
// is the caller's to check when the offer is refused.
func (c *Client) OfferVoice(s Session, sdpOverride string, headers ...string) (*VoiceClient, Response) {
	c.T.Helper()
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(OpusOnly(c.T)))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		c.T.Fatal(err)
	}
	v := &VoiceClient{T: c.T, PC: pc, client: c, connected: make(chan struct{}), readDone: make(chan struct{})}
	var once sync.Once
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(v.connected) })
		}
	})
	var readOnce sync.Once
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		readOnce.Do(func() {
			go func() { // owned by pc: ReadRTP fails once it closes
				defer close(v.readDone)
				for {
					p, _, err := tr.ReadRTP()
					if err != nil {
						return
					}
					at := time.Now()
					v.Received.Add(1)
					v.mu.Lock()
					if len(v.heard) < maxHeard {
						v.heard = append(v.heard, p.Payload)
						v.arrived = append(v.arrived, at)
					}
					v.mu.Unlock()
				}
			}()
		})
	})
	v.Track, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", "visitor")
	if err != nil {
		c.T.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(v.Track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
		c.T.Fatal(err)
	}
	c.T.Cleanup(v.Close)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		c.T.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		c.T.Fatal(err)
	}
	<-gathered
	body := pc.LocalDescription().SDP
	if sdpOverride != "" {
		body = sdpOverride
	}
	r := c.DoRaw("POST", "/v1/sessions/"+s.ID+"/webrtc", "application/sdp", body, append([]string{"Authorization", "Bearer " + s.Token}, headers...)...)
	if r.Status != http.StatusCreated {
		return v, r
	}
	v.Location = r.Header.Get("Location")
	v.ETag = r.Header.Get("ETag")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: r.Raw}); err != nil {
		c.T.Fatalf("apply answer: %v\n%s", err, r.Raw)
	}
	return v, r
}

// OpusOnly is a media engine that offers Opus alone, as the widget does.
func OpusOnly(t testing.TB) *webrtc.MediaEngine {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType: 111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	return m
}

// maxHeard bounds the agent audio a VoiceClient keeps: two minutes.
const maxHeard = 6000

// Heard returns the Opus payloads of the agent audio received so far, in
// arrival order.
func (v *VoiceClient) Heard() [][]byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.heard)
}

// Arrivals returns when each packet of Heard arrived, from the from-th on
// (a latency benchmark's clock: the first agent audio of a turn).
func (v *VoiceClient) Arrivals(from int) []time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	if from >= len(v.arrived) {
		return nil
	}
	return slices.Clone(v.arrived[from:])
}

// WaitConnected waits for ICE + DTLS.
func (v *VoiceClient) WaitConnected() {
	v.T.Helper()
	select {
	case <-v.connected:
	case <-time.After(15 * time.Second):
		v.T.Fatal("voice client did not connect")
	}
}

// Send writes frames on a 20 ms schedule.
func (v *VoiceClient) Send(frames [][]byte) {
	v.T.Helper()
	Paced(frames, func(_ int, f []byte) {
		if err := v.Track.WriteSample(SampleOf(f)); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			v.T.Fatalf("write sample: %v", err)
		}
	})
}

// RestartICE re-offers with fresh ICE credentials, as a browser does after
// restartIce(): it PATCHes the full offer to the leg's Location with the
// session token and If-Match: "*" (RFC 9725 §4.3.1: a restart applies
// whatever the ICE session) and, when the answer is 200, applies it and
// keeps its ETag. The response is the caller's to check.
func (v *VoiceClient) RestartICE(token string) Response {
	v.T.Helper()
	offer, err := v.PC.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		v.T.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(v.PC)
	if err := v.PC.SetLocalDescription(offer); err != nil {
		v.T.Fatal(err)
	}
	<-gathered
	r := v.client.DoRaw("PATCH", v.Location, "application/sdp", v.PC.LocalDescription().SDP,
		"Authorization", "Bearer "+token, "If-Match", "*")
	if r.Status != http.StatusOK {
		return r
	}
	if err := v.PC.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: r.Raw}); err != nil {
		v.T.Fatalf("apply the restart's answer: %v\n%s", err, r.Raw)
	}
	v.ETag = r.Header.Get("ETag")
	return r
}

// Trickle PATCHes an RFC 8840 fragment to the leg with the session token
// and If-Match: the leg's ETag, as a WHIP client trickles candidates
// (RFC 9725 §4.3.1). The response is the caller's to check.
func (v *VoiceClient) Trickle(token, frag string) Response {
	v.T.Helper()
	return v.client.DoRaw("PATCH", v.Location, "application/trickle-ice-sdpfrag", frag,
		"Authorization", "Bearer "+token, "If-Match", v.ETag)
}

// HangUp ends the call as the widget does: DELETE on the leg (with the
// session token), which must answer 204, then the peer connection closes.
// Unlike Close alone, the server does not have to notice the peer left.
func (v *VoiceClient) HangUp(token string) {
	v.T.Helper()
	if r := v.client.Do("DELETE", v.Location, nil, "Authorization", "Bearer "+token); r.Status != http.StatusNoContent {
		v.T.Fatalf("hang up: %d %s", r.Status, r.Raw)
	}
	v.Close()
}

// Close hangs up the peer connection; it may be called more than once.
func (v *VoiceClient) Close() {
	_ = v.PC.Close()
}

// Paced calls write with each of frames on a 20 ms schedule, frame i at
// i × 20 ms after the first, as a microphone produces them; after a late
// write the next frames go at once until the schedule is caught up.
func Paced(frames [][]byte, write func(i int, f []byte)) {
	begin := time.Now()
	timer := time.NewTimer(0)
	<-timer.C
	for i, f := range frames {
		if d := time.Until(begin.Add(time.Duration(i) * frameDuration)); d > 0 {
			timer.Reset(d)
			<-timer.C
		}
		write(i, f)
	}
}

// SampleOf is one 20 ms Opus frame as a media sample.
func SampleOf(frame []byte) pionmedia.Sample {
	return pionmedia.Sample{Data: frame, Duration: frameDuration}
}

// Speech encodes a test signal as real Opus, 20 ms per frame: for each
// burst, toneMS of a 440 Hz tone then silenceMS of silence.
func Speech(t testing.TB, bursts, toneMS, silenceMS int) [][]byte {
	t.Helper()
	on := toneMS / 20
	return Tone(t, bursts, on, (toneMS+silenceMS)/20-on, 12000)
}

// Tone encodes 20 ms frames of 48 kHz stereo Opus: for each burst, on
// frames of a 440 Hz tone of amplitude peak (in 16-bit sample units, at
// most 32767), then off frames of silence.
func Tone(t testing.TB, bursts, on, off int, peak float64) [][]byte {
	t.Helper()
	enc, err := gopus.NewEncoder(gopus.EncoderConfig{SampleRate: 48000, Channels: 2, Application: gopus.ApplicationVoIP})
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, 960*2)
	var out [][]byte
	phase := 0.0
	for range bursts {
		for i := range on + off {
			for s := 0; s < 960; s++ {
				v := int16(0)
				if i < on {
					v = int16(peak * math.Sin(phase))
					phase += 2 * math.Pi * 440 / 48000
				}
				pcm[2*s], pcm[2*s+1] = v, v
			}
			buf := make([]byte, 1500)
			n, err := enc.EncodeInt16(pcm, buf)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, buf[:n])
		}
	}
	return out
}
