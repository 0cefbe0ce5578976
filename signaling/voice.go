package signaling

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/media"
)

// Voice signaling, WHIP-style (RFC 9725): POST an SDP offer, get the answer
// and a leg URL; PATCH trickle ICE or an ICE restart to it; DELETE hangs up.

// maxSDPBytes bounds an SDP offer or fragment.
const maxSDPBytes = 64 << 10

// Content types of voice signaling.
const (
	contentSDP     = "application/sdp"
	contentSDPFrag = "application/trickle-ice-sdpfrag"
	contentJSON    = "application/json"
)

// voiceSetupTimeout bounds creating a leg (ICE gathering included).
const voiceSetupTimeout = 10 * time.Second

// iceLeg is what the ICE endpoints need of a media leg.
type iceLeg interface {
	ICESession() string
	TrickleIf(ctx context.Context, frag string, match func(session string) bool) (media.ICEUpdate, error)
	RenegotiateIf(ctx context.Context, offer string, match func(session string) bool) (media.ICEUpdate, error)
}

type sdpJSON struct {
	Type  string `json:"type"`
	SDP   string `json:"sdp"`
	LegID string `json:"leg_id,omitempty"`
}

// readSDP reads an SDP offer as application/sdp or as JSON
// {"type":"offer","sdp":…}; it reports whether the caller spoke JSON.
func readSDP(w http.ResponseWriter, r *http.Request) (string, bool, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	switch mt {
	case contentSDP:
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSDPBytes))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", false, fmt.Errorf("%w: SDP over %d bytes", ErrPayloadTooLarge, maxSDPBytes)
		}
		if err != nil {
			return "", false, fmt.Errorf("%w: reading the offer: %v", ErrBadRequest, err)
		}
		return string(body), false, nil
	case contentJSON:
		var req sdpJSON
		if err := decodeJSON(w, r, &req); err != nil {
			return "", true, err
		}
		if req.Type != "offer" {
			return "", true, fmt.Errorf("%w: type must be \"offer\"", media.ErrBadSDP)
		}
		if len(req.SDP) > maxSDPBytes {
			return "", true, fmt.Errorf("%w: SDP over %d bytes", ErrPayloadTooLarge, maxSDPBytes)
		}
		return req.SDP, true, nil
	default:
		return "", false, fmt.Errorf("%w: Content-Type must be %s or %s", ErrUnsupportedMediaType, contentSDP, contentJSON)
	}
}

// serveVoiceOffer: POST /v1/sessions/{id}/webrtc — the offer of a new voice
// leg. The answer is non-trickle (it carries our candidates); the browser
// may trickle its own with PATCH.
func (s *Server) serveVoiceOffer(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	if s.engine == nil {
		return ErrVoiceUnavailable
	}
	if err := s.modeAllowed(sess, agentbridge.ModeVoice); err != nil {
		return err
	}
	if wc, err := s.widgets.WidgetByID(sess.Widget); err == nil && wc.VoiceTransport == transportLiveKit {
		return fmt.Errorf("%w: this widget's voice goes over LiveKit: use POST /v1/sessions/{id}/livekit-token", ErrTransportMismatch)
	}
	if err := s.allowSwitch(w, sess.ID); err != nil {
		return err
	}
	offer, asJSON, err := readSDP(w, r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), voiceSetupTimeout)
	defer cancel()
	var leg *media.Leg
	var answer string
	v, err := s.startLeg(ctx, sess, transportWebRTC, func(v *broker.Voice, lh legHooks) (legMedia, error) {
		var err error
		leg, answer, err = s.engine.NewLeg(ctx, media.LegOptions{
			ID: v.ID(), Offer: offer, AgentFormat: lh.format, Log: lh.log,
			OnMicFrame: lh.onMicFrame, OnState: lh.onState, VAD: lh.vad, OnSpeech: lh.onSpeech, OnUtterance: lh.onUtterance,
		})
		return mediaLeg{leg}, err
	})
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Location", "/v1/sessions/"+sess.ID+"/webrtc/"+v.ID())
	h.Set("ETag", entityTag(leg.ICESession()))
	h.Set("Cache-Control", "no-store")
	setICEServerLinks(h, s.iceServers(sess.ID, time.Now()))
	if asJSON {
		writeJSON(w, http.StatusCreated, sdpJSON{Type: "answer", SDP: answer, LegID: v.ID()})
		return nil
	}
	w.Header().Set("Content-Type", contentSDP)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
	return nil
}

