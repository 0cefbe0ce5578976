package agenttest

import (
	"testing"
	"time"
)

// TestPercentileRank pins the nearest rank on small inputs, where the
// definitions in use before disagreed by one rank.
func TestPercentileRank(t *testing.T) {
	ten := []int{10, 1, 9, 2, 8, 3, 7, 4, 6, 5} // 1…10, unsorted
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100…1
	}
	for _, c := range []struct {
		name    string
		samples []int
		p       float64
		want    int
	}{
		{"one sample p0", []int{7}, 0, 7},
		{"one sample p50", []int{7}, 0.5, 7},
		{"one sample p100", []int{7}, 1, 7},
		{"two p50 is the lower", []int{2, 1}, 0.5, 1},
		{"two p51 is the upper", []int{2, 1}, 0.51, 2},
		{"four p50", []int{4, 3, 2, 1}, 0.5, 2},
		{"four p75", []int{4, 3, 2, 1}, 0.75, 3},
		{"four p76", []int{4, 3, 2, 1}, 0.76, 4},
		{"ten p0 is the smallest", ten, 0, 1},
		{"ten p10", ten, 0.1, 1},
		{"ten p11", ten, 0.11, 2},
		{"ten p50", ten, 0.5, 5},
		{"ten p90", ten, 0.9, 9},
		{"ten p99 is the largest", ten, 0.99, 10},
		{"ten p100", ten, 1, 10},
		{"hundred p7 (float product above 7)", hundred, 0.07, 7},
		{"hundred p50", hundred, 0.5, 50},
		{"hundred p90", hundred, 0.9, 90},
		{"hundred p99", hundred, 0.99, 99},
		{"hundred p100", hundred, 1, 100},
		{"above 1 is the largest", ten, 1.5, 10},
		{"below 0 is the smallest", ten, -1, 1},
	} {
		if got := Percentile(c.samples, c.p); got != c.want {
			t.Errorf("%s: Percentile(%v, %v) = %d, want %d", c.name, c.samples, c.p, got, c.want)
		}
	}
	if got := Percentile([]int(nil), 0.5); got != 0 {
		t.Errorf("no samples: %d, want 0", got)
	}
	if ten[0] != 10 || ten[9] != 5 {
		t.Errorf("Percentile sorted its argument: %v", ten)
	}
	ds := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}
	if got := Percentile(ds, 0.5); got != 2*time.Millisecond {
		t.Errorf("durations p50 = %v, want 2ms", got)
	}
}
