package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// Rooms are the operator's view of live conversations: who is in each,
// which mode, which agent, how its media is doing. Each broker keeps the
// rooms whose legs it hosts; changes are coalesced (at most one write per
// room per ops.room_update_interval, never on the media path) into the
// <prefix>_rooms KV bucket (key = conversation id, deleted when the room
// ends) and announced on parley.rooms.<cid>, so `nats kv watch
// parley_rooms` shows rooms live.

// Room is a live conversation's state.
type Room struct {
	ConversationID string            `json:"conversation_id"`
	Widget         string            `json:"widget"`
	Agent          string            `json:"agent"`
	Mode           string            `json:"mode"`
	Legs           []RoomLeg         `json:"legs"`
	Participants   []RoomParticipant `json:"participants"`
	AgentState     string            `json:"agent_state,omitempty"`
	WorkerID       string            `json:"worker_id,omitempty"`
	StartedAt      time.Time         `json:"started_at"`
	LastActivity   time.Time         `json:"last_activity"`
	UpdatedAt      time.Time         `json:"updated_at"`
	EndedReason    string            `json:"ended_reason,omitempty"`
	Broker         string            `json:"broker,omitempty"`
}

// RoomLeg is one transport attached to the room.
type RoomLeg struct {
	// Broker hosts the leg; Seen is when that broker last wrote it.
	Broker    string      `json:"broker"`
	Seen      time.Time   `json:"seen"`
	ID        string      `json:"id"`
	Kind      string      `json:"kind"`      // chat or voice
	Transport string      `json:"transport"` // websocket, http, webrtc, livekit
	SessionID string      `json:"session_id"`
	Since     time.Time   `json:"since"`
	Media     *MediaStats `json:"media,omitempty"`
}

// RoomParticipant is someone in the room: a visitor session or the agent
// worker.
type RoomParticipant struct {
	Kind string `json:"kind"` // visitor or agent
	ID   string `json:"id"`
}

// MediaStats are a voice leg's media counters as ops shows them.
type MediaStats struct {
	FramesIn   uint64  `json:"frames_in"`
	FramesOut  uint64  `json:"frames_out"`
	Lost       uint64  `json:"lost"`
	Late       uint64  `json:"late"`
	JitterMS   float64 `json:"jitter_ms"`
	RTTMS      float64 `json:"rtt_ms"`
	BitrateIn  float64 `json:"bitrate_in"`
	BitrateOut float64 `json:"bitrate_out"`
	InFPS      float64 `json:"in_fps"`
	OutFPS     float64 `json:"out_fps"`
	LossPct    float64 `json:"loss_pct"`
	// Dropped: agent frames dropped from the playout queue (full, or
	// cleared by barge-in); Rejected: agent frames of a wrong codec.
	Dropped  uint64 `json:"dropped,omitempty"`
	Rejected uint64 `json:"rejected,omitempty"`
}

// MediaStatser is implemented by media legs that report counters.
type MediaStatser interface {
	MediaStats() MediaStats
}

// Room end reasons.
const (
	RoomEndedLegsClosed = "legs_closed"
	RoomEndedByOps      = "ended_by_operator"
	// RoomEndedBrokerStopped: the broker hosting the room's last legs
	// stopped (its visitors reconnect to another broker, which starts the
	// room again).
	RoomEndedBrokerStopped = "broker_stopped"
)

// httpLegIdle is how long an HTTP-only visitor counts as present after a
// request.
const httpLegIdle = time.Minute

// roomRefresh: a broker rewrites each of its rooms at least this often, so
// rooms left behind by a broker that died can be told apart (roomStale).
const (
	roomRefresh = 30 * time.Second
	// roomWriters bounds the room records one flush writes at once.
	roomWriters = 16
	roomStale   = 3 * roomRefresh
	// roomReleaseTimeout bounds how long a stopping broker spends taking
	// its legs out of room records; what it did not reach expires.
	roomReleaseTimeout = time.Second
)

type roomState struct {
	room    Room
	legs    map[string]*roomLeg
	dirty   bool
	ended   string
	written time.Time
	// refresh is when, after written, the room is rewritten unchanged:
	// between roomRefresh/2 and roomRefresh, drawn again at every write,
	// so rooms that started together (a burst of visitors) do not all
	// come due in the same flush.
	refresh time.Duration
	prevAt  time.Time
	prev    map[string]MediaStats // for fps
}

