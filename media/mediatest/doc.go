// Package mediatest starts a real livekit-server for tests and
// benchmarks: found the way `make livekit` leaves it, run in --dev mode on
// free loopback ports, ready once it answers HTTP, stopped by its process
// id. Parley tests its LiveKit bridge against the real server, never a
// mock.
//
// Start is the core and needs no testing.TB, so a command (such as
// `parley bench voice`) can use it too; Run wraps it for a test: it skips
// loudly without the binary (or fails, under PARLEY_REQUIRE_LIVEKIT=1),
// stops the server when the test ends and logs its log's tail if the test
// failed.
package mediatest
