package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/livekit/protocol/livekit"
	lklog "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

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

const bvLiveKitKey = "parley-bench"

// bvLiveKitServerPath is --livekit-server, else $PARLEY_LIVEKIT_SERVER,
// else .cache/bin/livekit-server under the module root (`make livekit`),
// as the LiveKit tests find it.
func bvLiveKitServerPath(flagPath string) (string, error) {
	path := flagPath
	if path == "" {
		path = os.Getenv("PARLEY_LIVEKIT_SERVER")
	}
	if path == "" {
		dir, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				path = filepath.Join(dir, ".cache", "bin", "livekit-server")
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return "", errors.New("bench: no livekit-server: give --livekit-server or PARLEY_LIVEKIT_SERVER, or run from the module (make livekit)")
			}
			dir = parent
		}
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return "", fmt.Errorf("bench: livekit-server is missing (%s): build it with `make livekit` or give --livekit-server", path)
	}
	return path, nil
}

// bvLiveKit is a livekit-server started by the bench.
type bvLiveKit struct {
	url, httpURL string
	secret       string
	dir, logPath string
	cmd          *exec.Cmd
	exited       chan struct{}
}

// bvFreePort is a port that was free on 127.0.0.1 a moment ago.
func bvFreePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// bvStartLiveKit starts livekit-server --dev on free loopback ports with a
// fresh API key and secret and waits (polling HTTP) until it answers.
func bvStartLiveKit(ctx context.Context, bin string) (*bvLiveKit, error) {
	var ports [3]int
	for i, nw := range []string{"tcp", "tcp", "udp"} {
		p, err := bvFreePort(nw)
		if err != nil {
			return nil, fmt.Errorf("bench: free port: %w", err)
		}
		ports[i] = p
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	secret := hex.EncodeToString(raw) // 48 characters
	dir, err := os.MkdirTemp("", "parley-bench-livekit-")
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`port: %d
keys:
  %s: %s
rtc:
  udp_port: %d
  tcp_port: %d
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
logging:
  level: warn
  json: true
`, ports[0], bvLiveKitKey, secret, ports[2], ports[1])
	confPath := filepath.Join(dir, "livekit.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	logPath := filepath.Join(dir, "livekit.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin, "--dev", "--bind", "127.0.0.1", "--config", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: starting %s: %w", bin, err)
	}
	lk := &bvLiveKit{url: fmt.Sprintf("ws://127.0.0.1:%d", ports[0]), httpURL: fmt.Sprintf("http://127.0.0.1:%d/", ports[0]),
		secret: secret, dir: dir, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { // owned: ends when the process exits; stop waits for exited
		_ = cmd.Wait()
		logFile.Close()
		close(lk.exited)
	}()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if res, err := client.Get(lk.httpURL); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return lk, nil
			}
		}
		select {
		case <-lk.exited:
			err = fmt.Errorf("bench: livekit-server exited during start-up:\n%s", lk.logTail(40))
		case <-ctx.Done():
			err = context.Cause(ctx)
		case <-tick.C:
			if time.Now().After(deadline) {
				err = fmt.Errorf("bench: livekit-server did not answer on %s within 60s:\n%s", lk.httpURL, lk.logTail(40))
			}
		}
		if err != nil {
			lk.stop(io.Discard)
			return nil, err
		}
	}
}

func (lk *bvLiveKit) pid() int { return lk.cmd.Process.Pid }

// stop ends the process (SIGTERM, SIGKILL after 10 s) and removes its dir.
func (lk *bvLiveKit) stop(log io.Writer) {
	select {
	case <-lk.exited:
	default:
		_ = lk.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-lk.exited:
		case <-time.After(10 * time.Second):
			fmt.Fprintln(log, "bench: livekit-server did not stop within 10s; killing it")
			_ = lk.cmd.Process.Kill()
			<-lk.exited
		}
	}
	_ = os.RemoveAll(lk.dir)
}