// nextRefresh draws a room's next refresh interval.
func nextRefresh() time.Duration { return roomRefresh/2 + rand.N(roomRefresh/2) }

type roomLeg struct {
	leg   RoomLeg
	media MediaStatser
	until time.Time // http legs expire
}

// rooms is this broker's room table.
type rooms struct {
	b     *Broker
	mu    sync.Mutex
	byCID map[string]*roomState
	id    string
}

func newRooms(b *Broker) *rooms {
	return &rooms{b: b, byCID: make(map[string]*roomState), id: newID("brk_")}
}

// attach adds a leg to a conversation's room, creating the room.
func (r *rooms) attach(s Session, leg RoomLeg, media MediaStatser, until time.Time) {
	now := time.Now().UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.byCID[s.ConversationID]
	if st == nil {
		st = &roomState{room: Room{ConversationID: s.ConversationID, Widget: s.Widget, Agent: s.Agent,
			Mode: s.Mode, StartedAt: now, Broker: r.id}, legs: map[string]*roomLeg{}, prev: map[string]MediaStats{},
			refresh: nextRefresh()}
		r.byCID[s.ConversationID] = st
	}
	// A leg joining a room that ended since the last flush (a reload, a
	// resume right after an operator ended it) keeps the room: otherwise
	// the flush would delete it with a live leg inside.
	st.ended = ""
	if l, ok := st.legs[leg.ID]; ok {
		l.until = until // an HTTP leg seen again
		st.room.LastActivity = now
		st.dirty = true
		return
	}
	leg.SessionID, leg.Since = s.ID, now
	st.legs[leg.ID] = &roomLeg{leg: leg, media: media, until: until}
	st.room.LastActivity = now
	st.dirty = true
}

// detach removes a leg; a room without legs ends.
func (r *rooms) detach(cid, legID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.byCID[cid]
	if st == nil {
		return
	}
	delete(st.legs, legID)
	delete(st.prev, legID)
	if len(st.legs) == 0 && st.ended == "" {
		st.ended = RoomEndedLegsClosed
	}
	st.dirty = true
}

// leave removes every leg of a session that ended: its HTTP leg would
// otherwise count it present for a minute, and its WebSocket until the
// close handshake ends.
func (r *rooms) leave(cid, sid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.byCID[cid]; st != nil {
		st.leaveLocked(sid)
	}
}

// leaveLocked removes a session's legs; the room ends with its last leg.
func (st *roomState) leaveLocked(sid string) {
	for id, l := range st.legs {
		if l.leg.SessionID == sid {
			delete(st.legs, id)
			delete(st.prev, id)
			st.dirty = true
		}
	}
	if len(st.legs) == 0 && st.ended == "" {
		st.ended, st.dirty = RoomEndedLegsClosed, true
	}
}

// forget drops a room whose conversation is gone, without writing it.
func (r *rooms) forget(cid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.byCID, cid)
}

// observe follows a conversation's log events (called by the hub).
func (r *rooms) observe(cid string, ev *agentbridge.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.byCID[cid]
	if st == nil {
		return
	}
	st.room.LastActivity = ev.TS
	switch ev.Type {
	case agentbridge.EventModeChanged:
		st.room.Mode = ev.Mode
	case agentbridge.EventAgentState:
		st.room.AgentState = ev.State
	case agentbridge.EventSessionEnded:
		st.leaveLocked(ev.SessionID) // ended on another broker, perhaps
	case agentbridge.EventTextDone:
		// Agents say "thinking" when a message reaches them and need not
		// say anything when the reply is done: do not show it forever.
		if st.room.AgentState == agentbridge.StateThinking {
			st.room.AgentState = agentbridge.StateIdle
		}
	}
	if ev.WorkerID != "" {
		st.room.WorkerID = ev.WorkerID
	}
	st.dirty = true
}

// endRoom marks a room ended with reason (its legs close on their own).
func (r *rooms) end(cid, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.byCID[cid]; st != nil {
		st.ended, st.dirty = reason, true
	}
}

