package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Retention and privacy deletion.
//
// A conversation is deleted whole: the events of its log (a stream purge of
// <prefix>.conv.<cid>.>), its conversation, session, resume-token and room
// records, its leads and its uploads. Two callers delete: an operator (the
// admin API, for a privacy request) and the retention sweeper, which each
// broker runs every retention.sweep_interval and which deletes the
// conversations whose last activity (the newest event of their log) is older
// than their widget's conversation_max_age.
//
// Several brokers may sweep, or delete, the same conversation at once. The
// first step is a compare-and-set of the conversation record that marks it
// deleted (DeletedAt): only one broker wins it, and from then on the
// conversation is unknown to everything else (resume, dispatch, listings).
// Every later step is idempotent, so a broker that dies half-way leaves a
// marked record that the next sweep finishes.
//
// Active conversations are never swept: a conversation with an active
// session, or a room with a live leg, is skipped, and the mark is a
// compare-and-set against the record as read, so a session resumed meanwhile
// makes the mark fail.

// Session end reasons written by the broker itself.
const (
	// EndReasonIdle: no leg and no event for sessions.idle_timeout.
	EndReasonIdle = "idle"
	// EndReasonExpired: the session passed its TTL.
	EndReasonExpired = "expired"
	// EndReasonDeleted: an operator deleted the conversation.
	EndReasonDeleted = "conversation_deleted"
	// EndReasonClosed: an operator closed the conversation (EndRoom).
	EndReasonClosed = "conversation_closed"
)

// purgeTimeout bounds one stream purge. A purge waits for the stream's
// lock, which is busy while thousands of consumers come and go (measured:
// over 5 s, the client's default, right after 1,000 conversations ended).
const purgeTimeout = 30 * time.Second

// deleteResume is how long a marked conversation may stay marked before a
// sweep takes over its deletion (the deleting broker died). The broker that
// marked it finishes it at its next sweep (pendingDeletions).
const deleteResume = time.Minute

// pendingDeletions are the conversations a broker marked deleted and whose
// purge has not completed (a store error part-way): the broker's next
// sweep finishes them at once, rather than after deleteResume, which is
// for a broker that died.
type pendingDeletions struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func (p *pendingDeletions) add(cid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ids == nil {
		p.ids = make(map[string]struct{})
	}
	p.ids[cid] = struct{}{}
}

func (p *pendingDeletions) done(cid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.ids, cid)
}

// keepOnly forgets the pending conversations whose record is gone (a
// purge that failed after its last step, or another broker finished it).
func (p *pendingDeletions) keepOnly(records []kvEntry[Conversation]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ids) == 0 {
		return
	}
	present := make(map[string]bool, len(records))
	for _, e := range records {
		present[e.v.ID] = true
	}
	for cid := range p.ids {
		if !present[cid] {
			delete(p.ids, cid)
		}
	}
}

func (p *pendingDeletions) has(cid string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.ids[cid]
	return ok
}

// sessionSweepLoop ends idle and expired sessions until the broker closes.
func (b *Broker) sessionSweepLoop() {
	b.sweepLoop("session", b.cfg.Sessions.SweepInterval, max(b.cfg.Sessions.SweepInterval, 30*time.Second), b.SweepSessions)
}

// retentionSweepLoop deletes expired conversations until the broker closes.
func (b *Broker) retentionSweepLoop() {
	b.sweepLoop("retention", b.cfg.Retention.SweepInterval, max(b.cfg.Retention.SweepInterval, 5*time.Minute), b.SweepConversations)
}

// sweepLoop runs sweep every interval, each run bounded by budget, until
// the broker closes.
func (b *Broker) sweepLoop(name string, interval, budget time.Duration, sweep func(context.Context) (int, error)) {
	b.every(interval, func() {
		ctx, cancel := context.WithTimeout(b.ctx, budget)
		defer cancel()
		n, err := sweep(ctx)
		if err != nil && b.ctx.Err() == nil {
			b.log.Warn(name+" sweep failed", "err", err)
		}
		b.obs().Swept(name, n, err != nil && b.ctx.Err() == nil)
	})
}

// kvEntry is one decoded record of a bucket scan.
type kvEntry[T any] struct {
	key     string
	rev     uint64
	written time.Time
	v       T
}

