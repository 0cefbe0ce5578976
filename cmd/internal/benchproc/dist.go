package benchproc

import (
	"math"
	"slices"
)

// Dist summarises a load generator's samples (milliseconds or
// microseconds, as its field says) by the nearest-rank method: each
// percentile is one of the samples.
type Dist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

// DistOf summarises xs, which it sorts.
func DistOf(xs []float64) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	slices.Sort(xs)
	at := func(q float64) float64 { return xs[min(int(math.Ceil(q*float64(len(xs))))-1, len(xs)-1)] }
	return Dist{N: len(xs), P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999), Max: xs[len(xs)-1]}
}