// flush writes every changed room; run by the broker every interval.
//
// rooms.mu is held only to read and update the table. The media legs'
// counters (MediaStats takes the leg's own locks), the registry (which
// worker holds a conversation: registry.mu), the observer and the store
// are all called outside it, from snapshots, so rooms.mu is a leaf lock.
// The one order involving it is hub.mu (or nothing) → rooms.mu: the hub
// calls observe, attach and detach are called by legs holding no broker
// lock.
func (r *rooms) flush(ctx context.Context) {
	type mediaLeg struct {
		cid, id string
		media   MediaStatser
		stats   MediaStats
	}
	type write struct {
		cid  string
		room Room
		gone bool
	}
	// 1. The legs that report media, under the lock.
	var legs []mediaLeg
	r.mu.Lock()
	for cid, st := range r.byCID {
		for id, l := range st.legs {
			if l.media != nil {
				legs = append(legs, mediaLeg{cid: cid, id: id, media: l.media})
			}
		}
	}
	r.mu.Unlock()
	// 2. Their counters, outside it.
	stats := make(map[string]map[string]MediaStats)
	for i := range legs {
		l := &legs[i]
		l.stats = l.media.MediaStats()
		if stats[l.cid] == nil {
			stats[l.cid] = make(map[string]MediaStats)
		}
		stats[l.cid][l.id] = l.stats
	}
	// 3. Update the table and snapshot the rooms to write, under it.
	now := time.Now().UTC()
	var writes []write
	var moved mediaMoved
	r.mu.Lock()
	for cid, st := range r.byCID {
		for id, l := range st.legs {
			if !l.until.IsZero() && now.After(l.until) {
				delete(st.legs, id)
				st.dirty = true
				if len(st.legs) == 0 && st.ended == "" {
					st.ended = RoomEndedLegsClosed
				}
			}
		}
		if applyMediaLocked(st, stats[cid], now, &moved) || now.Sub(st.written) > st.refresh {
			st.dirty = true
		}
		if !st.dirty {
			continue
		}
		st.dirty, st.written, st.refresh = false, now, nextRefresh()
		room := st.room
		room.UpdatedAt = now
		room.EndedReason = st.ended
		room.Legs = make([]RoomLeg, 0, len(st.legs))
		for _, l := range st.legs {
			leg := l.leg
			leg.Broker, leg.Seen = r.id, now
			room.Legs = append(room.Legs, leg)
		}
		slices.SortFunc(room.Legs, func(a, b RoomLeg) int { return a.Since.Compare(b.Since) })
		writes = append(writes, write{cid: cid, room: room, gone: st.ended != ""})
		if st.ended != "" {
			delete(r.byCID, cid)
		}
	}
	r.mu.Unlock()
	// 4. Everything else, outside it. Reading the registry never changes
	// who holds a conversation (only the dispatcher's sweep does).
	if moved.in+moved.out+moved.lost > 0 {
		r.b.obs().MediaFrames(moved.in, moved.out, moved.lost)
	}
	if moved.late+moved.dropped+moved.rejected > 0 {
		r.b.obs().MediaDrops(moved.late, moved.dropped, moved.rejected)
	}
	convs := make(map[string]string, len(writes))
	for _, w := range writes {
		convs[w.cid] = w.room.Agent
	}
	owners := r.b.registry.owners(convs)
	// Each write is a few KV round trips: they go out roomWriters at a
	// time, so a burst of new rooms (thousands of visitors arriving
	// together) is stored within the flush rather than timing out in a
	// queue. A room not stored is written again at the next flush.
	sem := make(chan struct{}, roomWriters)
	var wg sync.WaitGroup
	for _, w := range writes {
		if worker, ok := owners[w.cid]; ok {
			w.room.WorkerID = worker
		}
		w.room.Participants = roomParticipants(w.room.Legs, w.room.WorkerID)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if !r.b.writeRoom(ctx, w.room, w.gone) && !w.gone {
				r.redirty(w.cid)
			}
		})
	}
	wg.Wait()
}

// redirty has a room written again at the next flush.
func (r *rooms) redirty(cid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.byCID[cid]; st != nil {
		st.dirty = true
	}
}