// scan returns the current records of kv under keys (a KV filter such as
// ">"), decoded as T; records that do not decode are skipped. One consumer,
// not one request per key.
func scan[T any](ctx context.Context, kv jetstream.KeyValue, keys string) ([]kvEntry[T], error) {
	w, err := kv.Watch(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%w: scan %s: %w", ErrStore, kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	var out []kvEntry[T]
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: scan %s: %w", ErrStore, kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("%w: scan %s: watcher closed", ErrStore, kv.Bucket())
			}
			if e == nil {
				return out, nil // caught up
			}
			var v T
			if err := decodeRecord(e.Value(), &v); err != nil {
				continue
			}
			out = append(out, kvEntry[T]{key: e.Key(), rev: e.Revision(), written: e.Created(), v: v})
		}
	}
}

// decodeRecord decodes JSON into v, or a raw string into a *string.
func decodeRecord(data []byte, v any) error {
	if s, ok := v.(*string); ok {
		*s = string(data)
		return nil
	}
	return json.Unmarshal(data, v)
}

// SweepSessions ends every session past its TTL (reason "expired") and every
// session without a leg or an event for sessions.idle_timeout (reason
// "idle"), writing session_ended once per session even when several brokers
// sweep at once. It returns how many sessions this broker ended.
func (b *Broker) SweepSessions(ctx context.Context) (int, error) {
	if !b.ready.Load() {
		return 0, ErrNotReady
	}
	entries, err := scan[Session](ctx, b.sessions, ">")
	if err != nil {
		return 0, err
	}
	now := time.Now().UTC()
	idle := b.cfg.Sessions.IdleTimeout
	rooms := map[string]*Room{}         // cid → room (nil: none)
	lastEvent := map[string]time.Time{} // cid → newest event
	ended := 0
	for _, e := range entries {
		s := e.v
		if s.EndedAt != nil {
			continue
		}
		reason := ""
		switch {
		case now.After(s.ExpiresAt):
			reason = EndReasonExpired
		case now.Sub(s.CreatedAt) < idle:
			continue
		default:
			if b.sessionHasLeg(ctx, s, rooms, now) {
				continue
			}
			last, ok := lastEvent[s.ConversationID]
			if !ok {
				var err error
				if last, err = b.lastEventTime(ctx, s.ConversationID); err != nil {
					// Unknown is not idle: never end a live session on a
					// store error.
					b.log.Warn("session sweep: cannot read the conversation's last event", "conversation_id", s.ConversationID, "err", err)
					continue
				}
				lastEvent[s.ConversationID] = last
			}
			if now.Sub(last) < idle {
				continue
			}
			reason = EndReasonIdle
		}
		if v, ok := b.Voice(s.ID); ok {
			v.end(ctx, reason, false)
		}
		won, err := b.endSession(ctx, s.ID, reason)
		if err != nil && !errors.Is(err, ErrUnknownSession) {
			return ended, err
		}
		if won {
			ended++
		}
	}
	return ended, nil
}

// sessionHasLeg reports whether a session has a transport attached on any
// broker: here, or in the shared room record, refreshed by its broker.
func (b *Broker) sessionHasLeg(ctx context.Context, s Session, rooms map[string]*Room, now time.Time) bool {
	b.rooms.mu.Lock()
	if st := b.rooms.byCID[s.ConversationID]; st != nil {
		for _, l := range st.legs {
			if l.leg.SessionID == s.ID && (l.until.IsZero() || now.Before(l.until)) {
				b.rooms.mu.Unlock()
				return true
			}
		}
	}
	b.rooms.mu.Unlock()
	room, seen := rooms[s.ConversationID]
	if !seen {
		if r, err := b.Room(ctx, s.ConversationID); err == nil {
			room = &r
		}
		rooms[s.ConversationID] = room
	}
	if room == nil {
		return false
	}
	for _, l := range room.Legs {
		if l.SessionID == s.ID && now.Sub(l.Seen) < roomStale {
			return true
		}
	}
	return false
}

// lastEventTime returns when the newest event of a conversation's log was
// stored; zero when the log has none.
func (b *Broker) lastEventTime(ctx context.Context, cid string) (time.Time, error) {
	_, at, err := b.lastStored(ctx, cid)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: last event of %s: %w", ErrStore, cid, err)
	}
	return at, nil
}

