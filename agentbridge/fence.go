package agentbridge

// Fence tracks the dispatch epochs of a conversation's log: agent events
// written under an epoch older than the latest agent_assigned come from a
// worker that lost the conversation (it was declared dead and the
// conversation went to another worker) and are ignored by every reader:
// the broker's transcript and live legs, and the SDK's replay. The zero
// value is ready to use; feed it the log in order.
type Fence struct{ epoch uint64 }

// Admit reports whether ev counts, given the events before it, and
// advances the fence on agent_assigned.
func (f *Fence) Admit(ev *Event) bool {
	switch {
	case ev.Type == EventAgentAssigned:
		f.epoch = max(f.epoch, ev.Epoch)
		return true
	case ev.IsInbound(), ev.Epoch == 0:
		return true
	}
	return ev.Epoch >= f.epoch
}

// Epoch is the latest assignment epoch seen.
func (f *Fence) Epoch() uint64 { return f.epoch }