// release takes this broker's legs out of every room record at once, for a
// graceful stop: Close runs it once the flush loop has stopped and while
// NATS is still connected. Other brokers' legs stay (compare-and-set, as
// flush writes); a room left without legs is deleted and announced as
// ended. A broker that crashes never gets here: its legs go when they are
// older than roomStale (writeRoom drops them, Rooms deletes the record).
func (r *rooms) release(ctx context.Context) {
	now := time.Now().UTC()
	var writes []Room
	r.mu.Lock()
	for cid, st := range r.byCID {
		room := st.room
		room.UpdatedAt, room.Legs = now, nil
		room.EndedReason = st.ended
		if room.EndedReason == "" {
			room.EndedReason = RoomEndedBrokerStopped
		}
		writes = append(writes, room)
		delete(r.byCID, cid)
	}
	r.mu.Unlock()
	for _, room := range writes {
		if ctx.Err() != nil {
			r.b.log.Warn("rooms left to expire: stopping took too long", "rooms", len(writes))
			return
		}
		r.b.writeRoom(ctx, room, true)
	}
}

// mediaMoved sums the frames voice legs moved since the last flush.
type mediaMoved struct{ in, out, lost, late, dropped, rejected uint64 }

// applyMediaLocked stores fresh media counters (stats, by leg id, read
// outside the lock) in the room's voice legs, adds what they moved to
// total, and reports whether they changed. A leg that left since they
// were read is skipped; one that joined since keeps its counters until
// the next flush.
func applyMediaLocked(st *roomState, stats map[string]MediaStats, now time.Time, total *mediaMoved) bool {
	changed := false
	secs := now.Sub(st.prevAt).Seconds()
	for id, m := range stats {
		l := st.legs[id]
		if l == nil {
			continue
		}
		p, seen := st.prev[id]
		if seen && secs > 0 {
			m.InFPS = float64(m.FramesIn-p.FramesIn) / secs
			m.OutFPS = float64(m.FramesOut-p.FramesOut) / secs
		}
		if m.FramesIn >= p.FramesIn && m.FramesOut >= p.FramesOut && m.Lost >= p.Lost {
			total.in += m.FramesIn - p.FramesIn
			total.out += m.FramesOut - p.FramesOut
			total.lost += m.Lost - p.Lost
		}
		if m.Late >= p.Late && m.Dropped >= p.Dropped && m.Rejected >= p.Rejected {
			total.late += m.Late - p.Late
			total.dropped += m.Dropped - p.Dropped
			total.rejected += m.Rejected - p.Rejected
		}
		if total := m.FramesIn + m.Lost; total > 0 {
			m.LossPct = 100 * float64(m.Lost) / float64(total)
		}
		if old := l.leg.Media; old == nil || *old != m {
			changed = true
		}
		l.leg.Media = &m
		st.prev[id] = m
	}
	st.prevAt = now
	return changed
}

