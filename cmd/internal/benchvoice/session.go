package benchvoice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// session is one visitor: a session, a peer and its counters.
// base is the broker the session talks to: sessions are spread round
// robin over the brokers, as a load balancer would.
func (s *session) base() string { return s.g.bases[s.n%len(s.g.bases)] }

type session struct {
	g                  *gen
	n                  int
	id, cid, token     string
	leg                string // Location of the voice leg
	pc                 *webrtc.PeerConnection
	track              *webrtc.TrackLocalStaticRTP
	sender             *webrtc.RTPSender
	levelExt           uint8   // negotiated RFC 6464 extension id (0: none); sender goroutine
	lk                 *lkPeer // --transport livekit: instead of pc and track
	err                error   // setup result; read after ramp
	offerAt, answerAt  time.Time
	connectedAt        atomic.Int64 // unix nanos
	connected, failed  chan struct{}
	connOnce, failOnce sync.Once

	// Owned by the sender goroutine; read after it stopped.
	sending    atomic.Bool
	seq0       uint16
	idx        uint32 // next frame: RTP seq seq0+idx, timestamp idx*960
	i0, i1     uint32 // frames [i0, i1) were sent in the window
	inWin      bool
	writeErrs  uint64
	sentWindow uint64

	// Owned by the NATS tap (under tap.mu).
	firstNATS  time.Time
	natsFrames uint64
	got        []uint64 // bit i: frame i was published
	lastSeq    uint64
	seqGaps    uint64 // frames skipped by Parley-Seq, in the window

	// sentAt[k] is when frame k of the loop was last written (unix nanos),
	// sentIdx[k] as which frame of the session.
	sentAt  [loopFrames]atomic.Int64
	sentIdx [loopFrames]atomic.Uint32

	// Owned by the echo reader; read after it stopped.
	echoWindow, echoGaps uint64
	echoRTT              []float32 // ms, echoes received in the window
	echoUnknown          uint64    // echoed payloads not from the loop

	mu      sync.Mutex // guards closed and the Add of readers
	closed  bool
	readers sync.WaitGroup
}

// create resolves the bench's widget and creates a session in mode
// ("voice" or "chat"), keeping its ids and token. It returns the session's
// voice_path ("" when the server offers no voice).
func (s *session) create(ctx context.Context, mode string) (string, error) {
	var res struct {
		Challenge string `json:"challenge"`
	}
	if err := s.g.postJSON(ctx, s.base(), "/v1/widget/resolve", map[string]string{"widget_key": widgetKey}, &res); err != nil {
		return "", err
	}
	var cr struct {
		SessionID      string `json:"session_id"`
		ConversationID string `json:"conversation_id"`
		SessionToken   string `json:"session_token"`
		VoicePath      string `json:"voice_path"`
	}
	if err := s.g.postJSON(ctx, s.base(), "/v1/sessions", map[string]string{"widget_key": widgetKey,
		"challenge": res.Challenge, "mode": mode}, &cr); err != nil {
		return "", err
	}
	s.id, s.cid, s.token = cr.SessionID, cr.ConversationID, cr.SessionToken
	return cr.VoicePath, nil
}

