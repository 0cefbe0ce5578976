package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/livekit/protocol/livekit"
	lklog "github.com/livekit/protocol/logger"
	"github.com/livekit/protocol/logger/zaputil"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/twitchtv/twirp"
)

// The LiveKit transport: instead of answering the visitor's offer itself,
// Parley puts the visitor in a room of a LiveKit SFU (cluster) and joins
// that room as a participant, the bridge (livekit_bridge.go), which carries
// the visitor's microphone to the agent and the agent's audio back, through
// the same audio path as a direct Leg. This file is the client side of
// LiveKit's server API (RoomService: create, list, delete rooms) and the
// table of bridges.

// LiveKitConfig configures the LiveKit transport. Zero durations take the
// defaults noted.
type LiveKitConfig struct {
	// URL is the LiveKit server's WebSocket URL (ws:// or wss://; http(s)
	// works for the server API too).
	URL string
	// APIKey and APISecret sign the bridge's tokens and the server API
	// calls.
	APIKey, APISecret string
	// RoomPrefix starts every room name (RoomName).
	RoomPrefix string
	// EmptyTimeout closes a room this long after its last participant left
	// (default 5 min; LiveKit counts whole seconds).
	EmptyTimeout time.Duration
	// JoinTimeout bounds creating a room and joining it (default 10 s).
	JoinTimeout time.Duration
}

// Defaults of LiveKitConfig.
const (
	defaultLiveKitEmptyTimeout = 5 * time.Minute
	defaultLiveKitJoinTimeout  = 10 * time.Second
	// liveKitCallTimeout bounds one server API call made on our own (room
	// deletion while a bridge closes).
	liveKitCallTimeout = 5 * time.Second
)

// BridgeIdentity is the participant identity of Parley's bridge in every
// room.
const BridgeIdentity = "parley-bridge"

// LiveKit is Parley's LiveKit client: the server API and the bridges it
// runs. Make one with NewLiveKit, bridges with NewBridge, and Close it when
// done.
type LiveKit struct {
	cfg   LiveKitConfig
	audio Config // jitter window, playout queue, silence timeout of bridges
	log   *slog.Logger
	svc   *lksdk.RoomServiceClient

	bridges transports[string, *Bridge] // by room
}

// NewLiveKit builds the LiveKit client. audio carries the settings bridges
// share with direct legs (Config.JitterWindow, PlayoutQueue,
// SilenceTimeout; the network fields are not used). It does not contact
// LiveKit: the first room does. log may be nil.
func NewLiveKit(cfg LiveKitConfig, audio Config, log *slog.Logger) (*LiveKit, error) {
	if cfg.URL == "" || cfg.APIKey == "" || cfg.APISecret == "" {
		return nil, fmt.Errorf("%w: LiveKit needs a URL, an API key and a secret", ErrBadConfig)
	}
	if err := audio.Validate(); err != nil {
		return nil, err
	}
	if cfg.EmptyTimeout <= 0 {
		cfg.EmptyTimeout = defaultLiveKitEmptyTimeout
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = defaultLiveKitJoinTimeout
	}
	if log == nil {
		log = discardLogger()
	}
	return &LiveKit{cfg: cfg, audio: audio.withDefaults(), log: log,
		svc: lksdk.NewRoomServiceClient(cfg.URL, cfg.APIKey, cfg.APISecret)}, nil
}

// URL is the LiveKit server URL visitors connect to.
func (l *LiveKit) URL() string { return l.cfg.URL }

// RoomName is the room of a conversation: the configured prefix and the
// conversation id.
func (l *LiveKit) RoomName(conversationID string) string { return l.cfg.RoomPrefix + conversationID }

// ConversationOf is the conversation id of one of our room names; ok is
// false for rooms without our prefix.
func (l *LiveKit) ConversationOf(room string) (string, bool) {
	cid, ok := strings.CutPrefix(room, l.cfg.RoomPrefix)
	return cid, ok && cid != ""
}

// createRoom creates room (or finds it: CreateRoom is idempotent) with the
// configured empty timeout.
func (l *LiveKit) createRoom(ctx context.Context, room string) error {
	_, err := l.svc.CreateRoom(ctx, &livekit.CreateRoomRequest{
		Name:         room,
		EmptyTimeout: uint32(max(l.cfg.EmptyTimeout/time.Second, 1)),
	})
	if err != nil {
		return fmt.Errorf("%w: create room %s: %v", ErrLiveKit, room, err)
	}
	return nil
}

// DeleteRoom closes a room: LiveKit disconnects everyone in it (the visitor
// too) and sends room_finished. A room that does not exist is not an error.
func (l *LiveKit) DeleteRoom(ctx context.Context, room string) error {
	_, err := l.svc.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: room})
	if err != nil && !isTwirpNotFound(err) {
		return fmt.Errorf("%w: delete room %s: %v", ErrLiveKit, room, err)
	}
	return nil
}

// isTwirpNotFound reports a server API "not found" answer.
func isTwirpNotFound(err error) bool {
	var te twirp.Error
	return errors.As(err, &te) && te.Code() == twirp.NotFound
}

// LiveKitRoom is a room as LiveKit's server API reports it, for operators.
type LiveKitRoom struct {
	Name            string               `json:"name"`
	SID             string               `json:"sid"`
	CreatedAt       time.Time            `json:"created_at"`
	EmptyTimeout    int                  `json:"empty_timeout_seconds"`
	NumParticipants int                  `json:"num_participants"`
	NumPublishers   int                  `json:"num_publishers"`
	Participants    []LiveKitParticipant `json:"participants"`
}

