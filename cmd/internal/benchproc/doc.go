// Package benchproc is what Parley's load generators (`parley bench voice`,
// `parley bench chat`) share about processes: starting `parley serve` as a
// child on free loopback ports with a fresh data directory (ready when
// GET /readyz says so, never from a log line), an out-of-process `parley
// agent echo`, stopping them, keeping the tail of their logs, and reading
// their CPU time, resident memory, open files and UDP drops from /proc
// (prometheus/procfs).
//
// Goroutines: Start owns one per child, which waits for it to exit; Stop
// waits for it.
package benchproc