// writeRoom merges this broker's view of a room into the shared record
// (compare-and-set on its KV entry): this broker's legs are replaced, the
// fresh legs of other brokers kept, so a chat leg on one broker and a
// voice leg on another show as one room. A room whose last leg left is
// deleted. The merged record is announced. gone: this broker has no legs
// left in the room. It reports whether the record is as this broker wants
// it (false: the store failed, to be tried again).
func (b *Broker) writeRoom(ctx context.Context, room Room, gone bool) bool {
	me := b.rooms.id
	now := time.Now().UTC()
	for attempt := 0; attempt < 10; attempt++ {
		var cur Room
		rev := uint64(0)
		e, err := b.roomsKV.Get(ctx, room.ConversationID)
		switch {
		case err == nil:
			rev = e.Revision()
			_ = json.Unmarshal(e.Value(), &cur)
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			b.log.Warn("room state not stored", "conversation_id", room.ConversationID, "err", err)
			return false
		}
		merged := room
		merged.Legs = nil
		if !gone {
			merged.Legs = append(merged.Legs, room.Legs...)
		}
		for _, l := range cur.Legs {
			if l.Broker != me && now.Sub(l.Seen) < roomStale {
				merged.Legs = append(merged.Legs, l)
			}
		}
		if !cur.StartedAt.IsZero() && cur.StartedAt.Before(merged.StartedAt) {
			merged.StartedAt = cur.StartedAt
		}
		slices.SortFunc(merged.Legs, func(a, b RoomLeg) int { return a.Since.Compare(b.Since) })
		merged.Participants = roomParticipants(merged.Legs, merged.WorkerID)
		merged.EndedReason = ""
		if len(merged.Legs) == 0 {
			merged.EndedReason = room.EndedReason
			if merged.EndedReason == "" {
				merged.EndedReason = RoomEndedLegsClosed
			}
		}
		if rev == 0 && len(merged.Legs) > 0 {
			// A room is created only for a conversation that still
			// exists: one deleted by another broker (retention, an
			// operator) while a leg here was closing stays deleted.
			if _, err := b.Conversation(ctx, room.ConversationID); errors.Is(err, ErrUnknownConversation) {
				b.rooms.forget(room.ConversationID)
				return true
			}
		}
		data, _ := json.Marshal(merged)
		switch {
		case len(merged.Legs) == 0 && rev == 0:
			err = nil // nothing stored, nothing to delete
		case len(merged.Legs) == 0:
			err = b.roomsKV.Delete(ctx, room.ConversationID, jetstream.LastRevision(rev))
		case rev == 0:
			_, err = b.roomsKV.Create(ctx, room.ConversationID, data)
		default:
			_, err = b.roomsKV.Update(ctx, room.ConversationID, data, rev)
		}
		if err != nil {
			continue // another broker wrote in between: merge again
		}
		if err := b.nc.Publish(b.subj.Room(room.ConversationID), data); err != nil {
			b.log.Debug("room state not announced", "conversation_id", room.ConversationID, "err", err)
		}
		return true
	}
	b.log.Warn("room state not stored: too much contention", "conversation_id", room.ConversationID)
	return false
}

// roomParticipants lists the visitors of the legs, then the agent.
func roomParticipants(legs []RoomLeg, worker string) []RoomParticipant {
	visitors := map[string]bool{}
	for _, l := range legs {
		visitors[l.SessionID] = true
	}
	out := []RoomParticipant{}
	for _, sid := range slices.Sorted(maps.Keys(visitors)) {
		out = append(out, RoomParticipant{Kind: "visitor", ID: sid})
	}
	if worker != "" {
		out = append(out, RoomParticipant{Kind: "agent", ID: worker})
	}
	return out
}

// roomsLoop flushes room state every interval until the broker closes.
func (b *Broker) roomsLoop() {
	b.every(b.cfg.Ops.RoomUpdateInterval, func() {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		b.rooms.flush(ctx)
	})
}

// LegAttached tells ops a chat leg (a WebSocket, or an HTTP request)
// joined a conversation. HTTP legs expire a minute after their last
// request.
func (b *Broker) LegAttached(s Session, legID, transport string) {
	var until time.Time
	if transport == "http" {
		until = time.Now().Add(httpLegIdle)
	}
	b.rooms.attach(s, RoomLeg{ID: legID, Kind: agentbridge.ModeChat, Transport: transport}, nil, until)
}

// LegDetached tells ops a leg left.
func (b *Broker) LegDetached(cid, legID string) { b.rooms.detach(cid, legID) }

// Rooms lists the live rooms of every broker, from the KV bucket,
// filtered by widget, mode and agent when set.
func (b *Broker) Rooms(ctx context.Context, widget, mode, agent string) ([]Room, error) {
	keys, err := listKeys(ctx, b.roomsKV, ">", "rooms")
	if err != nil {
		return nil, err
	}
	out := []Room{}
	for k := range keys {
		room, err := b.Room(ctx, k)
		if err != nil {
			continue
		}
		if time.Since(room.UpdatedAt) > roomStale {
			// Left behind by a broker that died: no one refreshes it.
			_ = b.roomsKV.Delete(ctx, k)
			continue
		}
		if (widget == "" || room.Widget == widget) && (mode == "" || room.Mode == mode) && (agent == "" || room.Agent == agent) {
			out = append(out, room)
		}
	}
	slices.SortFunc(out, func(a, b Room) int { return a.StartedAt.Compare(b.StartedAt) })
	return out, nil
}

// Room returns one live room.
func (b *Broker) Room(ctx context.Context, cid string) (Room, error) {
	return load[Room](ctx, b.roomsKV, cid, "conv_", ErrUnknownConversation)
}

