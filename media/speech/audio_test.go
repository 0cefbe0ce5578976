package speech

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"time"
)

func TestWAVRoundTrip(t *testing.T) {
	a := Audio{Rate: 16000, Samples: []int16{0, 1, -1, math.MaxInt16, math.MinInt16, 1234}}
	b := a.WAV()
	if len(b) != 44+12 || string(b[:4]) != "RIFF" || string(b[36:40]) != "data" {
		t.Fatalf("header: % x", b[:44])
	}
	got, err := ParseWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Rate != a.Rate || len(got.Samples) != len(a.Samples) {
		t.Fatalf("got %d Hz × %d", got.Rate, len(got.Samples))
	}
	for i := range a.Samples {
		if got.Samples[i] != a.Samples[i] {
			t.Fatalf("sample %d: %d != %d", i, got.Samples[i], a.Samples[i])
		}
	}
	if p := AudioFromPCM(16000, a.PCM()); len(p.Samples) != 6 || p.Samples[3] != math.MaxInt16 {
		t.Fatalf("PCM round trip: %v", p.Samples)
	}
	if d := (Audio{Rate: 16000, Samples: make([]int16, 8000)}).Duration(); d != 500*time.Millisecond {
		t.Fatalf("duration %s", d)
	}
}

// wav builds a RIFF file from chunks (id, body), padding odd bodies.
func wav(chunks ...[2]string) []byte {
	var body []byte
	for _, c := range chunks {
		body = append(body, c[0]...)
		body = binary.LittleEndian.AppendUint32(body, uint32(len(c[1])))
		body = append(body, c[1]...)
		if len(c[1])%2 == 1 {
			body = append(body, 0)
		}
	}
	out := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(4+len(body)))...)
	return append(append(out, "WAVE"...), body...)
}

func fmtChunk(format, channels, rate, bits int, ext int) string {
	b := binary.LittleEndian.AppendUint16(nil, uint16(format))
	b = binary.LittleEndian.AppendUint16(b, uint16(channels))
	b = binary.LittleEndian.AppendUint32(b, uint32(rate))
	b = binary.LittleEndian.AppendUint32(b, uint32(rate*channels*bits/8))
	b = binary.LittleEndian.AppendUint16(b, uint16(channels*bits/8))
	b = binary.LittleEndian.AppendUint16(b, uint16(bits))
	if format == 0xFFFE {
		b = binary.LittleEndian.AppendUint16(b, 22)
		b = binary.LittleEndian.AppendUint16(b, uint16(bits))
		b = binary.LittleEndian.AppendUint32(b, 4) // channel mask
		b = binary.LittleEndian.AppendUint16(b, uint16(ext))
		b = append(b, "\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"...)
	}
	return string(b)
}

func pcm(s ...int16) string {
	var b []byte
	for _, v := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	return string(b)
}

func TestParseWAV(t *testing.T) {
	streamed := wav([2]string{"fmt ", fmtChunk(1, 1, 24000, 16, 0)})
	streamed = append(streamed, "data\xff\xff\xff\xff"...)
	streamed = append(streamed, pcm(5, 6, 7)...)
	ok := []struct {
		name string
		b    []byte
		rate int
		want []int16
	}{
		{"stereo mixed down", wav([2]string{"fmt ", fmtChunk(1, 2, 48000, 16, 0)}, [2]string{"data", pcm(100, 200, -100, -300)}), 48000, []int16{150, -200}},
		{"extensible PCM", wav([2]string{"fmt ", fmtChunk(0xFFFE, 1, 16000, 16, 1)}, [2]string{"data", pcm(1, 2)}), 16000, []int16{1, 2}},
		{"LIST chunk (odd size) skipped", wav([2]string{"fmt ", fmtChunk(1, 1, 22050, 16, 0)}, [2]string{"LIST", "abc"}, [2]string{"data", pcm(9)}), 22050, []int16{9}},
		{"streamed data size", streamed, 24000, []int16{5, 6, 7}},
	}
	for _, c := range ok {
		a, err := ParseWAV(c.b)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if a.Rate != c.rate || len(a.Samples) != len(c.want) {
			t.Fatalf("%s: %d Hz %v", c.name, a.Rate, a.Samples)
		}
		for i := range c.want {
			if a.Samples[i] != c.want[i] {
				t.Fatalf("%s: %v, want %v", c.name, a.Samples, c.want)
			}
		}
	}
	bad := map[string][]byte{
		"empty":          nil,
		"not RIFF":       []byte("<html>502 Bad Gateway</html>"),
		"JSON":           []byte(`{"error":{"message":"no"}}`),
		"no fmt":         wav([2]string{"data", pcm(1)}),
		"no data":        wav([2]string{"fmt ", fmtChunk(1, 1, 16000, 16, 0)}),
		"8-bit":          wav([2]string{"fmt ", fmtChunk(1, 1, 16000, 8, 0)}, [2]string{"data", "ab"}),
		"float":          wav([2]string{"fmt ", fmtChunk(3, 1, 16000, 32, 0)}, [2]string{"data", "abcd"}),
		"extensible flt": wav([2]string{"fmt ", fmtChunk(0xFFFE, 1, 16000, 16, 3)}, [2]string{"data", "ab"}),
		"rate 0":         wav([2]string{"fmt ", fmtChunk(1, 1, 0, 16, 0)}, [2]string{"data", "ab"}),
		"short fmt":      wav([2]string{"fmt ", "abcd"}, [2]string{"data", "ab"}),
		"truncated":      wav([2]string{"fmt ", fmtChunk(1, 1, 16000, 16, 0)})[:30],
	}
	for name, b := range bad {
		if _, err := ParseWAV(b); !errors.Is(err, errWAV) {
			t.Errorf("%s: got %v, want errWAV", name, err)
		}
	}
}

// FuzzParseWAV: a provider's answer is outside input; ParseWAV must never
// panic and must return samples consistent with its header.
func FuzzParseWAV(f *testing.F) {
	f.Add(Audio{Rate: 16000, Samples: []int16{1, 2, 3}}.WAV())
	f.Add(wav([2]string{"fmt ", fmtChunk(0xFFFE, 2, 48000, 16, 1)}, [2]string{"LIST", "x"}, [2]string{"data", pcm(1, 2, 3, 4)}))
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEfmt \xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseWAV(b)
		if err == nil && (a.Rate < 1000 || 2*len(a.Samples) > len(b)) {
			t.Fatalf("accepted %d Hz with %d samples from %d bytes", a.Rate, len(a.Samples), len(b))
		}
	})
}