// LiveKitParticipant is one participant of a LiveKitRoom.
type LiveKitParticipant struct {
	Identity string         `json:"identity"`
	SID      string         `json:"sid"`
	Kind     string         `json:"kind"`  // standard, agent, …
	State    string         `json:"state"` // joining, joined, active, disconnected
	JoinedAt time.Time      `json:"joined_at"`
	Tracks   []LiveKitTrack `json:"tracks"`
}

// LiveKitTrack is one published track of a LiveKitParticipant.
type LiveKitTrack struct {
	SID      string `json:"sid"`
	Kind     string `json:"kind"`   // audio, video, data
	Source   string `json:"source"` // microphone, camera, …
	Muted    bool   `json:"muted"`
	MimeType string `json:"mime_type,omitempty"`
}

// RoomState asks LiveKit for a room and its participants and tracks. A
// room that does not exist is ErrNoRoom.
func (l *LiveKit) RoomState(ctx context.Context, room string) (LiveKitRoom, error) {
	rooms, err := l.svc.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{room}})
	if err != nil {
		return LiveKitRoom{}, fmt.Errorf("%w: list rooms: %v", ErrLiveKit, err)
	}
	var info *livekit.Room
	for _, r := range rooms.GetRooms() {
		if r.GetName() == room {
			info = r
		}
	}
	if info == nil {
		return LiveKitRoom{}, fmt.Errorf("%w: %s", ErrNoRoom, room)
	}
	ps, err := l.svc.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: room})
	if err != nil {
		if isTwirpNotFound(err) {
			return LiveKitRoom{}, fmt.Errorf("%w: %s", ErrNoRoom, room)
		}
		return LiveKitRoom{}, fmt.Errorf("%w: list participants: %v", ErrLiveKit, err)
	}
	out := LiveKitRoom{Name: info.GetName(), SID: info.GetSid(), CreatedAt: time.Unix(info.GetCreationTime(), 0).UTC(),
		EmptyTimeout: int(info.GetEmptyTimeout()), NumParticipants: int(info.GetNumParticipants()),
		NumPublishers: int(info.GetNumPublishers()), Participants: []LiveKitParticipant{}}
	for _, p := range ps.GetParticipants() {
		lp := LiveKitParticipant{Identity: p.GetIdentity(), SID: p.GetSid(),
			Kind: strings.ToLower(p.GetKind().String()), State: strings.ToLower(p.GetState().String()),
			JoinedAt: time.UnixMilli(p.GetJoinedAtMs()).UTC(), Tracks: []LiveKitTrack{}}
		if p.GetJoinedAtMs() == 0 {
			lp.JoinedAt = time.Unix(p.GetJoinedAt(), 0).UTC()
		}
		for _, t := range p.GetTracks() {
			lp.Tracks = append(lp.Tracks, LiveKitTrack{SID: t.GetSid(), Kind: strings.ToLower(t.GetType().String()),
				Source: strings.ToLower(t.GetSource().String()), Muted: t.GetMuted(), MimeType: t.GetMimeType()})
		}
		out.Participants = append(out.Participants, lp)
	}
	return out, nil
}

// NumBridges is the number of live bridges.
func (l *LiveKit) NumBridges() int { return l.bridges.len() }

// Close closes every bridge (each leaves and deletes its room, and reports
// StateClosed with ReasonClosed). It is idempotent; NewBridge fails with
// ErrClosed after it.
func (l *LiveKit) Close() error {
	l.bridges.close()
	return nil
}

// sdkLogger routes the LiveKit SDK's logs (and its pion's) to log: its
// info becomes debug (the SDK is chatty), warnings and errors keep their
// level.
func sdkLogger(log *slog.Logger) lklog.Logger { return slogSDK{log} }

// slogSDK implements LiveKit's logger interface on slog.
type slogSDK struct{ l *slog.Logger }

var _ lklog.Logger = slogSDK{}

func (s slogSDK) Debugw(msg string, kv ...any) { s.l.Debug(msg, kv...) }
func (s slogSDK) Infow(msg string, kv ...any)  { s.l.Debug(msg, kv...) }
func (s slogSDK) Warnw(msg string, err error, kv ...any) {
	s.l.Warn(msg, append(kv, "err", err)...)
}
func (s slogSDK) Errorw(msg string, err error, kv ...any) {
	s.l.Error(msg, append(kv, "err", err)...)
}
func (s slogSDK) WithValues(kv ...any) lklog.Logger { return slogSDK{s.l.With(kv...)} }
func (s slogSDK) WithUnlikelyValues(kv ...any) lklog.UnlikelyLogger {
	return lklog.NewUnlikelyLogger(s, kv...)
}
func (s slogSDK) WithName(name string) lklog.Logger   { return slogSDK{s.l.With("lk", name)} }
func (s slogSDK) WithComponent(c string) lklog.Logger { return slogSDK{s.l.With("lk", c)} }
func (s slogSDK) WithCallDepth(int) lklog.Logger      { return s }
func (s slogSDK) WithItemSampler() lklog.Logger       { return s }
func (s slogSDK) WithoutSampler() lklog.Logger        { return s }
func (s slogSDK) WithDeferredValues() (lklog.Logger, lklog.DeferredFieldResolver) {
	return s, zaputil.NoOpDeferrer{}
}