// transportWebRTC names a leg whose browser offered SDP here (the
// default of broker.NewVoice); livekit.go has the other transport.
const transportWebRTC = "webrtc"

// legMedia is a voice leg's transport as the edge drives it: the broker
// plays the agent's audio to it and the speech pipeline speaks on it.
type legMedia interface {
	broker.MediaLeg
	speechLeg
}

// legHooks is what a voice leg's transport is built with, the same for
// every transport: the agent's audio format, the leg's log, and the
// callbacks that take the visitor's audio, the transport's states and the
// visitor's voice activity.
type legHooks struct {
	format      media.Format
	log         *slog.Logger
	onMicFrame  func(agentbridge.AudioFrame)
	onState     func(st media.State, reason string)
	vad         media.VAD
	onSpeech    func(media.SpeechEvent)
	onUtterance func(media.Utterance)
}

// startLeg starts a voice leg of sess on transport (transportWebRTC,
// transportLiveKit): open builds the transport from the new leg's hooks,
// then the broker starts the leg on it. If open fails or the broker
// refuses, the leg's speech pipeline is stopped (and the transport open
// built is closed).
func (s *Server) startLeg(ctx context.Context, sess broker.Session, transport string,
	open func(v *broker.Voice, lh legHooks) (legMedia, error)) (*broker.Voice, error) {
	format, err := media.ParseFormat(s.voices.AgentFormat(sess.Agent))
	if err != nil {
		return nil, err
	}
	v := s.voices.NewVoice(sess)
	v.SetTransport(transport)
	log := s.log.With("session_id", sess.ID, "conversation_id", sess.ConversationID, "leg_id", v.ID())
	ls := s.newLegSpeech(v, log)
	m, err := open(v, legHooks{format: format, log: log,
		onMicFrame:  s.micSink(v),
		onState:     func(st media.State, reason string) { s.onLegState(v, st, reason) },
		vad:         vadOf(v.Settings(), ls.speaks()),
		onSpeech:    ls.onSpeech(v),
		onUtterance: ls.utterances(),
	})
	if err != nil {
		ls.stop(v)
		return nil, err
	}
	ls.attach(m)
	if err := s.voices.StartVoice(ctx, v, m); err != nil {
		ls.stop(v)
		_ = m.Close()
		return nil, err
	}
	return v, nil
}

// mediaLeg is a WebRTC leg as the broker sees it: a MediaLeg with stats
// for ops; Trickle and Renegotiate stay reachable for the ICE endpoints.
type mediaLeg struct{ *media.Leg }

// MediaStats implements broker.MediaStatser.
func (m mediaLeg) MediaStats() broker.MediaStats {
	st := m.Stats()
	return broker.MediaStats{FramesIn: st.FramesIn, FramesOut: st.FramesOut, Lost: st.Lost, Late: st.Late,
		JitterMS: st.JitterMS, RTTMS: st.RTTMS, BitrateIn: st.BitrateIn, BitrateOut: st.BitrateOut,
		Dropped: st.Dropped, Rejected: st.Rejected}
}

// onLegState relays a transport state change: to the log (and so to the
// visitor's WebSocket), and, when the leg is gone, back to chat.
func (s *Server) onLegState(v *broker.Voice, st media.State, reason string) {
	if st == media.StateClosed {
		if reason == media.ReasonRemoteClosed {
			s.ended.add(v.Session().ID, v.ID(), time.Now()) // a hang-up whose DELETE may follow
		}
		v.TransportClosed(reason)
		return
	}
	v.MediaState(string(st), reason)
}

