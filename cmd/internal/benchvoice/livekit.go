package benchvoice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/livekit/protocol/livekit"
	lklog "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/parley-rtc/parley/cmd/internal/livekitserver"
	"github.com/parley-rtc/parley/media"
)

// The LiveKit transport of `parley bench voice` (--transport livekit): a
// real livekit-server --dev on loopback (free ports), a child `parley serve`
// whose widget's voice goes over LiveKit, and visitors that are LiveKit
// participants (server-sdk-go): each asks Parley for a participant token
// (which starts the room and the bridge), joins, publishes an Opus
// microphone track and reads the bridge's echo. The frames, the NATS tap
// and the report are the direct path's; frames are matched by payload (the
// SFU rewrites sequence numbers and timestamps).

const liveKitKey = "parley-bench"

// startLiveKit starts the bench's livekit-server (binary: the
// --livekit-server flag, else as livekitserver.FindServer finds it) with
// the bench's key and a random secret, logging JSON at warn. It runs in its
// own process group and is killed if this process dies. The caller stops
// it.
func startLiveKit(ctx context.Context, binary string) (*livekitserver.Server, error) {
	bin, err := livekitserver.FindServer(binary)
	if err != nil {
		return nil, fmt.Errorf("bench: %w (or give --livekit-server)", err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	lk, err := livekitserver.Start(ctx, livekitserver.Options{Binary: bin,
		APIKey: liveKitKey, APISecret: hex.EncodeToString(raw), // 48 characters
		LogLevel: "warn", JSONLog: true, StartLimit: time.Minute,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return lk, nil
}

// liveKitServeConfig is the child serve's config: LiveKit, and the bench's
// widget (pk_demo) with its voice over LiveKit.
func liveKitServeConfig(lk *livekitserver.Server) string {
	return fmt.Sprintf(`livekit:
  url: %q
  api_key: %q
  api_secret: %q
widgets:
  - public_key: %q
    display_title: Parley bench (LiveKit)
    agent: echo
    allow_dev_origins: true
    voice_transport: livekit
`, lk.URL, lk.APIKey, lk.APISecret, widgetKey)
}

// lkPeer is a session's LiveKit participant.
type lkPeer struct {
	room  *lksdk.Room
	track *lksdk.LocalTrack
}

// write sends one Opus frame (the sender goroutine).
func (p *lkPeer) write(frame []byte) error {
	return p.track.WriteSample(pionmedia.Sample{Data: frame, Duration: frameLen}, nil)
}

// setupLiveKit: resolve, create a session, ask for a LiveKit token (the
// room and the bridge start), join, publish the microphone and start
// sending once it is bound. offerAt is the token request, answerAt the
// join, connectedAt the microphone bound.
func (s *session) setupLiveKit(ctx context.Context, tap *audioTap) error {
	g := s.g
	if _, err := s.create(ctx, "chat"); err != nil {
		return err
	}
	tap.register(s)

	s.offerAt = time.Now()
	req, err := g.request(ctx, s.base(), http.MethodPost, "/v1/sessions/"+s.id+"/livekit-token", s.token, "", nil)
	if err != nil {
		return err
	}
	raw, h, err := g.send(req, http.StatusOK)
	if err != nil {
		return err
	}
	s.leg = h.Get("Location")
	var tok struct {
		Token      string `json:"token"`
		LiveKitURL string `json:"livekit_url"`
	}
	if err := json.Unmarshal(raw, &tok); err != nil || tok.Token == "" {
		return fmt.Errorf("livekit token: %v %s", err, raw)
	}

	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		if rp.Identity() != media.BridgeIdentity {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed {
			s.readers.Go(func() { s.readEcho(tr) })
		}
	}
	cb.OnDisconnected = func() { s.failOnce.Do(func() { close(s.failed) }) }
	room, err := lksdk.ConnectToRoomWithToken(tok.LiveKitURL, tok.Token, cb, lksdk.WithAutoSubscribe(true),
		lksdk.WithLogger(lklog.GetDiscardLogger()))
	if err != nil {
		return fmt.Errorf("livekit join: %w", err)
	}
	s.answerAt = time.Now()
	p := &lkPeer{room: room}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.lk = p
	}
	s.mu.Unlock()
	if closed {
		room.Disconnect()
		return errors.New("ended while joining")
	}
	if p.track, err = lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}); err != nil {
		return err
	}
	if _, err := room.LocalParticipant.PublishTrack(p.track, &lksdk.TrackPublicationOptions{Name: "microphone",
		Source: livekit.TrackSource_MICROPHONE}); err != nil {
		return fmt.Errorf("livekit publish: %w", err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !p.track.IsBound() {
		select {
		case <-tick.C:
		case <-s.failed:
			return errors.New("livekit disconnected before the microphone was bound")
		case <-ctx.Done():
			return fmt.Errorf("microphone not bound within %v", g.o.ConnectTimeout)
		}
	}
	s.connectedAt.Store(time.Now().UnixNano())
	s.connOnce.Do(func() { close(s.connected) })
	s.sending.Store(true)
	g.shards[s.n%len(g.shards)].add(s)
	return nil
}

// comparison is the JSON of `--transport both`: the two runs.
type comparison struct {
	Direct  *Report `json:"direct"`
	LiveKit *Report `json:"livekit"`
}

// PrintComparison prints direct vs LiveKit with the ratio direct/LiveKit.
func PrintComparison(w io.Writer, d, l *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "\ndirect vs LiveKit (%d sessions each; ratio = direct / LiveKit)\n", d.Sessions)
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	row := func(name, unit string, a, b float64) {
		fmt.Fprintf(tw, "%s\t%.2f %s\t%.2f %s\t%s\t\n", name, a, unit, b, unit, ratio(a, b))
	}
	fmt.Fprintf(tw, "metric\tdirect\tlivekit\tratio\t\n")
	row("client write → NATS p50", "ms", d.E2EUS.P50/1000, l.E2EUS.P50/1000)
	row("client write → NATS p99", "ms", d.E2EUS.P99/1000, l.E2EUS.P99/1000)
	row("client write → NATS max", "ms", d.E2EUS.Max/1000, l.E2EUS.Max/1000)
	row("RTP at broker/bridge → NATS p50", "ms", d.LatencyUS.P50/1000, l.LatencyUS.P50/1000)
	row("RTP at broker/bridge → NATS p99", "ms", d.LatencyUS.P99/1000, l.LatencyUS.P99/1000)
	row("echo round trip p50", "ms", d.EchoRTTMS.P50, l.EchoRTTMS.P50)
	row("echo round trip p99", "ms", d.EchoRTTMS.P99, l.EchoRTTMS.P99)
	lossPct := func(r *Report) float64 {
		if r.Frames.Sent == 0 {
			return 0
		}
		return 100 * float64(r.Frames.Missing) / float64(r.Frames.Sent)
	}
	fmt.Fprintf(tw, "frames missing on NATS\t%d of %d\t%d of %d\t\t\n", d.Frames.Missing, d.Frames.Sent, l.Frames.Missing, l.Frames.Sent)
	row("frames missing on NATS", "%", lossPct(d), lossPct(l))
	per := func(r *Report, v float64) float64 { return v / float64(max(1, r.Connected)) }
	row("parley CPU per session", "% core", per(d, d.Server.CPUPct), per(l, l.Server.CPUPct))
	row("parley RSS per session", "KiB", d.Server.RSSPerSessionKiB, l.Server.RSSPerSessionKiB)
	fmt.Fprintf(tw, "livekit-server CPU per session\t-\t%.2f %% core\t-\t\n", per(l, l.LiveKit.CPUPct))
	fmt.Fprintf(tw, "livekit-server RSS per session\t-\t%.0f KiB\t-\t\n", l.LiveKit.RSSPerSessionKiB)
	row("parley + livekit CPU per session", "% core", per(d, d.Server.CPUPct), per(l, l.Server.CPUPct+l.LiveKit.CPUPct))
	row("parley + livekit RSS per session", "KiB", d.Server.RSSPerSessionKiB, l.Server.RSSPerSessionKiB+l.LiveKit.RSSPerSessionKiB)
	row("generator CPU", "% core", d.Generator.CPUPct, l.Generator.CPUPct)
	_ = tw.Flush()
	fmt.Fprintf(w, "added by LiveKit (client → SFU → bridge → NATS minus client → broker → NATS): p50 %+.2f ms, p99 %+.2f ms\n",
		(l.E2EUS.P50-d.E2EUS.P50)/1000, (l.E2EUS.P99-d.E2EUS.P99)/1000)
	for _, r := range []*Report{d, l} {
		if r.OtherCPUPct > 10 {
			fmt.Fprintf(w, "WARNING: other processes took %.0f%% of a core during the %s window: the comparison is not clean\n", r.OtherCPUPct, r.Transport)
		}
	}
}

// quietLiveKitSDK silences server-sdk-go's process-wide logger, which
// also carries pion's logs of every participant's peer connections to
// stderr (the command only: it changes a global).
func quietLiveKitSDK() { lksdk.SetLogger(lklog.GetDiscardLogger()) }
