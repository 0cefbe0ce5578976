package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/webhook"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/media"
)

// The LiveKit transport at the edge: visitor participant tokens (the
// widget joins a LiveKit room instead of offering SDP to Parley; Parley's
// bridge joins the same room and is the voice leg), and LiveKit's webhooks.

// Identity prefixes of LiveKit participants.
const (
	visitorIdentityPrefix = "visitor-"
	transportLiveKit      = "livekit"
)

// maxWebhookBytes bounds a LiveKit webhook body (events are ~1 KiB).
const maxWebhookBytes = 64 << 10

// SetLiveKit turns the LiveKit transport on (lk nil: off, 503
// VOICE_UNAVAILABLE for livekit widgets). Call it before Start.
func (s *Server) SetLiveKit(lk *media.LiveKit) { s.livekit = lk }

type liveKitTokenResponse struct {
	Token               string `json:"token"`
	LiveKitURL          string `json:"livekit_url"`
	RoomName            string `json:"room_name"`
	ParticipantIdentity string `json:"participant_identity"`
	ExpiresInSeconds    int    `json:"expires_in_seconds"`
	LegID               string `json:"leg_id"`
}

// visitorMetadata is the participant metadata of a visitor's token.
type visitorMetadata struct {
	ConversationID string `json:"conversation_id"`
	SessionID      string `json:"session_id"`
}

// serveLiveKitToken: POST /v1/sessions/{id}/livekit-token — the session
// goes to voice over LiveKit: the room is created, the bridge joins it (the
// session's voice leg), and the visitor gets a participant token for it.
// Asking again while the bridge is up returns a fresh token for the same
// leg.
func (s *Server) serveLiveKitToken(w http.ResponseWriter, r *http.Request, sess broker.Session) error {
	if err := s.modeAllowed(sess, agentbridge.ModeVoice); err != nil {
		return err
	}
	wc, err := s.widgets.WidgetByID(sess.Widget)
	if err != nil {
		return ErrWidgetNotFound
	}
	if wc.VoiceTransport != transportLiveKit {
		return fmt.Errorf("%w: this widget's voice goes over %s: use POST /v1/sessions/{id}/webrtc",
			ErrTransportMismatch, wc.VoiceTransport)
	}
	lk := s.livekit
	if lk == nil {
		return fmt.Errorf("%w: LiveKit is not configured", ErrVoiceUnavailable)
	}
	if err := s.allowSwitch(w, sess.ID); err != nil {
		return err
	}
	room := lk.RoomName(sess.ConversationID)
	identity := visitorIdentityPrefix + sess.ID
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), voiceSetupTimeout)
	defer cancel()
	v, err := s.liveKitLeg(ctx, sess, lk, room, identity)
	if err != nil {
		return err
	}
	ttl := s.cfg.LiveKit.TokenTTL
	token, err := visitorToken(s.cfg.LiveKit.APIKey, s.cfg.LiveKit.APISecret, room, identity, sess, ttl)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/sessions/"+sess.ID+"/livekit/"+v.ID())
	writeJSON(w, http.StatusOK, liveKitTokenResponse{Token: token, LiveKitURL: lk.URL(), RoomName: room,
		ParticipantIdentity: identity, ExpiresInSeconds: int(ttl / time.Second), LegID: v.ID()})
	return nil
}

// liveKitLeg returns the session's LiveKit voice leg, starting one (room,
// bridge, StartVoice) unless its bridge is already up in this room.
func (s *Server) liveKitLeg(ctx context.Context, sess broker.Session, lk *media.LiveKit, room, identity string) (*broker.Voice, error) {
	if v, ok := s.voices.Voice(sess.ID); ok {
		if br, ok := v.Media().(*media.Bridge); ok && br.Alive() && br.Room() == room {
			return v, nil
		}
	}
	return s.startLeg(ctx, sess, transportLiveKit, func(v *broker.Voice, lh legHooks) (legMedia, error) {
		br, err := lk.NewBridge(ctx, media.BridgeOptions{
			ID: v.ID(), Room: room, Visitor: identity, AgentFormat: lh.format, Log: lh.log,
			OnMicFrame: lh.onMicFrame, OnState: lh.onState, VAD: lh.vad, OnSpeech: lh.onSpeech, OnUtterance: lh.onUtterance,
		})
		if err != nil {
			lh.log.Warn("livekit bridge failed", "err", err)
			return nil, err
		}
		return br, nil
	})
}

