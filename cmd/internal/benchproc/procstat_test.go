package benchproc

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// The bench's own process, read through procfs, agrees with what the
// kernel tells it directly.
func TestProcStatSelf(t *testing.T) {
	self := os.Getpid()
	// Burn CPU until /proc shows some (its unit is 10 ms).
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for ProcCPU(self) < 50*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("ProcCPU(self) = %v after 10 s of work", ProcCPU(self))
		}
		for i := range 1_000_000 {
			x += i
		}
	}
	_ = x
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	own := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	// /proc's figure is in ticks and a little behind getrusage's.
	if got := ProcCPU(self); got > own+20*time.Millisecond || got < own-200*time.Millisecond {
		t.Errorf("ProcCPU(self) = %v, getrusage %v", got, own)
	}

	c := SampleCPU(self, 0)
	if c.Server <= 0 || c.Agent != 0 || c.Self <= 0 || c.Cores < 1 || c.SysTotal <= 0 || c.SysBusy <= 0 || c.SysBusy > c.SysTotal {
		t.Errorf("SampleCPU = %+v", c)
	}
	if r := RSS(self); r < 1<<20 || r > 1<<34 {
		t.Errorf("RSS(self) = %d bytes", r)
	}
	if n := CountFDs(self); n < 3 {
		t.Errorf("CountFDs(self) = %d", n)
	}
	// No process: zeros, not errors.
	if ProcCPU(0) != 0 || RSS(0) != 0 || UDPDrops(0) != nil {
		t.Error("pid 0 measured something")
	}
}

// UDPDrops sees the kernel drop the datagrams a full socket cannot take.
func TestUDPDrops(t *testing.T) {
	self := os.Getpid()
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := rx.SetReadBuffer(1); err != nil { // the kernel's minimum: a few datagrams
		t.Fatal(err)
	}
	tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	before := UDPDrops(self)
	if len(before) < 2 {
		t.Fatalf("UDPDrops(self) = %v, want both sockets", before)
	}
	payload := make([]byte, 1000)
	for range 200 {
		if _, err := tx.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	// Loopback delivers at once, but poll rather than assume it.
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for DropsSince(before, UDPDrops(self)) < 100 {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("drops %d after 200 datagrams into a full socket, want ≥ 100", DropsSince(before, UDPDrops(self)))
		}
	}
}

func TestDropsSince(t *testing.T) {
	before := map[uint64]uint64{1: 5, 2: 7}
	now := map[uint64]uint64{1: 9, 2: 7, 3: 4} // socket 3 is new
	if n := DropsSince(before, now); n != 8 {
		t.Errorf("DropsSince = %d, want 8", n)
	}
	// A counter that went down (the inode went to a new socket) adds
	// nothing rather than wrapping around.
	if n := DropsSince(map[uint64]uint64{1: 9}, map[uint64]uint64{1: 2}); n != 0 {
		t.Errorf("DropsSince after reuse = %d, want 0", n)
	}
}