// logTail is the last n lines of its log.
func (lk *bvLiveKit) logTail(n int) string {
	data, _ := os.ReadFile(lk.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logSummary counts its warnings and errors by message.
func (lk *bvLiveKit) logSummary() []string {
	data, _ := os.ReadFile(lk.logPath)
	t := &bvTail{}
	_, _ = t.Write(data)
	return t.summary()
}

// parleyConfig writes the child serve's config: LiveKit, and the bench's
// widget (pk_demo) with its voice over LiveKit. It returns the file's path.
func (lk *bvLiveKit) parleyConfig() (string, error) {
	conf := fmt.Sprintf(`livekit:
  url: %q
  api_key: %q
  api_secret: %q
widgets:
  - public_key: %q
    display_title: Parley bench (LiveKit)
    agent: echo
    allow_dev_origins: true
    voice_transport: livekit
`, lk.url, bvLiveKitKey, lk.secret, bvWidgetKey)
	path := filepath.Join(lk.dir, "parley.yaml")
	return path, os.WriteFile(path, []byte(conf), 0o600)
}

// bvLKPeer is a session's LiveKit participant.
type bvLKPeer struct {
	room  *lksdk.Room
	track *lksdk.LocalTrack
}

// write sends one Opus frame (the sender goroutine).
func (p *bvLKPeer) write(frame []byte) error {
	return p.track.WriteSample(pionmedia.Sample{Data: frame, Duration: bvFrame}, nil)
}

// setupLiveKit: resolve, create a session, ask for a LiveKit token (the
// room and the bridge start), join, publish the microphone and start
// sending once it is bound. offerAt is the token request, answerAt the
// join, connectedAt the microphone bound.
func (s *bvSession) setupLiveKit(ctx context.Context, tap *bvTap) error {
	g := s.g
	var res struct {
		Challenge string `json:"challenge"`
	}
	if err := g.postJSON(ctx, "/v1/widget/resolve", map[string]string{"widget_key": bvWidgetKey}, &res); err != nil {
		return err
	}
	var cr struct {
		SessionID      string `json:"session_id"`
		ConversationID string `json:"conversation_id"`
		SessionToken   string `json:"session_token"`
	}
	if err := g.postJSON(ctx, "/v1/sessions", map[string]string{"widget_key": bvWidgetKey,
		"challenge": res.Challenge, "mode": "chat"}, &cr); err != nil {
		return err
	}
	s.id, s.cid, s.token = cr.SessionID, cr.ConversationID, cr.SessionToken
	tap.register(s)

	s.offerAt = time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+"/v1/sessions/"+s.id+"/livekit-token", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Origin", bvOrigin)
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
	p := &bvLKPeer{room: room}
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

// bvCompare is `--transport both`: the two runs and their ratios.
type bvCompare struct {
	Direct  *voiceReport `json:"direct"`
	LiveKit *voiceReport `json:"livekit"`
}

// printComparison prints direct vs LiveKit with the ratio direct/LiveKit.
func printComparison(w io.Writer, d, l *voiceReport) {
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
	lossPct := func(r *voiceReport) float64 {
		if r.Frames.Sent == 0 {
			return 0
		}
		return 100 * float64(r.Frames.Missing) / float64(r.Frames.Sent)
	}
	fmt.Fprintf(tw, "frames missing on NATS\t%d of %d\t%d of %d\t\t\n", d.Frames.Missing, d.Frames.Sent, l.Frames.Missing, l.Frames.Sent)
	row("frames missing on NATS", "%", lossPct(d), lossPct(l))
	per := func(r *voiceReport, v float64) float64 { return v / float64(max(1, r.Connected)) }
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
	for _, r := range []*voiceReport{d, l} {
		if r.OtherCPUPct > 10 {
			fmt.Fprintf(w, "WARNING: other processes took %.0f%% of a core during the %s window: the comparison is not clean\n", r.OtherCPUPct, r.Transport)
		}
	}
}

// benchVoiceBoth is --transport both: the direct run, then the LiveKit
// run with the same options, each table, and the comparison.
func benchVoiceBoth(ctx context.Context, o benchVoiceOptions, asJSON bool, stdout, stderr io.Writer) int {
	var res bvCompare
	code := 0
	for _, tr := range []string{"direct", "livekit"} {
		o.Transport = tr
		fmt.Fprintf(stderr, "bench: == transport %s ==\n", tr)
		rep, err := runBenchVoice(ctx, o, stderr)
		if rep != nil && !asJSON {
			rep.printTable(stdout)
			fmt.Fprintln(stdout)
		}
		switch {
		case err != nil:
			fmt.Fprintf(stderr, "parley bench voice: %s: %v\n", tr, err)
			code = 1
		case rep.Failed > 0:
			fmt.Fprintf(stderr, "parley bench voice: %s: %d of %d sessions failed: %v\n", tr, rep.Failed, rep.Sessions, rep.Failures)
			code = 1
		}
		if tr == "direct" {
			res.Direct = rep
		} else {
			res.LiveKit = rep
		}
		if ctx.Err() != nil {
			break
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else if res.Direct != nil && res.LiveKit != nil {
		printComparison(stdout, res.Direct, res.LiveKit)
	}
	return code
}

// bvQuietLiveKitSDK silences server-sdk-go's process-wide logger, which
// also carries pion's logs of every participant's peer connections to
// stderr (the command only: it changes a global).
func bvQuietLiveKitSDK() { lksdk.SetLogger(lklog.GetDiscardLogger()) }