// voiceLeg finds the session's leg named in the path.
func (s *Server) voiceLeg(r *http.Request, sess broker.Session) (*broker.Voice, error) {
	v, ok := s.voices.Voice(sess.ID)
	if !ok || v.ID() != r.PathValue("leg") {
		return nil, ErrLegNotFound
	}
	return v, nil
}

// serveVoicePatch: PATCH /v1/sessions/{id}/webrtc/{leg} — trickle ICE
// candidates or an ICE restart as an RFC 8840 SDP fragment (200 with our
// new credentials on a restart, 204 otherwise), or a full re-offer as
// application/sdp (200 with the answer). Every PATCH is conditional on the
// leg's ICE session (RFC 9725 §4.3.1): If-Match with the leg's ETag, or
// "*" (what a client sends to restart ICE); none is 428, another session's
// 412. A 200 carries the ETag of the session it leaves the leg in.
func (s *Server) serveVoicePatch(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	v, err := s.voiceLeg(r, sess)
	if err != nil {
		return err
	}
	leg, ok := v.Media().(iceLeg)
	if !ok {
		return fmt.Errorf("%w: this leg does not take ICE updates", ErrUnsupportedMediaType)
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != contentSDPFrag && mt != contentSDP {
		return fmt.Errorf("%w: Content-Type must be %s or %s", ErrUnsupportedMediaType, contentSDPFrag, contentSDP)
	}
	cond, ok := parseIfMatch(r.Header)
	if !ok {
		return fmt.Errorf("%w: send If-Match with the ETag of the leg's ICE session, or \"*\" to restart ICE", ErrPreconditionRequired)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSDPBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return fmt.Errorf("%w: over %d bytes", ErrPayloadTooLarge, maxSDPBytes)
	case err != nil:
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	var u media.ICEUpdate
	if mt == contentSDPFrag {
		// A restart's gathering finishes even if the client goes.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), voiceSetupTimeout)
		defer cancel()
		u, err = leg.TrickleIf(ctx, string(body), cond.matches)
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), voiceSetupTimeout)
		defer cancel()
		u, err = leg.RenegotiateIf(ctx, string(body), cond.matches)
	}
	if err != nil {
		return err
	}
	if u.Answer == "" {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	h := w.Header()
	h.Set("ETag", entityTag(u.Session))
	h.Set("Cache-Control", "no-store")
	if u.Restarted {
		setICEServerLinks(h, s.iceServers(sess.ID, time.Now())) // fresh TURN credentials
	}
	ct := contentSDP
	if mt == contentSDPFrag {
		ct = contentSDPFrag
	}
	h.Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, u.Answer)
	return nil
}

