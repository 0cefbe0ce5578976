package agentbridge

// Sequencer puts a conversation's live events in log order. Live events
// arrive on core NATS: from several brokers they may arrive out of order,
// and a reconnect or a slow consumer may lose some. Each event names the
// seq of the conversation's event before it (PrevSeq), so a reader that
// delivered seq L knows an event is next exactly when its PrevSeq is L.
// Other events are held until the gap before them is filled from the log
// (Fill, with the events read from Gap()). The zero value starts at the
// conversation's beginning; it is not safe for concurrent use.
type Sequencer struct {
	last uint64
	held map[uint64]Event // by PrevSeq
}

// maxHeld bounds the events a Sequencer holds while it waits for a refill.
const maxHeld = 4096

// NewSequencer returns a sequencer that has delivered everything up to
// last.
func NewSequencer(last uint64) *Sequencer { return &Sequencer{last: last} }

// Last is the seq of the last event delivered.
func (s *Sequencer) Last() uint64 { return s.last }

// Push offers one live event and returns the events now deliverable, in
// order. Events at or before Last are duplicates and dropped.
func (s *Sequencer) Push(ev Event) []Event {
	if ev.Seq <= s.last {
		return nil
	}
	if ev.PrevSeq != s.last {
		if s.held == nil {
			s.held = make(map[uint64]Event)
		}
		if len(s.held) < maxHeld {
			s.held[ev.PrevSeq] = ev
		}
		return nil
	}
	out := []Event{ev}
	s.last = ev.Seq
	return s.drain(out)
}

// Gap reports whether events are held behind a missing one, and the seq to
// read the log from to fill it.
func (s *Sequencer) Gap() (from uint64, ok bool) {
	return s.last + 1, len(s.held) > 0
}

// Fill takes events read from the log from Gap()'s seq on (contiguous, in
// order) and returns the ones now deliverable, in order, followed by the
// held events the read made next.
func (s *Sequencer) Fill(events []Event) []Event {
	var out []Event
	for _, ev := range events {
		if ev.Seq <= s.last {
			continue
		}
		out = append(out, ev)
		s.last = ev.Seq
	}
	for prev, ev := range s.held {
		if ev.Seq <= s.last {
			delete(s.held, prev)
		}
	}
	return s.drain(out)
}

// Reset forgets held events and continues after last (for example after a
// read that covered everything up to the log's end).
func (s *Sequencer) Reset(last uint64) {
	s.last = max(s.last, last)
	for prev, ev := range s.held {
		if ev.Seq <= s.last {
			delete(s.held, prev)
		}
	}
}

func (s *Sequencer) drain(out []Event) []Event {
	for len(s.held) > 0 {
		ev, ok := s.held[s.last]
		if !ok {
			break
		}
		delete(s.held, s.last)
		out = append(out, ev)
		s.last = ev.Seq
	}
	return out
}