// maxAge is how long after its last activity a conversation of widget is
// kept.
func (b *Broker) maxAge(widget string) time.Duration {
	if w, err := b.WidgetByID(widget); err == nil {
		if d, ok := w.MaxAge(); ok {
			return d
		}
	}
	return b.cfg.Retention.ConversationMaxAge
}

// SweepConversations deletes the conversations whose last activity is older
// than their widget's conversation_max_age and finishes deletions a broker
// left half-done. It returns how many conversations this broker deleted.
func (b *Broker) SweepConversations(ctx context.Context) (int, error) {
	if !b.ready.Load() {
		return 0, ErrNotReady
	}
	entries, err := scan[Conversation](ctx, b.conversations, ">")
	if err != nil {
		return 0, err
	}
	now := time.Now().UTC()
	b.deleting.keepOnly(entries)
	var expired []kvEntry[Conversation]
	for _, e := range entries {
		c := e.v
		if c.DeletedAt != nil {
			if now.Sub(*c.DeletedAt) > deleteResume || b.deleting.has(c.ID) {
				expired = append(expired, e)
			}
			continue
		}
		age := b.maxAge(c.Widget)
		// The record is rewritten at every session start and dispatch: a
		// recent write means recent activity, without reading the log.
		if now.Sub(e.written) < age {
			continue
		}
		last, err := b.lastEventTime(ctx, c.ID)
		if err != nil {
			return 0, err
		}
		last = latest(last, e.written, c.CreatedAt, c.AssignedAt)
		if now.Sub(last) < age {
			continue
		}
		// A session still counted active may be live (a leg open, a
		// visitor about to write), unless it is older than any session can
		// be; the session sweeper ends idle ones first.
		if c.ActiveSessions > 0 && now.Sub(last) < b.cfg.Sessions.TTL+b.cfg.Sessions.RecordGrace {
			continue
		}
		expired = append(expired, e)
	}
	if len(expired) == 0 {
		return 0, nil
	}
	want := make(map[string]bool, len(expired))
	for _, e := range expired {
		want[e.v.ID] = true
	}
	idx, err := b.indexConversations(ctx, want)
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, e := range expired {
		c := e.v
		if c.DeletedAt == nil {
			if err := b.markDeleted(ctx, c, e.rev); err != nil {
				continue // changed since read (resumed?) or gone: not now
			}
		}
		if err := b.purge(ctx, c, idx); err != nil {
			return deleted, err
		}
		deleted++
		b.log.Info("conversation expired and deleted", "conversation_id", c.ID, "widget", c.Widget,
			"max_age", b.maxAge(c.Widget))
	}
	return deleted, nil
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// markDeleted marks conversation c (read at rev) deleted if its record is
// still at rev: the sweep decided on that version.
func (b *Broker) markDeleted(ctx context.Context, c Conversation, rev uint64) error {
	now := time.Now().UTC()
	c.DeletedAt = &now
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("broker: encode %s: %w", c.ID, err)
	}
	_, err = b.conversations.Update(ctx, c.ID, data, rev)
	return err
}

// convIndex lists, per conversation, the keys of its records outside its
// own: sessions, resume tokens (and visitor index entries) and uploads.
type convIndex struct {
	sessions map[string][]Session
	resume   map[string][]string
	uploads  map[string][]string
}

// indexConversations scans the sessions and resume buckets and the uploads
// store once for the conversations in want.
func (b *Broker) indexConversations(ctx context.Context, want map[string]bool) (*convIndex, error) {
	idx := &convIndex{sessions: map[string][]Session{}, resume: map[string][]string{}, uploads: map[string][]string{}}
	sessions, err := scan[Session](ctx, b.sessions, ">")
	if err != nil {
		return nil, err
	}
	for _, e := range sessions {
		if want[e.v.ConversationID] {
			idx.sessions[e.v.ConversationID] = append(idx.sessions[e.v.ConversationID], e.v)
		}
	}
	resume, err := scan[string](ctx, b.resume, ">")
	if err != nil {
		return nil, err
	}
	for _, e := range resume {
		cid := e.v // visitor.<widget>.<hash> → conversation id
		if !strings.HasPrefix(e.key, "visitor.") {
			var rr resumeRecord
			if json.Unmarshal([]byte(e.v), &rr) != nil {
				continue
			}
			cid = rr.ConversationID
		}
		if want[cid] {
			idx.resume[cid] = append(idx.resume[cid], e.key)
		}
	}
	objs, err := b.uploads.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, fmt.Errorf("%w: list uploads: %w", ErrStore, err)
	}
	for _, o := range objs {
		if cid := o.Headers.Get("Parley-Conversation"); want[cid] && !o.Deleted {
			idx.uploads[cid] = append(idx.uploads[cid], o.Name)
		}
	}
	return idx, nil
}

