package media

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/parley-rtc/parley/agentbridge"
)

// jstep is one jitter buffer operation: a packet (seq, ts) arriving at ms,
// or a flush at ms; want is the extended seqs released.
type jstep struct {
	flush bool
	seq   uint16
	ts    uint32
	ms    int
	want  []uint64
}

func pkt(seq uint16, ms int, want ...uint64) jstep {
	return jstep{seq: seq, ts: uint32(seq) * 960, ms: ms, want: want}
}

func flushAt(ms int, want ...uint64) jstep { return jstep{flush: true, ms: ms, want: want} }

func TestJitterBuffer(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name             string
		steps            []jstep
		lost, late, dups uint64
	}{
		{name: "in order", steps: []jstep{pkt(1, 0, 1), pkt(2, 20, 2), pkt(3, 40, 3)}},
		{name: "reorder within window", steps: []jstep{pkt(1, 0, 1), pkt(3, 20), pkt(2, 25, 2, 3), pkt(4, 40, 4)}},
		{name: "reorder of three", steps: []jstep{pkt(1, 0, 1), pkt(4, 20), pkt(3, 21), pkt(2, 22, 2, 3, 4)}},
		{
			name:  "gap never filled",
			steps: []jstep{pkt(1, 0, 1), pkt(3, 20), flushAt(79), flushAt(80, 3), pkt(4, 90, 4)},
			lost:  1,
		},
		{
			name:  "gap given up by a later packet's time",
			steps: []jstep{pkt(1, 0, 1), pkt(3, 20), pkt(4, 85, 3, 4)},
			lost:  1,
		},
		{
			name:  "gap filled late",
			steps: []jstep{pkt(1, 0, 1), pkt(3, 20), flushAt(80, 3), pkt(2, 90), pkt(4, 95, 4)},
			lost:  1, late: 1,
		},
		{
			name:  "too many held",
			steps: []jstep{pkt(1, 0, 1), pkt(3, 1), pkt(4, 2), pkt(5, 3), pkt(6, 4, 3, 4, 5, 6)},
			lost:  1,
		},
		{
			name:  "two gaps, released one at a time",
			steps: []jstep{pkt(1, 0, 1), pkt(3, 10), pkt(6, 50), flushAt(70, 3), flushAt(109), flushAt(110, 6)},
			lost:  3,
		},
		{
			name:  "duplicates",
			steps: []jstep{pkt(1, 0, 1), pkt(1, 1), pkt(3, 2), pkt(3, 3), pkt(2, 4, 2, 3), pkt(2, 5), pkt(3, 6)},
			dups:  4,
		},
		{
			name:  "duplicate of a late packet",
			steps: []jstep{pkt(1, 0, 1), pkt(3, 20), flushAt(80, 3), pkt(2, 90), pkt(2, 91)},
			lost:  1, late: 1, dups: 1,
		},
		{
			name:  "older than the first",
			steps: []jstep{pkt(10, 0, 10), pkt(9, 1), pkt(11, 20, 11)},
			late:  1,
		},
		{
			name: "seq wrap",
			steps: []jstep{
				pkt(65534, 0, 65534), pkt(65535, 20, 65535), pkt(0, 40, 65536), pkt(1, 60, 65537),
			},
		},
		{
			name:  "reorder across the wrap",
			steps: []jstep{pkt(65534, 0, 65534), pkt(0, 20), pkt(65535, 21, 65535, 65536), pkt(1, 40, 65537)},
		},
		{
			name:  "far jump",
			steps: []jstep{pkt(1, 0, 1), pkt(3, 1), pkt(200, 2, 3, 200), pkt(201, 3, 201)},
			lost:  1 + 196,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			jb := newJitterBuffer(60 * time.Millisecond)
			t0 := time.Unix(1000, 0)
			for i, s := range tc.steps {
				now := t0.Add(time.Duration(s.ms) * time.Millisecond)
				var out []micFrame
				if s.flush {
					out = jb.flush(now)
				} else {
					out = jb.push(rtpIn{Seq: s.seq, TS: s.ts, Payload: []byte{byte(s.seq)}, Arrival: now}, now)
				}
				var got []uint64
				for _, f := range out {
					got = append(got, f.Seq)
					if f.Payload[0] != byte(f.Seq) {
						t.Fatalf("step %d: seq %d carries payload of %d", i, f.Seq, f.Payload[0])
					}
				}
				if !slices.Equal(got, s.want) {
					t.Fatalf("step %d (%+v): released %v, want %v", i, s, got, s.want)
				}
			}
			lost, late, dups := jb.counters()
			if lost != tc.lost || late != tc.late || dups != tc.dups {
				t.Fatalf("lost %d late %d dups %d, want %d %d %d", lost, late, dups, tc.lost, tc.late, tc.dups)
			}
		})
	}
}

