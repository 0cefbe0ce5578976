package broker

import (
	"testing"
	"time"
)

// TestApplyMediaCountsDrops: the drops voice legs report (late visitor
// packets, agent frames dropped from or rejected by the playout queue) are
// summed as deltas for the metrics, like frames, and a counter that went
// back (a leg replaced) adds nothing.
func TestApplyMediaCountsDrops(t *testing.T) {
	t.Parallel()
	st := &roomState{legs: map[string]*roomLeg{"a": {}, "b": {}}, prev: map[string]MediaStats{}}
	now := time.Now()
	var total mediaMoved
	applyMediaLocked(st, map[string]MediaStats{
		"a": {FramesIn: 10, Late: 1, Dropped: 4, Rejected: 1},
		"b": {FramesOut: 5, Dropped: 2},
	}, now, &total)
	if total.late != 1 || total.dropped != 6 || total.rejected != 1 {
		t.Fatalf("first flush: %+v, want late 1, dropped 6, rejected 1", total)
	}
	total = mediaMoved{}
	applyMediaLocked(st, map[string]MediaStats{
		"a": {FramesIn: 20, Late: 3, Dropped: 10, Rejected: 1},
		"b": {FramesOut: 1, Dropped: 0}, // went back
	}, now.Add(time.Second), &total)
	if total.late != 2 || total.dropped != 6 || total.rejected != 0 {
		t.Fatalf("second flush: %+v, want late 2, dropped 6, rejected 0", total)
	}
	if got := st.legs["a"].leg.Media; got == nil || got.Dropped != 10 || got.Rejected != 1 {
		t.Fatalf("leg a media %+v, want the drops kept", got)
	}
}