// serveVoiceDelete: DELETE /v1/sessions/{id}/webrtc/{leg} hangs up; the
// conversation goes on in chat. If-Match is ignored (RFC 9725 §4.3.1). A
// leg whose peer connection the visitor closed lately (remote_closed:
// WHIP clients close it before they DELETE) was hung up by that: 204 too.
// Another DELETE of a leg gone otherwise is 404.
func (s *Server) serveVoiceDelete(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	v, err := s.voiceLeg(r, sess)
	if errors.Is(err, ErrLegNotFound) && s.ended.has(sess.ID, r.PathValue("leg"), time.Now()) {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err != nil {
		return err
	}
	v.End(r.Context(), "visitor_hangup")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type modeRequest struct {
	Mode string `json:"mode"`
}

type modeResponse struct {
	SessionID      string `json:"session_id"`
	ConversationID string `json:"conversation_id"`
	Mode           string `json:"mode"`
	PreviousMode   string `json:"previous_mode"`
	Changed        bool   `json:"changed"`
	Seq            uint64 `json:"seq,omitempty"`
}

// serveMode: POST /v1/sessions/{id}/mode {"mode":"voice"|"chat"}.
func (s *Server) serveMode(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	var req modeRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := s.modeAllowed(sess, req.Mode); err != nil {
		return err
	}
	if err := s.allowSwitch(w, sess.ID); err != nil {
		return err
	}
	mc, _, err := s.voices.SetMode(context.WithoutCancel(r.Context()), sess, req.Mode, "visitor")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, modeResponse{SessionID: sess.ID, ConversationID: sess.ConversationID,
		Mode: mc.Mode, PreviousMode: mc.PreviousMode, Changed: mc.Changed, Seq: mc.Seq})
	return nil
}

// iceServer is one entry of a session's ice_servers (RTCIceServer shape).
type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// iceServers returns the STUN and TURN servers for a session. TURN gets
// per-session credentials in the TURN REST API style: username
// "<expiry unix>:<session id>", password base64(HMAC-SHA1(secret, username)).
func (s *Server) iceServers(sessionID string, now time.Time) []iceServer {
	out := []iceServer{}
	m := s.cfg.Media
	if len(m.STUNURLs) > 0 {
		out = append(out, iceServer{URLs: m.STUNURLs})
	}
	if len(m.TURN.URLs) > 0 && m.TURN.Secret != "" {
		user := strconv.FormatInt(now.Add(m.TURN.CredentialTTL).Unix(), 10) + ":" + sessionID
		mac := hmac.New(sha1.New, []byte(m.TURN.Secret))
		mac.Write([]byte(user))
		out = append(out, iceServer{URLs: m.TURN.URLs, Username: user,
			Credential: base64.StdEncoding.EncodeToString(mac.Sum(nil))})
	}
	return out
}

// modeAllowed refuses voice for chat-only widgets (and chat for voice-only
// ones).
func (s *Server) modeAllowed(sess broker.Session, mode string) error {
	wc, err := s.widgets.WidgetByID(sess.Widget)
	if err != nil {
		return ErrWidgetNotFound
	}
	switch {
	case mode == agentbridge.ModeVoice && !wc.AllowsVoice():
		return fmt.Errorf("%w: this widget is chat only", ErrModeNotAllowed)
	case mode == agentbridge.ModeChat && !wc.AllowsChat():
		return fmt.Errorf("%w: this widget is voice only", ErrModeNotAllowed)
	}
	return nil
}

// wsMode handles a {"type":"mode","mode":…} frame.
func (l *leg) onModeFrame(ctx context.Context, mode string) {
	if err := l.s.modeAllowed(l.sess, mode); err != nil {
		l.sendError(err, "")
		return
	}
	if err := l.s.allowSwitch(nil, l.sess.ID); err != nil {
		l.sendError(err, "")
		return
	}
	mc, _, err := l.s.voices.SetMode(context.WithoutCancel(ctx), l.sess, mode, "visitor")
	if err != nil {
		l.sendError(err, "")
		return
	}
	if !mc.Changed {
		// No event will come: answer directly.
		l.send(serverFrame{Type: "mode", Mode: mc.Mode})
	}
}

// vadOf is the voice activity detection a leg runs for the broker's
// settings of its session (widget and agent). Speech the broker speaks
// (spoken: the agent's speech pipeline) is interruptible whenever the
// widget says so: agents.barge_in is about the agent's own audio.
func vadOf(s broker.VoiceSettings, spoken bool) media.VAD {
	return media.VAD{ThresholdDBov: s.ThresholdDBov, MinSpeech: s.MinSpeech, Hangover: s.Hangover,
		BargeIn: s.BargeIn || (spoken && s.WidgetBargeIn), BargeInMin: s.BargeInMin}
}

// micSink is where a leg's visitor audio goes: to the agent, unless the
// agent's speech pipeline hears for it (and it did not ask for audio too).
func (s *Server) micSink(v *broker.Voice) func(agentbridge.AudioFrame) {
	if s.hearsFor(v.Session().Agent) {
		return nil
	}
	return v.PublishMic
}

// speechOf is a leg's speech event as the broker records it.
func speechOf(e media.SpeechEvent) broker.SpeechEvent {
	return broker.SpeechEvent{Kind: string(e.Kind), At: e.At, Source: e.Source, LevelDBov: e.LevelDBov, HeardMS: e.HeardMS}
}
