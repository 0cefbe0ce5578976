package speech

import (
	"math"
	"testing"
)

func sineAt(freq float64, rate, n int, amp float64) []int16 {
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(amp * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return s
}

// level is the amplitude of the freq component of s (Goertzel), over the
// middle of the signal so that the silent edges do not count.
func level(s []int16, rate int, freq float64) float64 {
	s = s[len(s)/4 : 3*len(s)/4]
	w := 2 * math.Pi * freq / float64(rate)
	var re, im float64
	for i, v := range s {
		re += float64(v) * math.Cos(w*float64(i))
		im -= float64(v) * math.Sin(w*float64(i))
	}
	return 2 * math.Hypot(re, im) / float64(len(s))
}

func db(x float64) float64 { return 20 * math.Log10(x) }

// TestResampleKeepsVoice: a 1 kHz tone keeps its amplitude (±0.1 dB) and
// frequency across every pair of the project's rates, and the length is
// ceil(n·to/from).
func TestResampleKeepsVoice(t *testing.T) {
	rates := []int{8000, 16000, 22050, 24000, 44100, 48000}
	for _, from := range rates {
		for _, to := range rates {
			r, err := NewResampler(from, to)
			if err != nil {
				t.Fatal(err)
			}
			in := sineAt(1000, from, from/2, 10000)
			out := r.Resample(in)
			if want := (len(in)*to + from - 1) / from; len(out) != want {
				t.Fatalf("%d→%d: %d samples, want %d", from, to, len(out), want)
			}
			if l := level(out, to, 1000); math.Abs(db(l/10000)) > 0.1 {
				t.Errorf("%d→%d: 1 kHz at %.2f dB", from, to, db(l/10000))
			}
			if l := level(out, to, 1300); db(l/10000) > -40 {
				t.Errorf("%d→%d: energy at 1.3 kHz %.1f dB (frequency shifted?)", from, to, db(l/10000))
			}
		}
	}
}

// TestResampleAntiAlias: downsampling 48 kHz to 16 kHz removes a 10 kHz
// tone (above the new 8 kHz Nyquist) instead of folding it to 6 kHz.
func TestResampleAntiAlias(t *testing.T) {
	r, _ := NewResampler(48000, 16000)
	out := r.Resample(sineAt(10000, 48000, 48000, 10000))
	if l := level(out, 16000, 6000); db(l/10000) > -60 {
		t.Fatalf("10 kHz folded to 6 kHz at %.1f dB, want below -60 dB", db(l/10000))
	}
	r, _ = NewResampler(22050, 16000)
	out = r.Resample(sineAt(10000, 22050, 22050, 10000))
	if l := level(out, 16000, 6000); db(l/10000) > -60 {
		t.Fatalf("22.05→16 kHz: 10 kHz folded to 6 kHz at %.1f dB", db(l/10000))
	}
}

func TestResampleEdges(t *testing.T) {
	if _, err := NewResampler(0, 16000); err == nil {
		t.Fatal("rate 0 accepted")
	}
	if _, err := (Audio{Rate: 500}).Resample(16000); err == nil {
		t.Fatal("500 Hz accepted")
	}
	r, _ := NewResampler(16000, 16000)
	in := []int16{1, 2, 3}
	out := r.Resample(in)
	out[0] = 9
	if in[0] != 1 || len(out) != 3 {
		t.Fatal("equal rates must return a copy")
	}
	r, _ = NewResampler(16000, 48000)
	if len(r.Resample(nil)) != 0 {
		t.Fatal("empty input")
	}
	// Full-scale DC keeps its level (unit DC gain) and the ringing at its
	// edges clips instead of wrapping around to negative values.
	full := make([]int16, 1000)
	for i := range full {
		full[i] = math.MaxInt16
	}
	out = r.Resample(full)
	if out[len(out)/2] != math.MaxInt16 {
		t.Fatalf("full-scale DC became %d", out[len(out)/2])
	}
	for i, v := range out {
		if v < -2000 {
			t.Fatalf("sample %d wrapped to %d", i, v)
		}
	}
	if clip16(40000) != math.MaxInt16 || clip16(-40000) != math.MinInt16 || clip16(1.6) != 2 {
		t.Fatal("clip16")
	}
	// A ratio with too many phases for a table (96001/16000) computes taps
	// per sample and still keeps the tone.
	r, err := NewResampler(96001, 16000)
	if err != nil || r.table != nil {
		t.Fatalf("96001 Hz: %v, table %v", err, r.table != nil)
	}
	if l := level(r.Resample(sineAt(1000, 96001, 9600, 10000)), 16000, 1000); math.Abs(db(l/10000)) > 0.1 {
		t.Fatalf("96001→16000: 1 kHz at %.2f dB", db(l/10000))
	}
}

func BenchmarkResample48kTo16k(b *testing.B) {
	r, _ := NewResampler(48000, 16000)
	in := sineAt(440, 48000, 48000, 10000) // one second
	b.ResetTimer()
	for b.Loop() {
		r.Resample(in)
	}
}

func BenchmarkResample16kTo48k(b *testing.B) {
	r, _ := NewResampler(16000, 48000)
	in := sineAt(440, 16000, 16000, 10000) // one second
	for b.Loop() {
		r.Resample(in)
	}
}
