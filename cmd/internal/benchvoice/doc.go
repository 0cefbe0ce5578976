// Package benchvoice is `parley bench voice`, a load generator for the voice
// path, run in its own process: N pion peers play visitors that talk (50
// Opus frames/s each) to a `parley serve`, whose echo agent sends every
// frame back. It measures, as an agent would see it, RTP arrival at the
// broker → NATS subscriber latency (Parley-Captured-At), frames sent vs
// published vs echoed, voice connect times, and the broker's CPU and RSS.
//
// The run: start (or use) a server → sample its idle RSS → create sessions
// at --ramp/s, each with a peer that starts sending once its answer is
// applied → when every session is connected (or failed), --warmup → the
// steady window of --duration, where everything is counted → stop sending,
// let in-flight frames land → hang up every leg and close every peer.
//
// Child processes and their CPU, memory and drops are package benchproc's.
//
// The files, by job:
//
//	command.go         the CLI: flags, --cpuprofile, the table or JSON, --transport both
//	options.go         Options and their validation
//	run.go             one run, start to report
//	gen.go, session.go the client side: pion peers, the sender goroutines, the HTTP calls
//	tap.go             the agent's view: one NATS subscriber to every conversation's audio
//	report.go          the report, its table
//	livekit.go         --transport livekit: its livekit-server (package livekitserver),
//	                   visitors as LiveKit participants
//
// Goroutines: Run owns every goroutine it starts (senders, echo readers,
// ramp workers, the NATS subscription, the watchers of child processes)
// and waits for all of them before it returns.
package benchvoice