// visitorToken mints the visitor's LiveKit participant token: join this
// room only; publish microphone audio only; subscribe; no data, no
// metadata updates, no admin or recorder rights; visible; identity
// visitor-<session id>; metadata names the conversation.
func visitorToken(key, secret, room, identity string, sess broker.Session, ttl time.Duration) (string, error) {
	g := &auth.VideoGrant{RoomJoin: true, Room: room}
	g.SetCanPublish(true)
	g.SetCanPublishSources([]livekit.TrackSource{livekit.TrackSource_MICROPHONE})
	g.SetCanSubscribe(true)
	g.SetCanPublishData(false)
	g.SetCanUpdateOwnMetadata(false)
	md, err := json.Marshal(visitorMetadata{ConversationID: sess.ConversationID, SessionID: sess.ID})
	if err != nil {
		return "", err
	}
	t, err := auth.NewAccessToken(key, secret).SetVideoGrant(g).SetIdentity(identity).
		SetKind(livekit.ParticipantInfo_STANDARD).SetMetadata(string(md)).SetValidFor(ttl).ToJWT()
	if err != nil {
		return "", fmt.Errorf("signaling: livekit token: %w", err)
	}
	return t, nil
}

// webhookResponse acknowledges a webhook.
type webhookResponse struct {
	Received bool   `json:"received"`
	Recorded bool   `json:"recorded"`
	Seq      uint64 `json:"seq,omitempty"`
}

// serveLiveKitWebhook: POST /v1/livekit/webhook — LiveKit's room events,
// signed with the API secret (a JWT in Authorization whose sha256 claim is
// the body's hash). The visitor joining or leaving our room and the room
// finishing are recorded as media_state events in the conversation.
// Anything else, or a room that is not ours, is acknowledged and ignored.
func (s *Server) serveLiveKitWebhook(w http.ResponseWriter, r *http.Request) error {
	if s.livekit == nil {
		return fmt.Errorf("%w: LiveKit is not configured", ErrVoiceUnavailable)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxWebhookBytes)
	data, err := webhook.Receive(r, auth.NewSimpleKeyProvider(s.cfg.LiveKit.APIKey, s.cfg.LiveKit.APISecret))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return fmt.Errorf("%w: over %d bytes", ErrPayloadTooLarge, maxWebhookBytes)
	case err != nil:
		s.refusals.warn(time.Now(), "livekit webhook", "livekit webhook refused", "err", err) // no client address: SECURITY.md
		return fmt.Errorf("%w: %v", ErrWebhookInvalid, err)
	}
	var ev livekit.WebhookEvent
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("%w: webhook event: %v", ErrBadRequest, err)
	}
	state, reason, sessionID, ok := liveKitTransportEvent(&ev)
	cid, ours := s.livekit.ConversationOf(ev.GetRoom().GetName())
	if !ok || !ours {
		writeJSON(w, http.StatusOK, webhookResponse{Received: true})
		return nil
	}
	dedup := ""
	if ev.GetId() != "" {
		dedup = "livekit-" + ev.GetId()
	}
	seq, err := s.voices.TransportEvent(context.WithoutCancel(r.Context()), cid, sessionID, state, reason, dedup)
	switch {
	case errors.Is(err, broker.ErrUnknownConversation):
		writeJSON(w, http.StatusOK, webhookResponse{Received: true})
	case err != nil:
		return err // 503: LiveKit retries
	default:
		writeJSON(w, http.StatusOK, webhookResponse{Received: true, Recorded: true, Seq: seq})
	}
	return nil
}

// liveKitTransportEvent maps a webhook event to a media_state: the visitor
// joined (connected) or left (disconnected) the room, or the room finished
// (closed). ok is false for events Parley does not record (the bridge's
// own comings and goings included).
func liveKitTransportEvent(ev *livekit.WebhookEvent) (state, reason, sessionID string, ok bool) {
	switch ev.GetEvent() {
	case webhook.EventParticipantJoined, webhook.EventParticipantLeft:
		sid, visitor := strings.CutPrefix(ev.GetParticipant().GetIdentity(), visitorIdentityPrefix)
		if !visitor {
			return "", "", "", false
		}
		if ev.GetEvent() == webhook.EventParticipantJoined {
			return "connected", "livekit_participant_joined", sid, true
		}
		return "disconnected", "livekit_participant_left", sid, true
	case webhook.EventRoomFinished:
		return "closed", "livekit_room_finished", "", true
	}
	return "", "", "", false
}
