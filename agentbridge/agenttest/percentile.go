package agenttest

import (
	"cmp"
	"math"
	"slices"
)

// Percentile is the p-th percentile (p from 0 to 1) of samples by the
// nearest-rank method: the smallest sample that at least a fraction p of
// all samples are less than or equal to. It is always one of the samples,
// never an interpolation: sorted ascending, the sample at rank ⌈p·n⌉
// (1-based), and the smallest for p = 0. So with 100 samples p = 0.5 is
// the 50th, 0.99 the 99th and 1 the largest; with 10, p = 0.99 is the
// largest. It is 0 without samples. samples is not changed.
func Percentile[T cmp.Ordered](samples []T, p float64) T {
	var zero T
	n := len(samples)
	if n == 0 {
		return zero
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	// A tiny tolerance, so that a product such as 0.07·100 =
	// 7.000000000000001 counts as rank 7, not 8.
	rank := int(math.Ceil(p*float64(n) - 1e-9))
	return s[min(max(rank, 1), n)-1]
}
