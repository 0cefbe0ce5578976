package main

import (
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/thesyncim/gopus"
)

// voiceClient is a pion peer playing the visitor's browser: it sends Opus
// from a local track and counts the agent audio it gets back.
type voiceClient struct {
	t         testing.TB
	pc        *webrtc.PeerConnection
	track     *webrtc.TrackLocalStaticSample
	location  string
	received  atomic.Int64
	connected chan struct{}
	readDone  chan struct{}
}

// newVoiceClient offers audio to the session's voice endpoint and applies
// the answer. The answer's status and body are checked by the caller via
// the returned response when the offer is refused.
func (e *env) newVoiceClient(s session) *voiceClient {
	e.t.Helper()
	c, r := e.offerVoice(s, "")
	if r.status != http.StatusCreated {
		e.t.Fatalf("voice offer: %d %s", r.status, r.raw)
	}
	return c
}

// offerVoice creates a client and posts its offer; on success the answer
// is applied. sdpOverride, when set, is posted instead of the real offer.
func (e *env) offerVoice(s session, sdpOverride string) (*voiceClient, response) {
	e.t.Helper()
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(opusOnly(e.t)))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		e.t.Fatal(err)
	}
	c := &voiceClient{t: e.t, pc: pc, connected: make(chan struct{}), readDone: make(chan struct{})}
	var once sync.Once
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(c.connected) })
		}
	})
	var readOnce sync.Once
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		readOnce.Do(func() {
			go func() {
				defer close(c.readDone)
				for {
					if _, _, err := tr.ReadRTP(); err != nil {
						return
					}
					c.received.Add(1)
				}
			}()
		})
	})
	c.track, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", "visitor")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(c.track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.close)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		e.t.Fatal(err)
	}
	<-gathered
	body := pc.LocalDescription().SDP
	if sdpOverride != "" {
		body = sdpOverride
	}
	r := e.doRaw("POST", "/v1/sessions/"+s.ID+"/webrtc", "application/sdp", body, "Authorization", "Bearer "+s.Token)
	if r.status != http.StatusCreated {
		return c, r
	}
	c.location = r.header.Get("Location")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: r.raw}); err != nil {
		e.t.Fatalf("apply answer: %v\n%s", err, r.raw)
	}
	return c, r
}

func opusOnly(t testing.TB) *webrtc.MediaEngine {
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

// waitConnected waits for ICE + DTLS.
func (c *voiceClient) waitConnected() {
	c.t.Helper()
	select {
	case <-c.connected:
	case <-time.After(15 * time.Second):
		c.t.Fatal("voice client did not connect")
	}
}

// send writes frames on a 20 ms schedule.
func (c *voiceClient) send(frames [][]byte) {
	c.t.Helper()
	paced(frames, func(_ int, f []byte) {
		if err := c.track.WriteSample(pionmedia.Sample{Data: f, Duration: 20 * time.Millisecond}); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			c.t.Fatalf("write sample: %v", err)
		}
	})
}

// paced calls write with each of frames on a 20 ms schedule, frame i at
// i × 20 ms after the first, as a microphone produces them; after a late
// write the next frames go at once until the schedule is caught up.
func paced(frames [][]byte, write func(i int, f []byte)) {
	begin := time.Now()
	timer := time.NewTimer(0)
	<-timer.C
	for i, f := range frames {
		if d := time.Until(begin.Add(time.Duration(i) * 20 * time.Millisecond)); d > 0 {
			timer.Reset(d)
			<-timer.C
		}
		write(i, f)
	}
}

func (c *voiceClient) close() {
	_ = c.pc.Close()
}

// speech encodes a test signal as real Opus, 20 ms per frame: for each
// burst, toneMS of a 440 Hz tone then silenceMS of silence.
func speech(t testing.TB, bursts, toneMS, silenceMS int) [][]byte {
	t.Helper()
	enc, err := gopus.NewEncoder(gopus.EncoderConfig{SampleRate: 48000, Channels: 2, Application: gopus.ApplicationVoIP})
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, 960*2)
	var out [][]byte
	phase := 0.0
	for range bursts {
		for i := 0; i < (toneMS+silenceMS)/20; i++ {
			loud := i < toneMS/20
			for s := 0; s < 960; s++ {
				v := int16(0)
				if loud {
					v = int16(12000 * math.Sin(phase))
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

// doRaw sends a body with an explicit content type.
func (e *env) doRaw(method, path, contentType, body string, headers ...string) response {
	e.t.Helper()
	return e.send(method, path, contentType, strings.NewReader(body), headers...)
}

// sampleOf is one 20 ms Opus frame as a media sample.
func sampleOf(frame []byte) pionmedia.Sample {
	return pionmedia.Sample{Data: frame, Duration: 20 * time.Millisecond}
}
