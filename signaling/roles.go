package signaling

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// The roles the edge needs from the core, each as small as the handlers
// that call it. Package broker's *Broker plays every one of them (see
// roles_test.go); they exist so that each handler names what it depends
// on, and so that a handler's test can live beside it.

// Widgets looks widgets up and, for the admin API, changes them.
type Widgets interface {
	WidgetByID(id string) (broker.WidgetRecord, error)
	WidgetByKey(key string) (configs.WidgetConfig, error)
	ListWidgets(tenant string) []broker.WidgetRecord
	CreateWidget(ctx context.Context, w configs.WidgetConfig, generateSecret bool) (broker.WidgetRecord, error)
	UpdateWidget(ctx context.Context, id string, w configs.WidgetConfig) (broker.WidgetRecord, error)
	DeleteWidget(ctx context.Context, id string) error
	RotateWidgetKey(ctx context.Context, id string, grace time.Duration) (broker.WidgetRecord, error)
}

// Keys verifies and manages API keys: admin keys and the secret keys of a
// site's server.
type Keys interface {
	VerifyKey(ctx context.Context, key, kind string) (broker.KeyInfo, error)
	Key(ctx context.Context, id string) (broker.KeyInfo, error)
	ListKeys(ctx context.Context, tenant string) ([]broker.KeyInfo, error)
	CreateAdminKey(ctx context.Context, tenant, name string, scopes []string) (string, broker.KeyInfo, error)
	CreateSecretKey(ctx context.Context, widgetID, name string) (string, broker.KeyInfo, error)
	RevokeKey(ctx context.Context, id string) (broker.KeyInfo, error)
}

// Sessions admits visitors: it starts, authenticates and ends sessions,
// spends challenge nonces, signs challenges and tokens, and counts the
// per-widget rates shared by every broker.
type Sessions interface {
	StartSession(ctx context.Context, req broker.StartRequest) (broker.StartResult, error)
	Authenticate(ctx context.Context, sessionID, token string) (broker.Session, error)
	EndSession(ctx context.Context, id, reason string) error
	UseNonce(ctx context.Context, nonce string) error
	SigningKey() []byte
	CountRate(ctx context.Context, key string, per time.Duration, now time.Time) (int, time.Time, error)
}

// Conversations carries a visitor's side of a conversation: messages in,
// the agent's events out (live and from the log), captures and uploads.
type Conversations interface {
	ValidateMessage(text, clientMessageID string) error
	PostMessage(ctx context.Context, s broker.Session, text, clientMessageID, via string, uploads ...string) (broker.Posted, error)
	AwaitReply(ctx context.Context, sub *broker.Subscription, p broker.Posted) (broker.Message, error)
	FindReply(ctx context.Context, cid, messageID string, fromSeq uint64) (broker.Message, bool, error)
	Subscribe(ctx context.Context, cid string) (*broker.Subscription, error)
	ReadLog(ctx context.Context, cid string, fromSeq uint64) ([]agentbridge.Event, error)
	History(ctx context.Context, cid string, limit int) ([]broker.Message, error)
	Capture(ctx context.Context, s broker.Session, kind, value, source string) (broker.Lead, error)
	PutUpload(ctx context.Context, s broker.Session, name, contentType string, r io.Reader) (broker.Upload, error)
}

// Records is the stored side the admin API reads and privacy deletion
// removes: conversations and leads.
type Records interface {
	Conversation(ctx context.Context, id string) (broker.Conversation, error)
	ListConversations(ctx context.Context, widgetIDs []string, limit int) ([]broker.Conversation, error)
	Leads(ctx context.Context, widgetIDs []string, limit int) ([]broker.Lead, error)
	DeleteConversation(ctx context.Context, cid string) error
	DeleteVisitor(ctx context.Context, widget, sub string) ([]string, error)
}

// Voices runs voice legs (WebRTC or LiveKit) and mode switches.
type Voices interface {
	NewVoice(s broker.Session) *broker.Voice
	StartVoice(ctx context.Context, v *broker.Voice, m broker.MediaLeg) error
	Voice(sessionID string) (*broker.Voice, bool)
	AgentFormat(agent string) string
	SetMode(ctx context.Context, s broker.Session, mode, reason string) (broker.ModeChange, broker.Session, error)
	TransportEvent(ctx context.Context, cid, sessionID, state, reason, dedup string) (uint64, error)
}

// Rooms is the live view of conversations the ops API shows, and the legs
// that feed it.
type Rooms interface {
	Rooms(ctx context.Context, widget, mode, agent string) ([]broker.Room, error)
	Room(ctx context.Context, cid string) (broker.Room, error)
	EndRoom(ctx context.Context, cid, reason string) error
	WatchRooms(f func(broker.Room)) (stop func(), err error)
	LegAttached(s broker.Session, legID, transport string)
	LegDetached(cid, legID string)
}

// Agents answers about agent workers and their NATS credentials.
type Agents interface {
	AliveWorkers(agent string) int
	AgentPermissions(agent string) (broker.AgentNATSPermissions, error)
	AgentCredentials(agent string) ([]byte, error)
}

// Health reports readiness and store health, counts what this broker
// hosts, and takes the observer the metrics hang on.
type Health interface {
	Ready(ctx context.Context) error
	StoreStatus() broker.StoreStatus
	LocalStats() broker.LocalStats
	SetObserver(o broker.Observer)
}

// Deps is everything New needs from the core, one field per role. A
// *broker.Broker fills every field (BrokerDeps).
type Deps struct {
	Widgets       Widgets
	Keys          Keys
	Sessions      Sessions
	Conversations Conversations
	Records       Records
	Voices        Voices
	Rooms         Rooms
	Agents        Agents
	Health        Health
}

// Broker is a core that plays every role, as *broker.Broker does.
type Broker interface {
	Widgets
	Keys
	Sessions
	Conversations
	Records
	Voices
	Rooms
	Agents
	Health
}

// BrokerDeps fills every role from one core.
func BrokerDeps(b Broker) Deps {
	return Deps{Widgets: b, Keys: b, Sessions: b, Conversations: b, Records: b,
		Voices: b, Rooms: b, Agents: b, Health: b}
}

// check refuses a Deps with a role missing, so a wiring mistake fails New
// rather than the first request that needs the role.
func (d Deps) check() error {
	roles := []struct {
		name string
		role any
	}{{"Widgets", d.Widgets}, {"Keys", d.Keys}, {"Sessions", d.Sessions}, {"Conversations", d.Conversations},
		{"Records", d.Records}, {"Voices", d.Voices}, {"Rooms", d.Rooms}, {"Agents", d.Agents}, {"Health", d.Health}}
	for _, r := range roles {
		if r.role == nil {
			return fmt.Errorf("signaling: no %s role given to New", r.name)
		}
	}
	return nil
}