func TestJitterDetails(t *testing.T) {
	t.Parallel()
	jb := newJitterBuffer(60 * time.Millisecond)
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	jb.push(rtpIn{Seq: 1, TS: 960, Payload: []byte{1}, Arrival: at(0)}, at(0))
	if _, ok := jb.deadline(); ok {
		t.Fatal("deadline with nothing held")
	}
	jb.push(rtpIn{Seq: 4, TS: 4 * 960, Payload: []byte{4}, Arrival: at(30)}, at(30))
	if d, ok := jb.deadline(); !ok || !d.Equal(at(90)) {
		t.Fatalf("deadline %v %v, want %v", d, ok, at(90))
	}
	out := jb.flush(at(90))
	if len(out) != 1 || out[0].Seq != 4 || out[0].LostBefore != 2 || !out[0].Arrival.Equal(at(30)) || out[0].TS != 4*960 {
		t.Fatalf("released %+v", out)
	}

	// Timestamp wrap: extended timestamps keep counting.
	jb = newJitterBuffer(60 * time.Millisecond)
	var ts []uint64
	for i, v := range []uint32{1<<32 - 960, 0, 960} {
		for _, f := range jb.push(rtpIn{Seq: uint16(i), TS: v, Payload: []byte{0}, Arrival: at(i)}, at(i)) {
			ts = append(ts, f.TS)
		}
	}
	if !slices.Equal(ts, []uint64{1<<32 - 960, 1 << 32, 1<<32 + 960}) {
		t.Fatalf("timestamps %v", ts)
	}

	// Held payloads are copies: the caller may reuse its buffer.
	jb = newJitterBuffer(60 * time.Millisecond)
	buf := []byte{1}
	jb.push(rtpIn{Seq: 1, Payload: buf, Arrival: at(0)}, at(0))
	buf[0] = 3
	jb.push(rtpIn{Seq: 3, Payload: buf, Arrival: at(1)}, at(1))
	buf[0] = 2
	out = jb.push(rtpIn{Seq: 2, Payload: buf, Arrival: at(2)}, at(2))
	if len(out) != 2 || out[0].Payload[0] != 2 || out[1].Payload[0] != 3 {
		t.Fatalf("released %+v", out)
	}
}

func TestInterarrival(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	var steady interarrival
	steady.clock = 48000
	for i := range 100 {
		steady.update(uint32(i*960), t0.Add(time.Duration(i)*20*time.Millisecond))
	}
	if steady.ms() > 0.01 {
		t.Fatalf("steady stream jitter %.3f ms", steady.ms())
	}
	var jumpy interarrival
	jumpy.clock = 48000
	for i := range 200 {
		d := time.Duration(i) * 20 * time.Millisecond
		if i%2 == 1 {
			d += 10 * time.Millisecond
		}
		jumpy.update(uint32(i*960), t0.Add(d))
	}
	if j := jumpy.ms(); j < 8 || j > 11 {
		t.Fatalf("alternating ±10 ms jitter = %.2f ms, want ≈10", j)
	}
}

func FuzzJitter(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 3, 0, 0, 2, 0})
	f.Add([]byte{255, 255, 1, 0, 0, 1, 0, 2, 100, 1, 2, 200})
	f.Fuzz(func(t *testing.T, data []byte) {
		jb := newJitterBuffer(60 * time.Millisecond)
		now := time.Unix(1000, 0)
		var last uint64
		started := false
		check := func(out []micFrame) {
			for _, fr := range out {
				if started && fr.Seq <= last {
					t.Fatalf("seq %d released after %d", fr.Seq, last)
				}
				started, last = true, fr.Seq
			}
			used := 0
			for _, s := range jb.slots {
				if s.used {
					used++
				}
			}
			if used != jb.held || jb.held > jb.maxHeld {
				t.Fatalf("held %d, slots used %d, max %d", jb.held, used, jb.maxHeld)
			}
		}
		for len(data) >= 3 {
			seq := binary.BigEndian.Uint16(data)
			op := data[2]
			data = data[3:]
			now = now.Add(time.Duration(op&0x3f) * time.Millisecond)
			if op&0x40 != 0 {
				check(jb.flush(now))
				continue
			}
			check(jb.push(rtpIn{Seq: seq, TS: uint32(seq) * 960, Payload: []byte{1}, Arrival: now}, now))
		}
	})
}

func BenchmarkJitterPush(b *testing.B) {
	jb := newJitterBuffer(60 * time.Millisecond)
	payload := make([]byte, 80)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		jb.push(rtpIn{Seq: uint16(i), TS: uint32(i) * 960, Payload: payload, Arrival: now}, now)
	}
}

// BenchmarkMicPathOpus is the Opus passthrough path from a marshalled RTP
// packet to OnMicFrame: unmarshal, jitter buffer, payload copy, callback.
func BenchmarkMicPathOpus(b *testing.B) {
	var sink agentbridge.AudioFrame
	l := &Leg{audioPath: audioPath{
		jb:    newJitterBuffer(60 * time.Millisecond),
		codec: FormatOpus().String(),
		onMic: func(f agentbridge.AudioFrame) { sink = f },
	}}
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SSRC: 1}, Payload: make([]byte, 80)}
	if err := p.Header.SetExtension(1, []byte{0x30}); err != nil {
		b.Fatal(err)
	}
	var in rtp.Packet
	raw := make([]byte, 1500)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.SequenceNumber, p.Timestamp = uint16(i), uint32(i)*960
		n, err := p.MarshalTo(raw) // stands in for the socket read
		if err != nil {
			b.Fatal(err)
		}
		if err := in.Unmarshal(raw[:n]); err != nil {
			b.Fatal(err)
		}
		l.deliver(l.jb.push(rtpIn{Seq: in.SequenceNumber, TS: in.Timestamp, Payload: in.Payload, Arrival: now}, now))
	}
	_ = sink
}