// EndRoom ends a live conversation's room: the conversation is closed (no
// session resumes it: its resume tokens answer CONVERSATION_CLOSED), its
// voice legs hang up and its visitor sessions end (the WebSockets close
// with CONVERSATION_CLOSED). The conversation and its log stay, readable
// by admins until retention; the visitor starts a new one when they
// choose to.
func (b *Broker) EndRoom(ctx context.Context, cid, reason string) error {
	room, err := b.Room(ctx, cid)
	if err != nil {
		return err
	}
	if reason == "" {
		reason = RoomEndedByOps
	}
	// Closed first: a resume racing the end is refused.
	if _, err := b.updateConversation(ctx, cid, func(c *Conversation) error {
		if c.ClosedAt == nil {
			now := time.Now().UTC()
			c.ClosedAt = &now
		}
		return nil
	}); err != nil {
		return err
	}
	b.rooms.end(cid, reason)
	for _, p := range room.Participants {
		if p.Kind != "visitor" {
			continue
		}
		if v, ok := b.Voice(p.ID); ok {
			v.end(ctx, EndReasonClosed, false)
		}
		// The operator's reason is the room's; the sessions end as closed,
		// which the visitor's widget tells apart from a session's own end.
		if err := b.EndSession(ctx, p.ID, EndReasonClosed); err != nil && !errors.Is(err, ErrUnknownSession) {
			return err
		}
	}
	// Rooms hosted by another broker end when their sessions do; this
	// one's entry goes now.
	room.EndedReason, room.UpdatedAt = reason, time.Now().UTC()
	if err := b.roomsKV.Delete(ctx, cid); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: end room: %w", ErrStore, err)
	}
	data, _ := json.Marshal(room)
	_ = b.nc.Publish(b.subj.Room(cid), data)
	b.log.Info("room ended by operator", "conversation_id", cid, "reason", reason)
	return nil
}

// LocalStats counts what this broker hosts.
type LocalStats struct {
	Sessions            int
	ConversationsByMode map[string]int
}

// LocalStats returns the sessions with a leg here and the live
// conversations here by mode.
func (b *Broker) LocalStats() LocalStats {
	out := LocalStats{ConversationsByMode: map[string]int{}}
	sessions := map[string]bool{}
	b.rooms.mu.Lock()
	defer b.rooms.mu.Unlock()
	for _, st := range b.rooms.byCID {
		if st.ended != "" {
			continue
		}
		out.ConversationsByMode[st.room.Mode]++
		for _, l := range st.legs {
			sessions[l.leg.SessionID] = true
		}
	}
	out.Sessions = len(sessions)
	return out
}

// RoomSubject is the subject room snapshots are announced on; "*" for all.
func (b *Broker) RoomSubject(cid string) string { return b.subj.Room(cid) }

// WatchRooms calls f with every room snapshot any broker announces (f runs
// on one NATS delivery goroutine, in order) until stop is called.
func (b *Broker) WatchRooms(f func(Room)) (stop func(), err error) {
	sub, err := b.nc.Subscribe(b.subj.Room("*"), func(m *nats.Msg) {
		var r Room
		if json.Unmarshal(m.Data, &r) == nil {
			f(r)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%w: watch rooms: %w", ErrStore, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// RoomChanges is a watch of room snapshots for a reader on its own
// goroutine: Updates buffers up to the size asked for, and when the reader
// falls that far behind, what does not fit is dropped and Lost gets a
// signal (the reader lists the rooms again). NATS delivery never blocks.
type RoomChanges struct {
	Updates <-chan Room
	Lost    <-chan struct{}
	Stop    func()
}

// WatchRoomChanges starts a RoomChanges on watch (Broker.WatchRooms, or
// the role that stands for it) with a buffer of size snapshots.
func WatchRoomChanges(watch func(func(Room)) (func(), error), size int) (RoomChanges, error) {
	updates, lost := make(chan Room, size), make(chan struct{}, 1)
	stop, err := watch(func(r Room) {
		select {
		case updates <- r:
		default:
			select {
			case lost <- struct{}{}:
			default:
			}
		}
	})
	return RoomChanges{Updates: updates, Lost: lost, Stop: stop}, err
}
