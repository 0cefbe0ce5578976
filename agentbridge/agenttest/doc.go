// Package agenttest provides utilities for testing agents and the code
// around them, the way net/http/httptest does for HTTP handlers. It is
// test support, public so that agent developers can use it in their own
// tests; nothing in it belongs in a running program.
//
// It holds the helpers Parley's own tests used to write again and again:
//
//   - Poll waits for a condition (a ticker and a deadline, never a sleep),
//     in the spirit of nats-server's checkFor and testify's Eventually;
//   - Percentile is the one definition of a percentile the tests and
//     benchmarks report (nearest rank);
//   - Echo and Answer are agent handlers that reply to every visitor
//     message;
//   - AudioTap collects the audio frames published on a subject, such as a
//     conversation's in.audio;
//   - RunNATS starts an in-process nats-server with JetStream on a free
//     port;
//   - LogBuffer collects a logger's output for a test to check.
//
// It imports agentbridge, nats.go and nats-server, and nothing of Parley's
// broker, so an agent's tests need no more than the SDK does.
package agenttest
