// Package benchchat is `parley bench chat`, a load generator for the chat
// path, run in its own process: N visitors, each with a session and a
// WebSocket, each holding a live conversation (its first message has been
// answered, so a worker holds it), and messages at --rate per second spread
// across them, answered by the echo agent (by default in its own process,
// `parley agent echo`, so the broker is measured alone). It measures what
// a visitor sees (message sent → ack, → first chunk of the reply), session
// creation per second, the broker's (and its embedded NATS's) resident
// memory per idle live conversation, CPU, and the JetStream consumers.
//
// The run: start a server (and the agent) → sample their idle RSS → create
// the sessions with --workers concurrent clients (timed) → open every
// WebSocket → one message in each conversation, all answered (the
// conversations are live) → settle, sample the RSS (the idle figure) →
// --warmup at --rate → the steady window of --duration, where latencies,
// CPU and errors are counted → stop sending, let replies land → close
// every socket and the children.
//
// The files, by job:
//
//	command.go  the CLI: flags, the table or JSON
//	options.go  Options and their validation
//	run.go      one run, start to report
//	visitor.go  one visitor: session, WebSocket, its reader
//	report.go   the report, its table
//
// Goroutines: Run owns every goroutine it starts (the session and socket
// workers, one reader per WebSocket, the sender) and waits for all of them
// before it returns.
package benchchat
