package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// limitsHarness is a broker with widgets of two tenants and one echo
// worker of small capacity, watching the status notices.
type limitsHarness struct {
	nopObserver
	t  *testing.T
	b  *Broker
	w  *agentbridge.Worker
	mu sync.Mutex
	// limited: conversation id → the last notice said it waits for a
	// conversation limit.
	limited map[string]bool
	limits  []string // the limits the broker reported holding conversations back
}

// ConversationLimited records which limit held a dispatch back.
func (h *limitsHarness) ConversationLimited(limit string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.limits = append(h.limits, limit)
}

// lastLimit returns the limit last reported.
func (h *limitsHarness) lastLimit() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.limits) == 0 {
		return ""
	}
	return h.limits[len(h.limits)-1]
}

func startLimitsHarness(t *testing.T, capacity int, limits configs.ConversationLimits, widgets ...configs.WidgetConfig) *limitsHarness {
	t.Helper()
	b := startBrokerWith(t, nil, func(cfg *configs.Config) {
		fastDispatch(cfg)
		cfg.Limits.Conversations = limits
		for _, w := range widgets {
			w.Agent, w.AllowDevOrigins = "echo", true
			w.Normalize()
			cfg.Widgets = append(cfg.Widgets, w)
		}
	})
	h := &limitsHarness{t: t, b: b, limited: map[string]bool{}}
	b.SetObserver(h)
	nc := connectAs(t, b, RoleBroker)
	sub, err := nc.Subscribe(b.subj.Status("*"), func(m *nats.Msg) {
		var n Notice
		if json.Unmarshal(m.Data, &n) != nil {
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		switch n.Kind {
		case NoticeAgentUnavailable:
			h.limited[n.ConversationID] = n.Code == NoticeCodeConversationLimit
		case NoticeAgentAssigned:
			delete(h.limited, n.ConversationID)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	h.w, _ = startEchoWorker(t, b, agentbridge.Options{MaxConversations: capacity, HeartbeatInterval: 100 * time.Millisecond})
	agenttest.Poll(t, 10*time.Second, "the worker to heartbeat", func() bool { return b.AliveWorkers("echo") == 1 })
	return h
}

// session starts a session on widget.
func (h *limitsHarness) session(widget string) Session {
	h.t.Helper()
	res, err := h.b.StartSession(h.t.Context(), StartRequest{Widget: widget, Agent: "echo", Origin: "http://localhost"})
	if err != nil {
		h.t.Fatal(err)
	}
	return res.Session
}

// ask posts text in s and returns its reply, or the error AwaitReply
// gives within wait.
func (h *limitsHarness) ask(s Session, text string, wait time.Duration) (Message, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), wait)
	defer cancel()
	sub, err := h.b.Subscribe(ctx, s.ConversationID)
	if err != nil {
		h.t.Fatal(err)
	}
	defer sub.Close()
	p, err := h.b.PostMessage(ctx, s, text, "", "")
	if err != nil {
		h.t.Fatal(err)
	}
	return h.b.AwaitReply(ctx, sub, p)
}

// post posts text in s without waiting.
func (h *limitsHarness) post(s Session, text string) Posted {
	h.t.Helper()
	p, err := h.b.PostMessage(h.t.Context(), s, text, "", "")
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// held counts the given conversations the worker holds.
func (h *limitsHarness) held(convs map[string]bool) int {
	n := 0
	for _, cid := range h.w.Conversations() {
		if convs[cid] {
			n++
		}
	}
	return n
}

// waiting counts the given conversations last noticed as waiting for a
// conversation limit.
func (h *limitsHarness) waiting(convs map[string]bool) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for cid, lim := range h.limited {
		if lim && convs[cid] {
			n++
		}
	}
	return n
}

// TestConversationFloodLeavesOtherTenantsAlone is the review's attack: one
// widget's visitors flood the broker with conversations. Sessions that
// send nothing take no worker slot; those that write take at most their
// widget's fair share once capacity runs short, the rest wait (told
// CONVERSATION_LIMIT, their messages kept); another tenant's visitors are
// answered throughout, and the waiting conversations are answered once
// slots free up.
func TestConversationFloodLeavesOtherTenantsAlone(t *testing.T) {
	const capacity = 20
	h := startLimitsHarness(t, capacity, configs.ConversationLimits{FairShareReserve: 0.2},
		configs.WidgetConfig{ID: "wdg_attacked", Key: "pk_attacked", Tenant: "tenant_a"},
		configs.WidgetConfig{ID: "wdg_bystander", Key: "pk_bystander", Tenant: "tenant_b"})

	// 1. Sessions that never write hold nothing.
	idle := map[string]bool{}
	for range 3 * capacity {
		idle[h.session("wdg_attacked").ConversationID] = true
	}
	first := h.session("wdg_bystander")
	if m, err := h.ask(first, "hello", 20*time.Second); err != nil || m.Body != "echo: hello" {
		t.Fatalf("tenant B's first visitor: %+v, %v", m, err)
	}
	if n := h.held(idle); n != 0 {
		t.Fatalf("the worker holds %d conversations of sessions that never wrote", n)
	}

	// 2. The flood: twice the agent's capacity of conversations that write.
	flood := map[string]bool{}
	var flooders []Session
	for i := range 2 * capacity {
		s := h.session("wdg_attacked")
		flood[s.ConversationID] = true
		flooders = append(flooders, s)
		h.post(s, fmt.Sprintf("flood %d", i))
	}
	// With B holding one slot, A's fair share is 10; past it, A takes
	// slots only while more than the reserve (4) are free: 15 in all.
	const floodHeld = capacity - 1 - 4
	agenttest.Poll(t, 30*time.Second, "the flood to take what it may and wait for the rest", func() bool {
		return h.held(flood) == floodHeld && h.waiting(flood) == 2*capacity-floodHeld
	})
	var waiter Session
	for _, s := range flooders {
		if !h.holds(s.ConversationID) {
			waiter = s
			break
		}
	}
	if p := h.post(waiter, "still waiting?"); !errors.Is(p.Unavailable, ErrConversationLimit) {
		t.Fatalf("a waiting flooder's next message: unavailable = %v, want ErrConversationLimit", p.Unavailable)
	}

	// 3. Tenant B's visitors are answered during the flood.
	var bystanders []Session
	for i := range 3 {
		s := h.session("wdg_bystander")
		bystanders = append(bystanders, s)
		text := fmt.Sprintf("question %d", i)
		if m, err := h.ask(s, text, 20*time.Second); err != nil || m.Body != "echo: "+text {
			t.Fatalf("tenant B's visitor %d during the flood: %+v, %v", i, m, err)
		}
	}
	if n := h.held(flood); n != floodHeld {
		t.Fatalf("the flood holds %d conversations after B's visitors came, want %d", n, floodHeld)
	}

	// 4. B's visitors leave: their slots go to the waiting conversations,
	// whose messages are answered without being sent again.
	for _, s := range append(bystanders, first) {
		if err := h.b.EndSession(t.Context(), s.ID, "visitor_ended"); err != nil {
			t.Fatal(err)
		}
	}
	agenttest.Poll(t, 30*time.Second, "the freed slots to go to the flood", func() bool {
		return h.held(flood) == capacity
	})
	answered := func(cid string) bool {
		msgs, err := h.b.History(t.Context(), cid, 0)
		return err == nil && len(msgs) > 0 && msgs[len(msgs)-1].Role == RoleAgent
	}
	n := 0
	for _, s := range flooders {
		if h.holds(s.ConversationID) {
			n++
			agenttest.Poll(t, 20*time.Second, "each flooder that got a slot to be answered", func() bool { return answered(s.ConversationID) })
		}
	}
	if n != capacity {
		t.Fatalf("%d flooders hold a slot, want %d", n, capacity)
	}
	if !h.holds(waiter.ConversationID) && answered(waiter.ConversationID) {
		t.Fatal("a waiting conversation was answered without a worker")
	}
}

// holds reports whether the worker holds cid.
func (h *limitsHarness) holds(cid string) bool { return h.held(map[string]bool{cid: true}) == 1 }

// TestConversationCaps: a widget's max_conversations and the tenant cap
// hold back that widget or tenant only, with the limit named.
func TestConversationCaps(t *testing.T) {
	h := startLimitsHarness(t, 100, configs.ConversationLimits{PerWidget: 5, PerTenant: 6, FairShareReserve: 0.2},
		configs.WidgetConfig{ID: "wdg_small", Key: "pk_small", Tenant: "tenant_a", MaxConversations: 3},
		configs.WidgetConfig{ID: "wdg_other", Key: "pk_other", Tenant: "tenant_a"},
		configs.WidgetConfig{ID: "wdg_b", Key: "pk_b", Tenant: "tenant_b"})

	answered := func(widget string, n int) []Session {
		t.Helper()
		var out []Session
		for i := range n {
			s := h.session(widget)
			if m, err := h.ask(s, "hi", 20*time.Second); err != nil || m.Body != "echo: hi" {
				t.Fatalf("%s visitor %d: %+v, %v", widget, i, m, err)
			}
			out = append(out, s)
		}
		return out
	}
	refused := func(widget, limit string) {
		t.Helper()
		s := h.session(widget)
		_, err := h.ask(s, "hi", 20*time.Second)
		if !errors.Is(err, ErrConversationLimit) {
			t.Fatalf("%s over its %s cap: %v, want ErrConversationLimit", widget, limit, err)
		}
		// The notice says why; the next message's post does too, naming
		// the limit.
		p := h.post(s, "hello?")
		if !errors.Is(p.Unavailable, ErrConversationLimit) {
			t.Fatalf("%s: next post unavailable = %v", widget, p.Unavailable)
		}
		if got := h.lastLimit(); got != limit {
			t.Fatalf("%s held back by the %q limit, want %q", widget, got, limit)
		}
	}
	answered("wdg_small", 3)
	refused("wdg_small", "widget") // its own max_conversations (3), not per_widget (5)
	answered("wdg_other", 3)
	refused("wdg_other", "tenant") // tenant_a holds 6
	answered("wdg_b", 5)           // another tenant: its widget has only per_widget's cap
	refused("wdg_b", "widget")
}
