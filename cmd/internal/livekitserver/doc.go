// Package livekitserver starts a real livekit-server: found the way `make
// livekit` leaves it, run in --dev mode on free loopback ports, ready once
// it answers HTTP, stopped by its process id. Parley tests its LiveKit
// bridge against the real server, never a mock, and `parley bench voice
// --transport livekit` measures against the same one.
//
// The package does not import package testing, so a command can use it.
// The tests' wrapper (skip loudly without the binary, fail under
// PARLEY_REQUIRE_LIVEKIT=1, stop the server when the test ends) lives
// with its one user, cmd/parley's livekit_server_test.go.
//
// Goroutines: Start starts one per server, which reaps the process; it
// ends when the process exits, and Stop waits for that.
package livekitserver
