package benchvoice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/cmd/internal/benchproc"
)

// gen is the client side: one pion API for all peers, their sessions and
// the sender goroutines.
type gen struct {
	o      Options
	bases  []string // brokers' HTTP base URLs; session n talks to bases[n % len]
	frames [][]byte
	quiet  []byte         // RFC 6464 audio level of the loop's frames: -50 dBov, not voiced
	index  map[string]int // payload → place in frames
	http   *http.Client
	api    *webrtc.API
	mux    ice.UDPMux // nil with --client-sockets peer
	win    window

	sessions []*session
	shards   []*shard
	quit     chan struct{}
	senders  sync.WaitGroup

	lateTicks, skippedTicks atomic.Uint64
	maxLate                 atomic.Int64
}

func newGen(o Options, bases []string, frames [][]byte, index map[string]int) (*gen, error) {
	var u *url.URL
	for i, base := range bases {
		var err error
		if u, err = url.Parse(base); err != nil {
			return nil, fmt.Errorf("bench: --url: %w", err)
		}
		bases[i] = strings.TrimSuffix(base, "/")
	}
	g := &gen{o: o, bases: bases, frames: frames, quiet: []byte{50}, index: index, quit: make(chan struct{}),
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType: opusPT,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	// Browsers send the RFC 6464 audio level on every packet, so Parley's
	// voice activity detection reads it rather than decoding: so does the
	// load, to cost what a browser's call costs.
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI},
		webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled) // no mDNS socket per peer
	loopback := isLoopback(u.Hostname())
	if loopback {
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	std, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	nw := bufferedNet{Net: std}
	se.SetNet(nw)
	if o.Sockets == "mux" {
		ip := net.IPv4(127, 0, 0, 1)
		if !loopback {
			ip = net.IPv4zero
		}
		conn, err := nw.ListenUDP("udp4", &net.UDPAddr{IP: ip})
		if err != nil {
			return nil, fmt.Errorf("bench: client UDP socket: %w", err)
		}
		g.mux = ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn, Net: nw})
		se.SetICEUDPMux(g.mux)
	}
	// No interceptors: the generator only writes and counts RTP.
	g.api = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	for range o.Senders {
		g.shards = append(g.shards, &shard{})
	}
	return g, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// bufferedNet gives every UDP socket pion opens large buffers: a few
// hundred peers' packets arrive in bursts on each tick.
type bufferedNet struct{ *stdnet.Net }

// ListenUDP implements transport.Net.
func (n bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil {
		_ = c.SetReadBuffer(socketBuffer) // capped at net.core.rmem_max
		_ = c.SetWriteBuffer(socketBuffer)
	}
	return c, err
}

func (g *gen) close() {
	g.stopSenders()
	if g.mux != nil {
		_ = g.mux.Close()
	}
	g.http.CloseIdleConnections()
}

// shard is the sessions one sender goroutine writes for.
type shard struct {
	mu       sync.Mutex
	sessions []*session // append-only
}

func (sh *shard) add(s *session) {
	sh.mu.Lock()
	sh.sessions = append(sh.sessions, s)
	sh.mu.Unlock()
}

// startSenders starts the sender goroutines, their ticks spread over the
// 20 ms period.
func (g *gen) startSenders() {
	epoch := time.Now()
	for i, sh := range g.shards {
		offset := time.Duration(i) * frameLen / time.Duration(len(g.shards))
		g.senders.Go(func() { g.runSender(sh, epoch.Add(offset)) })
	}
}

func (g *gen) stopSenders() {
	select {
	case <-g.quit:
	default:
		close(g.quit)
	}
	g.senders.Wait()
}

