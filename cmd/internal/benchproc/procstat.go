package benchproc

import (
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// What the bench measures of processes, read from /proc with procfs:
// CPU time, resident memory, open files and the kernel's UDP drop
// counters. A process that is gone, or a field that cannot be read, counts
// as zero: the report shows it rather than failing the run.

// CPUSample is one sample of CPU time: the server's, the agent's, the
// bench's own and the machine's.
type CPUSample struct {
	At                time.Time
	Server, Agent     time.Duration
	Self              time.Duration
	SysBusy, SysTotal float64 // seconds of CPU time, summed over all cores
	Cores             int
}

// openProc is process pid in procfs; false when pid is 0 (none) or the
// process is gone: the figures of a missing process are zero.
func openProc(pid int) (procfs.Proc, bool) {
	if pid <= 0 {
		return procfs.Proc{}, false
	}
	p, err := procfs.NewProc(pid)
	return p, err == nil
}

// readProc is what read reads of process pid; the zero T when the process
// is missing or the read fails.
func readProc[T any](pid int, read func(procfs.Proc) (T, error)) T {
	var v T
	if p, ok := openProc(pid); ok {
		if got, err := read(p); err == nil {
			v = got
		}
	}
	return v
}

// ProcCPU is the CPU time (user + system) pid has used.
func ProcCPU(pid int) time.Duration {
	return time.Duration(readProc(pid, procfs.Proc.Stat).CPUTime() * float64(time.Second))
}

// SampleCPU samples the CPU time of server and agent (0: none), of this
// process and of the machine.
func SampleCPU(server, agent int) CPUSample {
	c := CPUSample{At: time.Now(), Server: ProcCPU(server), Agent: ProcCPU(agent)}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.Self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return c
	}
	st, err := fs.Stat()
	if err != nil {
		return c
	}
	// Guest time is already in user; idle and iowait are not busy.
	t := st.CPUTotal
	c.SysTotal = t.User + t.Nice + t.System + t.Idle + t.Iowait + t.IRQ + t.SoftIRQ + t.Steal
	c.SysBusy = c.SysTotal - t.Idle - t.Iowait
	c.Cores = len(st.CPU)
	return c
}

// rss is the process's resident set in bytes (VmRSS).
func RSS(pid int) uint64 {
	return readProc(pid, procfs.Proc.NewStatus).VmRSS
}

// CountFDs is the number of pid's open file descriptors.
func CountFDs(pid int) int {
	return readProc(pid, procfs.Proc.FileDescriptorsLen)
}

// UDPDrops returns the kernel's drop counter (receive buffer full) of each
// UDP socket of pid, by inode.
func UDPDrops(pid int) map[uint64]uint64 {
	p, ok := openProc(pid)
	if !ok {
		return nil
	}
	targets, _ := p.FileDescriptorTargets()
	mine := make(map[uint64]bool, len(targets))
	for _, l := range targets {
		if rest, ok := strings.CutPrefix(l, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64); err == nil {
				mine[ino] = true
			}
		}
	}
	// /proc/<pid>/net is the process's network namespace, which need not
	// be the bench's.
	fs, err := procfs.NewFS(filepath.Join(procfs.DefaultMountPoint, strconv.Itoa(pid)))
	if err != nil {
		return nil
	}
	drops := map[uint64]uint64{}
	for _, read := range []func() (procfs.NetUDP, error){fs.NetUDP, fs.NetUDP6} {
		lines, err := read()
		if err != nil {
			continue
		}
		for _, l := range lines {
			if l.Drops != nil && mine[l.Inode] {
				drops[l.Inode] = *l.Drops
			}
		}
	}
	return drops
}

// DropsSince is the drops of the sockets in now since before.
func DropsSince(before, now map[uint64]uint64) uint64 {
	var n uint64
	for ino, d := range now {
		n += d - min(before[ino], d)
	}
	return n
}

// CPUOf is the CPU time pids have used together.
func CPUOf(pids []int) time.Duration {
	var d time.Duration
	for _, pid := range pids {
		d += ProcCPU(pid)
	}
	return d
}

// RSSOf is the resident memory of pids together, in bytes.
func RSSOf(pids []int) uint64 {
	var n uint64
	for _, pid := range pids {
		n += RSS(pid)
	}
	return n
}

// FDsOf counts the open files of pids together.
func FDsOf(pids []int) int {
	n := 0
	for _, pid := range pids {
		n += CountFDs(pid)
	}
	return n
}

// UDPDropsOf is UDPDrops of every pid, in one map (socket inodes are
// unique on the machine).
func UDPDropsOf(pids []int) map[uint64]uint64 {
	all := map[uint64]uint64{}
	for _, pid := range pids {
		maps.Copy(all, UDPDrops(pid))
	}
	return all
}

// SampleCPUOf is SampleCPU with the servers' CPU summed over servers.
func SampleCPUOf(servers []int, agent int) CPUSample {
	c := SampleCPU(0, agent)
	c.Server = CPUOf(servers)
	return c
}