// setup: resolve, create a session, offer, apply the answer, start sending
// and wait for ICE+DTLS.
func (s *session) setup(ctx context.Context, tap *audioTap) error {
	g := s.g
	voicePath, err := s.create(ctx, "voice")
	if err != nil {
		return err
	}
	if voicePath == "" {
		return errors.New("the server offers no voice (no voice_path)")
	}
	tap.register(s)

	pc, err := g.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return fmt.Errorf("new peer: %w", err)
	}
	s.mu.Lock()
	s.pc = pc
	s.mu.Unlock()
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connOnce.Do(func() {
				s.connectedAt.Store(time.Now().UnixNano())
				close(s.connected)
			})
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			s.failOnce.Do(func() { close(s.failed) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed {
			s.readers.Go(func() { s.readEcho(tr) })
		}
	})
	s.track, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2},
		"mic", fmt.Sprintf("bench-%d", s.n))
	if err != nil {
		return err
	}
	tr, err := pc.AddTransceiverFromTrack(s.track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv})
	if err != nil {
		return err
	}
	s.sender = tr.Sender()
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
	s.offerAt = time.Now()
	answer, loc, err := g.postOffer(ctx, s.base(), voicePath, s.token, pc.LocalDescription().SDP)
	if err != nil {
		return err
	}
	s.answerAt, s.leg = time.Now(), loc
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("apply answer: %w", err)
	}
	for _, e := range s.sender.GetParameters().HeaderExtensions {
		if e.URI == sdp.AudioLevelURI {
			s.levelExt = uint8(e.ID)
		}
	}
	s.sending.Store(true)
	g.shards[s.n%len(g.shards)].add(s)
	select {
	case <-s.connected:
		return nil
	case <-s.failed:
		return errors.New("ICE/DTLS failed")
	case <-ctx.Done():
		return fmt.Errorf("not connected within %v", g.o.ConnectTimeout)
	}
}

// sendFrame writes the session's next frame (sender goroutine only).
func (s *session) sendFrame(p *rtp.Packet, inWindow bool) {
	if !s.sending.Load() {
		return
	}
	i := s.idx
	s.idx++
	p.SequenceNumber = s.seq0 + uint16(i)
	p.Timestamp = i * frameSamples
	p.Marker = i == 0
	k := int(i) % len(s.g.frames)
	p.Payload = s.g.frames[k]
	p.Header.Extension, p.Header.Extensions = false, p.Header.Extensions[:0]
	if s.levelExt != 0 {
		// The loop's tone is at about -50 dBov: quiet, as a browser says.
		_ = p.Header.SetExtension(s.levelExt, s.g.quiet)
	}
	s.sentIdx[k].Store(i)
	s.sentAt[k].Store(time.Now().UnixNano())
	var err error
	if s.lk != nil {
		err = s.lk.write(p.Payload)
	} else {
		err = s.track.WriteRTP(p)
	}
	if err != nil {
		s.writeErrs++
		return
	}
	if inWindow {
		if !s.inWin {
			s.inWin, s.i0 = true, i
		}
		s.i1 = i + 1
		s.sentWindow++
	}
}

// readEcho counts the echoed RTP that arrives in the window, the gaps in
// its sequence numbers, and each echo's round trip: from when its payload
// was last sent (the loop is 5 s long) to now.
func (s *session) readEcho(tr *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	var last uint16
	started := false
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		var h rtp.Header
		hl, err := h.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		seq := h.SequenceNumber
		if now := time.Now(); s.g.win.contains(now) {
			s.echoWindow++
			if d := seq - last; started && d > 1 && d < 1<<15 {
				s.echoGaps += uint64(d - 1)
			}
			payload := buf[hl:n]
			if h.Padding && len(payload) > 0 {
				payload = payload[:max(0, len(payload)-int(payload[len(payload)-1]))]
			}
			if k, ok := s.g.index[string(payload)]; ok {
				s.echoRTT = append(s.echoRTT, float32(now.UnixNano()-s.sentAt[k].Load())/1e6)
			} else {
				s.echoUnknown++
			}
		}
		if !started || int16(seq-last) > 0 {
			last, started = seq, true
		}
	}
}

// end hangs up: DELETE the leg and the session, close the peer, wait for
// its readers.
func (s *session) end(ctx context.Context) {
	s.sending.Store(false)
	if s.leg != "" {
		_ = s.g.do(ctx, s.base(), http.MethodDelete, s.leg, s.token)
	}
	if s.id != "" {
		_ = s.g.do(ctx, s.base(), http.MethodDelete, "/v1/sessions/"+s.id, s.token)
	}
	s.mu.Lock()
	s.closed = true
	pc, lk := s.pc, s.lk
	s.mu.Unlock()
	if pc != nil {
		_ = pc.Close()
	}
	if lk != nil {
		lk.room.Disconnect()
	}
	s.readers.Wait()
}
