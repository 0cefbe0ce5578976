package broker

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// admission decides whether a conversation may take a worker slot, from
// what the conversations live workers hold belong to: its widget's cap
// (limits.conversations.per_widget or the widget's max_conversations),
// its tenant's (per_tenant), and its widget's fair share of the agent's
// capacity (fair_share_reserve). It is asked before each dispatch request,
// so a widget flooding the broker with conversations takes at most its
// caps and, once capacity runs short, its fair share, while the other
// widgets of the agent keep getting theirs.
//
// Holdings come from the registry (every broker's dispatches, through the
// workers' heartbeats). Which widget a conversation belongs to is learned
// when this broker reads the conversation to dispatch it, and looked up
// in the background for conversations other brokers dispatched; until it
// is known, such a conversation counts against its agent's capacity only.
// Dispatches in flight from this broker count as held, so concurrent
// dispatches cannot all pass one free slot; those of other brokers are
// seen from their first heartbeat, so across brokers a cap can be passed
// by the dispatches in flight at once.
//
// Lock order: admission.mu, then registry.mu (holdings is called before
// mu is taken, so in practice neither is held with the other).
type admission struct {
	b *Broker

	mu      sync.Mutex
	owners  map[string]convOwner // conversation id → its widget, tenant and agent
	pending map[string]convOwner // conversation id → a dispatch of it is in flight here
	looking bool                 // a lookup of unknown holdings runs
	warned  map[string]time.Time // widget/limit → when its refusal was last logged
}

// convOwner is what a held conversation counts against.
type convOwner struct{ widget, tenant, agent string }

// Which limit refused a conversation (the error's text and the metric's
// label).
const (
	limitWidget    = "widget"
	limitTenant    = "tenant"
	limitFairShare = "fair_share"
)

// limitWarnEvery spaces the refusal log lines of one widget and limit.
const limitWarnEvery = time.Minute

// maxOwnerLookups bounds one background lookup of unknown holdings.
const maxOwnerLookups = 512

func newAdmission(b *Broker) *admission {
	return &admission{b: b, owners: make(map[string]convOwner), pending: make(map[string]convOwner),
		warned: make(map[string]time.Time)}
}

// admit reserves a worker slot for conv, or returns an error wrapping
// ErrConversationLimit that names the limit. done must be called once the
// dispatch attempt is over (the registry has the assignment, or there is
// none).
func (a *admission) admit(conv Conversation) (done func(), err error) {
	lim := a.b.cfg.Limits.Conversations
	me := convOwner{widget: conv.Widget, agent: conv.Agent}
	widgetCap := lim.PerWidget
	if w, err := a.b.WidgetByID(conv.Widget); err == nil {
		me.tenant = w.Tenant
		if w.MaxConversations > 0 {
			widgetCap = w.MaxConversations
		}
	}
	held, capacity := a.b.registry.holdings()

	a.mu.Lock()
	defer a.mu.Unlock()
	a.owners[conv.ID] = me
	if _, ok := held[conv.ID]; ok {
		// Held already (the registry learned it since the caller looked):
		// this dispatch takes no new slot.
		return func() {}, nil
	}
	for cid, o := range a.pending {
		if _, ok := held[cid]; !ok {
			held[cid] = o.agent
		}
	}
	var nWidget, nTenant, nAgent int
	perWidget := make(map[string]int) // widget → its conversations held by the agent
	var unknown []string
	for cid, agent := range held {
		if agent == me.agent {
			nAgent++
		}
		o, ok := a.owners[cid]
		if !ok {
			unknown = append(unknown, cid)
			continue
		}
		if agent == me.agent && o.widget != "" {
			perWidget[o.widget]++
		}
		if o.widget == me.widget {
			nWidget++
		}
		if me.tenant != "" && o.tenant == me.tenant {
			nTenant++
		}
	}
	a.lookUpLocked(unknown)
	a.pruneLocked(held)

	refuse := func(limit, format string, args ...any) (func(), error) {
		err := fmt.Errorf("%w (%s): "+format, append([]any{ErrConversationLimit, limit}, args...)...)
		a.b.obs().ConversationLimited(limit)
		if now := time.Now(); now.Sub(a.warned[me.widget+"/"+limit]) >= limitWarnEvery {
			a.warned[me.widget+"/"+limit] = now
			a.b.log.Warn("conversation limit reached: the widget's new conversations wait (logged once a minute per widget and limit)",
				"widget", me.widget, "tenant", me.tenant, "limit", limit, "err", err)
		}
		return nil, err
	}
	switch {
	case widgetCap > 0 && nWidget >= widgetCap:
		return refuse(limitWidget, "widget %s holds %d live conversations, its cap", me.widget, nWidget)
	case lim.PerTenant > 0 && me.tenant != "" && nTenant >= lim.PerTenant:
		return refuse(limitTenant, "tenant %s holds %d live conversations, its cap", me.tenant, nTenant)
	}
	if c, ok := capacity[me.agent]; ok && lim.FairShareReserve > 0 {
		widgets := len(perWidget)
		if perWidget[me.widget] == 0 {
			widgets++
		}
		share := (c + widgets - 1) / widgets
		reserve := int(float64(c)*lim.FairShareReserve + 0.5)
		if perWidget[me.widget] >= share && c-nAgent <= reserve {
			return refuse(limitFairShare, "widget %s holds %d of agent %s's %d slots (its fair share is %d, and %d are left for the others)",
				me.widget, perWidget[me.widget], me.agent, c, share, max(c-nAgent, 0))
		}
	}
	a.pending[conv.ID] = me
	return func() {
		a.mu.Lock()
		delete(a.pending, conv.ID)
		a.mu.Unlock()
	}, nil
}

// lookUpLocked learns, in the background, whose the given holdings are
// (conversations other brokers dispatched). One lookup runs at a time.
func (a *admission) lookUpLocked(cids []string) {
	if len(cids) == 0 || a.looking {
		return
	}
	if len(cids) > maxOwnerLookups {
		cids = cids[:maxOwnerLookups]
	}
	b := a.b
	if b.goroutine(func() { a.lookUp(cids) }) {
		a.looking = true
	}
}

func (a *admission) lookUp(cids []string) {
	b := a.b
	defer func() {
		a.mu.Lock()
		a.looking = false
		a.mu.Unlock()
	}()
	for _, cid := range cids {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		conv, err := b.Conversation(ctx, cid)
		cancel()
		if b.ctx.Err() != nil {
			return
		}
		// A conversation deleted meanwhile, or none at all (a worker's
		// claim), is known as no widget's: it counts against its agent's
		// capacity only, without a lookup each time.
		var o convOwner
		if err == nil {
			o = convOwner{widget: conv.Widget, agent: conv.Agent}
			if w, err := b.WidgetByID(conv.Widget); err == nil {
				o.tenant = w.Tenant
			}
		}
		a.mu.Lock()
		a.owners[cid] = o
		a.mu.Unlock()
	}
}

// pruneLocked forgets the owners of conversations no longer held once
// they outnumber the holdings.
func (a *admission) pruneLocked(held map[string]string) {
	if len(a.owners) <= 2*len(held)+1024 {
		return
	}
	for k, t := range a.warned {
		if time.Since(t) >= limitWarnEvery {
			delete(a.warned, k)
		}
	}
	for cid := range a.owners {
		_, h := held[cid]
		_, p := a.pending[cid]
		if !h && !p {
			delete(a.owners, cid)
		}
	}
}