// purgeKV removes every message of the keys matching pattern from a bucket,
// history and markers included: nothing of them stays on disk.
func (b *Broker) purgeKV(ctx context.Context, kv jetstream.KeyValue, pattern string) error {
	st, err := b.js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return fmt.Errorf("%w: purge %s: %w", ErrStore, kv.Bucket(), err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+kv.Bucket()+"."+pattern)); err != nil {
		return fmt.Errorf("%w: purge %s %s: %w", ErrStore, kv.Bucket(), pattern, err)
	}
	return nil
}

// purge runs purgeConversation for a conversation this broker marked
// deleted, and keeps it pending until that succeeds.
func (b *Broker) purge(ctx context.Context, c Conversation, idx *convIndex) error {
	b.deleting.add(c.ID)
	if err := b.purgeConversation(ctx, c, idx); err != nil {
		return err
	}
	b.deleting.done(c.ID)
	return nil
}

// purgeConversation deletes everything of a conversation marked deleted.
// Every step is idempotent. Sessions still active end first, with
// session_ended in the log, so WebSockets close and the agent releases.
func (b *Broker) purgeConversation(ctx context.Context, c Conversation, idx *convIndex) error {
	cid := c.ID
	for _, s := range idx.sessions[cid] {
		if s.EndedAt != nil {
			continue
		}
		if v, ok := b.Voice(s.ID); ok {
			v.end(ctx, EndReasonDeleted, false)
		}
		if _, err := b.endSession(ctx, s.ID, EndReasonDeleted); err != nil && !errors.Is(err, ErrUnknownSession) {
			return err
		}
	}
	b.registry.release(cid, math.MaxUint64) // no dispatch in flight holds it
	b.agents.holders.drop(cid)
	b.rooms.end(cid, EndReasonDeleted)
	// One purge per literal log subject: a wildcard purge
	// (<prefix>.conv.<cid>.>) makes the file store scan every block, ~5×
	// slower on a store of 1,000 conversations.
	purgeLog := func() error {
		for _, subject := range []string{b.subj.InEvent(cid), b.subj.OutEvent(cid)} {
			pctx, cancel := context.WithTimeout(ctx, purgeTimeout)
			err := b.stream.Purge(pctx, jetstream.WithPurgeSubject(subject))
			cancel()
			if err != nil {
				return fmt.Errorf("%w: purge log of %s: %w", ErrStore, cid, err)
			}
		}
		return nil
	}
	if err := purgeLog(); err != nil {
		return err
	}
	if err := b.purgeKV(ctx, b.leads, "l.*."+cid+".>"); err != nil {
		return err
	}
	for _, name := range idx.uploads[cid] {
		if err := b.uploads.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("%w: delete upload %s: %w", ErrStore, name, err)
		}
	}
	for _, key := range idx.resume[cid] {
		if err := b.purgeKV(ctx, b.resume, key); err != nil {
			return err
		}
	}
	if err := b.purgeKV(ctx, b.roomsKV, cid); err != nil {
		return err
	}
	for _, s := range idx.sessions[cid] {
		if err := b.purgeKV(ctx, b.sessions, s.ID); err != nil {
			return err
		}
	}
	// Anything a request that raced the deletion appended goes too.
	if err := purgeLog(); err != nil {
		return err
	}
	// The record goes last: while it is there (marked), a sweep can finish
	// what a dead broker started.
	return b.purgeKV(ctx, b.conversations, cid)
}

// DeleteConversation deletes a conversation and everything of it: its log,
// its conversation, session, resume-token and room records, its leads and
// its uploads. Its active sessions end first (reason
// "conversation_deleted"): their WebSockets close, their tokens stop
// working. A conversation already deleted is ErrUnknownConversation.
func (b *Broker) DeleteConversation(ctx context.Context, cid string) error {
	n, err := b.DeleteConversations(ctx, []string{cid})
	if err == nil && n == 0 {
		return ErrUnknownConversation
	}
	return err
}

