package speech

import (
	"fmt"
	"math"
)

// Resampler converts mono PCM from one sample rate to another with a
// windowed-sinc (Blackman) interpolator: a polyphase filter for the reduced
// ratio of the two rates, low-pass at 92% of the lower Nyquist frequency so
// that downsampling does not fold high frequencies back into the voice band
// (stopband about -70 dB). Each call converts one whole utterance; the
// signal before the first and after the last sample is taken as silence.
// A Resampler is immutable after NewResampler and safe for concurrent use.
//
// No resampler was in the module graph (gopus keeps its own internal), so
// this is ours; the rates of this project (8, 16, 22.05, 24, 44.1, 48 kHz)
// are covered by its tests.
type Resampler struct {
	from, to int
	up, down int       // to/from reduced: up output phases per down input samples
	half     int       // taps each side of the interpolation point
	table    []float64 // up rows of 2*half taps, each normalised to unit DC gain; nil: computed per sample
	fc       float64   // cut-off, in cycles per input sample
}

// zeroCrossings is the number of sinc zero crossings on each side of the
// kernel: 16 gives a transition band of about 8% of the cut-off.
const zeroCrossings = 16

// maxTable caps the precomputed filter (float64s); rarer ratios with more
// phases than fit compute their taps per output sample instead.
const maxTable = 1 << 20

// NewResampler returns a resampler from one rate to another (Hz, each
// 1,000..384,000).
func NewResampler(from, to int) (*Resampler, error) {
	if from < 1000 || from > 384000 || to < 1000 || to > 384000 {
		return nil, fmt.Errorf("speech: resample %d Hz to %d Hz: rate out of range", from, to)
	}
	g := gcd(from, to)
	r := &Resampler{from: from, to: to, up: to / g, down: from / g}
	lower := min(from, to)
	r.fc = 0.92 * float64(lower) / 2 / float64(from)
	r.half = int(math.Ceil(zeroCrossings / (2 * r.fc)))
	if from != to && r.up*2*r.half <= maxTable {
		r.table = make([]float64, r.up*2*r.half)
		for p := 0; p < r.up; p++ {
			r.taps(p, r.table[p*2*r.half:(p+1)*2*r.half])
		}
	}
	return r, nil
}

// taps fills dst (2*half values) with the normalised kernel for phase p:
// dst[j] weighs input sample idx-half+1+j for an output at idx + p/up.
func (r *Resampler) taps(p int, dst []float64) {
	frac := float64(p) / float64(r.up)
	sum := 0.0
	for j := range dst {
		x := frac - float64(j-r.half+1) // distance from the input sample, in input samples
		u := x / float64(r.half)
		w := 0.0
		if u > -1 && u < 1 {
			w = 0.42 + 0.5*math.Cos(math.Pi*u) + 0.08*math.Cos(2*math.Pi*u)
		}
		v := 2 * r.fc * x
		s := 1.0
		if v != 0 {
			s = math.Sin(math.Pi*v) / (math.Pi * v)
		}
		dst[j] = w * s
		sum += dst[j]
	}
	for j := range dst {
		dst[j] /= sum
	}
}

// Resample converts in (at the from rate) to the to rate. The output has
// ceil(len(in)·to/from) samples; equal rates return a copy.
func (r *Resampler) Resample(in []int16) []int16 {
	if r.from == r.to {
		return append([]int16(nil), in...)
	}
	n := (len(in)*r.up + r.down - 1) / r.down
	out := make([]int16, n)
	var scratch []float64
	if r.table == nil {
		scratch = make([]float64, 2*r.half)
	}
	for i := range out {
		pos := i * r.down
		idx, p := pos/r.up, pos%r.up
		k := scratch
		if r.table != nil {
			k = r.table[p*2*r.half : (p+1)*2*r.half]
		} else {
			r.taps(p, k)
		}
		first := idx - r.half + 1
		acc := 0.0
		lo, hi := max(0, -first), min(len(k), len(in)-first)
		for j := lo; j < hi; j++ {
			acc += k[j] * float64(in[first+j])
		}
		out[i] = clip16(acc)
	}
	return out
}

// Resample returns a at rate (a copy when it already is).
func (a Audio) Resample(rate int) (Audio, error) {
	if a.Rate == rate {
		return Audio{Rate: rate, Samples: append([]int16(nil), a.Samples...)}, nil
	}
	r, err := NewResampler(a.Rate, rate)
	if err != nil {
		return Audio{}, err
	}
	return Audio{Rate: rate, Samples: r.Resample(a.Samples)}, nil
}

func clip16(v float64) int16 {
	v = math.Round(v)
	if v > math.MaxInt16 {
		return math.MaxInt16
	}
	if v < math.MinInt16 {
		return math.MinInt16
	}
	return int16(v)
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