// runSender writes one frame for each of its sessions every 20 ms on an
// absolute schedule. When it falls more than 100 ms behind (the machine is
// saturated) it skips ticks rather than bursting, and counts them.
func (g *gen) runSender(sh *shard, next time.Time) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: opusPT}}
	for {
		if !benchproc.Pace(timer, next, g.quit) {
			return
		}
		late := time.Since(next)
		if late > 10*time.Millisecond {
			g.lateTicks.Add(1)
		}
		for cur := g.maxLate.Load(); int64(late) > cur && !g.maxLate.CompareAndSwap(cur, int64(late)); cur = g.maxLate.Load() {
		}
		sh.mu.Lock()
		list := sh.sessions
		sh.mu.Unlock()
		inWin := g.win.contains(next)
		for _, s := range list {
			s.sendFrame(&pkt, inWin)
		}
		next = next.Add(frameLen)
		if behind := time.Since(next); behind > 100*time.Millisecond {
			n := behind / frameLen
			next = next.Add(n * frameLen)
			g.skippedTicks.Add(uint64(n))
		}
	}
}

// ramp creates the sessions at o.Ramp per second and returns when each has
// connected or failed.
func (g *gen) ramp(ctx context.Context, tap *audioTap) {
	interval := time.Duration(float64(time.Second) / g.o.Ramp)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range g.o.Sessions {
		s := &session{g: g, n: i, seq0: uint16(rand.Uint32()), connected: make(chan struct{}), failed: make(chan struct{})}
		g.sessions = append(g.sessions, s)
		if err := benchproc.SleepUntil(ctx, start.Add(time.Duration(i)*interval)); err != nil {
			s.err = err
			continue
		}
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, g.o.ConnectTimeout)
			defer cancel()
			if g.o.Transport == "livekit" {
				s.err = s.setupLiveKit(sctx, tap)
			} else {
				s.err = s.setup(sctx, tap)
			}
		})
	}
	wg.Wait()
}

// teardown ends every session, 32 at a time, and returns cause.
func (g *gen) teardown(tap *audioTap, cause error) error {
	g.stopSenders()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, s := range g.sessions {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s.end(ctx)
		})
	}
	wg.Wait()
	tap.close()
	return cause
}

// request is a request to the server as the widget sends it: from origin,
// with the session's bearer token unless token is "", and a body of
// contentType unless that is "".
func (g *gen) request(ctx context.Context, base, method, path, token, contentType string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Origin", origin)
	return req, nil
}

func (g *gen) postJSON(ctx context.Context, base, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := g.request(ctx, base, http.MethodPost, path, "", "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	raw, _, err := g.send(req, http.StatusOK, http.StatusCreated)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// postOffer posts an SDP offer and returns the answer and the leg URL.
func (g *gen) postOffer(ctx context.Context, base, path, token, offer string) (string, string, error) {
	req, err := g.request(ctx, base, http.MethodPost, path, token, "application/sdp", strings.NewReader(offer))
	if err != nil {
		return "", "", err
	}
	raw, h, err := g.send(req, http.StatusCreated)
	if err != nil {
		return "", "", err
	}
	return string(raw), h.Get("Location"), nil
}

func (g *gen) do(ctx context.Context, base, method, path, token string) error {
	req, err := g.request(ctx, base, method, path, token, "", nil)
	if err != nil {
		return err
	}
	_, _, err = g.send(req, http.StatusNoContent, http.StatusOK)
	return err
}

// send does req and fails unless the status is one of ok; errors name the
// route and the server's error code, so failures group well.
func (g *gen) send(req *http.Request, ok ...int) ([]byte, http.Header, error) {
	route := req.Method + " " + routeOf(req.URL.Path)
	res, err := g.http.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil, fmt.Errorf("%s: timeout", route)
		}
		return nil, nil, fmt.Errorf("%s: %w", route, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading the body: %w", route, err)
	}
	if !slices.Contains(ok, res.StatusCode) {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		return nil, nil, fmt.Errorf("%s: %d %s", route, res.StatusCode, e.Error.Code)
	}
	return raw, res.Header, nil
}

// routeOf replaces ids in a path by placeholders.
func routeOf(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, "ses_") || strings.HasPrefix(s, "leg_") {
			parts[i] = "{" + s[:3] + "}"
		}
	}
	return strings.Join(parts, "/")
}
