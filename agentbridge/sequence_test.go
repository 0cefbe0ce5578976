package agentbridge_test

import (
	"slices"
	"testing"

	"github.com/parley-rtc/parley/agentbridge"
)

// chain builds events with the given seqs, each naming the one before it
// (the first names prev).
func chain(prev uint64, seqs ...uint64) []agentbridge.Event {
	evs := make([]agentbridge.Event, len(seqs))
	for i, s := range seqs {
		evs[i] = agentbridge.Event{Seq: s, PrevSeq: prev}
		prev = s
	}
	return evs
}

func seqsOf(evs []agentbridge.Event) []uint64 {
	out := make([]uint64, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.Seq)
	}
	return out
}

func TestSequencerInOrder(t *testing.T) {
	t.Parallel()
	s := agentbridge.NewSequencer(0)
	// Seqs of one conversation need not be contiguous: the log is shared.
	var got []uint64
	for _, ev := range chain(0, 1, 4, 5, 9) {
		got = append(got, seqsOf(s.Push(ev))...)
		if _, gap := s.Gap(); gap {
			t.Fatalf("gap after %d", ev.Seq)
		}
	}
	if !slices.Equal(got, []uint64{1, 4, 5, 9}) || s.Last() != 9 {
		t.Fatalf("delivered %v, last %d", got, s.Last())
	}
	var zero agentbridge.Sequencer // the zero value starts at the beginning
	if out := zero.Push(agentbridge.Event{Seq: 3}); !slices.Equal(seqsOf(out), []uint64{3}) {
		t.Fatalf("zero value delivered %v", seqsOf(out))
	}
}

func TestSequencerReordered(t *testing.T) {
	t.Parallel()
	s := agentbridge.NewSequencer(10)
	evs := chain(10, 12, 15, 16)
	if out := s.Push(evs[2]); len(out) != 0 {
		t.Fatalf("delivered %v ahead of a gap", seqsOf(out))
	}
	if out := s.Push(evs[1]); len(out) != 0 {
		t.Fatalf("delivered %v ahead of a gap", seqsOf(out))
	}
	if from, gap := s.Gap(); !gap || from != 11 {
		t.Fatalf("Gap() = %d, %v; want 11, true", from, gap)
	}
	// The missing event arrives: everything held follows it, in order.
	if out := s.Push(evs[0]); !slices.Equal(seqsOf(out), []uint64{12, 15, 16}) {
		t.Fatalf("delivered %v", seqsOf(out))
	}
	if _, gap := s.Gap(); gap || s.Last() != 16 {
		t.Fatalf("gap left, last %d", s.Last())
	}
}

func TestSequencerDuplicates(t *testing.T) {
	t.Parallel()
	s := agentbridge.NewSequencer(5)
	evs := chain(5, 6, 7)
	for _, ev := range append(evs, evs...) {
		s.Push(ev)
	}
	if s.Last() != 7 {
		t.Fatalf("last %d", s.Last())
	}
	for _, ev := range append(evs, agentbridge.Event{Seq: 5, PrevSeq: 2}, agentbridge.Event{Seq: 1}) {
		if out := s.Push(ev); len(out) != 0 {
			t.Fatalf("delivered %v again", seqsOf(out))
		}
	}
	if _, gap := s.Gap(); gap {
		t.Fatal("duplicates held")
	}
	// A held event that arrives twice is delivered once.
	held := agentbridge.Event{Seq: 20, PrevSeq: 9}
	s.Push(held)
	s.Push(held)
	if out := s.Fill(chain(7, 9)); !slices.Equal(seqsOf(out), []uint64{9, 20}) {
		t.Fatalf("delivered %v", seqsOf(out))
	}
}

func TestSequencerGapThenFill(t *testing.T) {
	t.Parallel()
	s := agentbridge.NewSequencer(100)
	s.Push(agentbridge.Event{Seq: 110, PrevSeq: 105})
	s.Push(agentbridge.Event{Seq: 120, PrevSeq: 110})
	from, gap := s.Gap()
	if !gap || from != 101 {
		t.Fatalf("Gap() = %d, %v", from, gap)
	}
	// The read from 101 returns the log to its end, held events included:
	// each is delivered once.
	read := chain(100, 103, 105, 110, 120)
	if out := s.Fill(read); !slices.Equal(seqsOf(out), []uint64{103, 105, 110, 120}) {
		t.Fatalf("Fill delivered %v", seqsOf(out))
	}
	if _, gap := s.Gap(); gap || s.Last() != 120 {
		t.Fatalf("after Fill: gap, last %d", s.Last())
	}
	// A read that stops short: what it read, then the held events it made
	// next.
	s.Push(agentbridge.Event{Seq: 130, PrevSeq: 125})
	s.Push(agentbridge.Event{Seq: 140, PrevSeq: 130})
	if out := s.Fill(chain(120, 125)); !slices.Equal(seqsOf(out), []uint64{125, 130, 140}) {
		t.Fatalf("Fill delivered %v", seqsOf(out))
	}
	// An empty read leaves the gap; Reset gives up on it.
	s.Push(agentbridge.Event{Seq: 160, PrevSeq: 150})
	if out := s.Fill(nil); len(out) != 0 {
		t.Fatalf("empty Fill delivered %v", seqsOf(out))
	}
	if _, gap := s.Gap(); !gap {
		t.Fatal("gap lost")
	}
	s.Reset(160)
	if _, gap := s.Gap(); gap || s.Last() != 160 {
		t.Fatalf("after Reset: last %d", s.Last())
	}
	s.Reset(10) // never goes back
	if s.Last() != 160 {
		t.Fatalf("Reset went back to %d", s.Last())
	}
}

func TestSequencerHeldBound(t *testing.T) {
	t.Parallel()
	s := agentbridge.NewSequencer(0)
	// Far more events than it holds arrive behind a gap at 1.
	const n = 10000
	evs := chain(1, func() []uint64 {
		seqs := make([]uint64, n)
		for i := range seqs {
			seqs[i] = uint64(i + 2)
		}
		return seqs
	}()...)
	for _, ev := range evs {
		if out := s.Push(ev); len(out) != 0 {
			t.Fatalf("delivered %v ahead of the gap", seqsOf(out))
		}
	}
	// Only a bounded number is held: the event after the bound is missing,
	// so delivery stops there and the rest comes from the log.
	out := s.Push(agentbridge.Event{Seq: 1})
	if len(out) < 2 || len(out) > 4097 {
		t.Fatalf("delivered %d events after the gap filled", len(out))
	}
	if !slices.Equal(seqsOf(out), seqsOf(chain(0, func() []uint64 {
		seqs := make([]uint64, len(out))
		for i := range seqs {
			seqs[i] = uint64(i + 1)
		}
		return seqs
	}()...))) {
		t.Fatal("delivered out of order")
	}
	from, _ := s.Gap()
	if rest := s.Fill(evs[len(out)-1:]); uint64(len(rest)) != n+1-uint64(len(out)) || s.Last() != n+1 {
		t.Fatalf("refill from %d delivered %d, last %d", from, len(rest), s.Last())
	}
}