// DeleteConversations deletes conversations as DeleteConversation does,
// scanning the sessions, resume tokens and uploads once for all of them.
// Ids of conversations that do not exist are skipped; it returns how many
// were deleted.
func (b *Broker) DeleteConversations(ctx context.Context, cids []string) (int, error) {
	if !b.ready.Load() {
		return 0, ErrNotReady
	}
	var marked []Conversation
	for _, cid := range cids {
		c, err := b.markForDeletion(ctx, cid)
		if errors.Is(err, ErrUnknownConversation) {
			continue
		}
		if err != nil {
			return 0, err
		}
		marked = append(marked, c)
	}
	if len(marked) == 0 {
		return 0, nil
	}
	want := make(map[string]bool, len(marked))
	for _, c := range marked {
		want[c.ID] = true
	}
	idx, err := b.indexConversations(ctx, want)
	if err != nil {
		return 0, err
	}
	for i, c := range marked {
		if err := b.purge(ctx, c, idx); err != nil {
			return i, err
		}
		b.log.Info("conversation deleted", "conversation_id", c.ID, "widget", c.Widget)
	}
	return len(marked), nil
}

// markForDeletion marks a conversation deleted (compare-and-set, retried
// while others write it) and returns it; one already marked is returned
// as it is, to finish its deletion.
func (b *Broker) markForDeletion(ctx context.Context, cid string) (Conversation, error) {
	if !validID(cid, "conv_") {
		return Conversation{}, ErrUnknownConversation
	}
	c, err := update(ctx, b.conversations, cid, func(c *Conversation) error {
		if c.DeletedAt != nil {
			return errNoChange // being deleted (or left half-done): finish it
		}
		now := time.Now().UTC()
		c.DeletedAt = &now
		return nil
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return c, ErrUnknownConversation
	case errors.Is(err, errNoChange):
		return c, nil
	}
	return c, err
}

// VisitorConversations lists the conversations of an identified visitor
// (verified user id sub) on a widget: those whose latest session, or any
// session still stored, carried that identity.
func (b *Broker) VisitorConversations(ctx context.Context, widget, sub string) ([]Conversation, error) {
	if sub == "" {
		return nil, fmt.Errorf("%w: user_id is required", ErrValidation)
	}
	convs, err := scan[Conversation](ctx, b.conversations, ">")
	if err != nil {
		return nil, err
	}
	sessions, err := scan[Session](ctx, b.sessions, ">")
	if err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	for _, e := range sessions {
		if s := e.v; s.Widget == widget && claimSub(s.Visitor) == sub {
			mine[s.ConversationID] = true
		}
	}
	var out []Conversation
	for _, e := range convs {
		c := e.v
		if c.Widget == widget && (mine[c.ID] || claimSub(c.Visitor) == sub) {
			out = append(out, c)
		}
	}
	return out, nil
}

func claimSub(visitor map[string]any) string {
	s, _ := visitor["sub"].(string)
	return s
}

// DeleteVisitor deletes every conversation of an identified visitor on a
// widget (see VisitorConversations) and the visitor's index entry. It
// returns the ids of the conversations deleted; none is
// ErrUnknownVisitor.
func (b *Broker) DeleteVisitor(ctx context.Context, widget, sub string) ([]string, error) {
	if !b.ready.Load() {
		return nil, ErrNotReady
	}
	convs, err := b.VisitorConversations(ctx, widget, sub)
	if err != nil {
		return nil, err
	}
	ids := []string{}
	for _, c := range convs {
		ids = append(ids, c.ID)
	}
	if _, err := b.DeleteConversations(ctx, ids); err != nil {
		return nil, err
	}
	if err := b.purgeKV(ctx, b.resume, visitorKey(widget, sub)); err != nil {
		return ids, err
	}
	if len(ids) == 0 {
		return nil, ErrUnknownVisitor
	}
	b.log.Info("visitor deleted", "widget", widget, "conversations", len(ids))
	return ids, nil
}

// sessionEndedID is the Nats-Msg-Id of a session's session_ended event: a
// retried or concurrent append is stored once.
func sessionEndedID(cid, sid string) string { return cid + "/ended/" + sid }
