// Package signaling is Parley's HTTP and WebSocket edge: everything a
// browser, a site's server, an operator or a monitoring system calls.
//
//   - The widget's API: resolve, sessions, messages, history, captures,
//     uploads, mode switches and the chat WebSocket (with guided
//     navigation), plus /widget.js, the LiveKit client SDK it loads for
//     voice_transport: livekit (vendored: vendorjs.go) and the demo page.
//   - Voice: WebRTC offers, trickle ICE and hang-up, with the legs run by
//     package media; LiveKit tokens, webhooks and the LiveKit bridge.
//   - The site server's routes (bootstrap and user tokens), the admin API
//     (widgets, API keys, conversations, leads, privacy deletion) and the
//     ops API (live rooms, their Server-Sent Events stream, the /ops/ page).
//   - /healthz, /readyz, and /metrics: Prometheus metrics on a registry
//     the server owns, which is also the broker's Observer.
//
// It checks widget keys, origins (and answers CORS), challenges, visitor
// identities, session tokens, API keys and their scopes, and rate limits
// per client IP and per widget (counted across brokers). Every route that
// needs a credential passes one gate (gate, in httputil.go) that
// authenticates it before the handler runs: Server.session for a
// visitor's session token, Server.secretKey for a site server's secret
// key, Server.admin for an admin key and the scope the route table names.
// Handlers return errors instead of writing them (the public routes
// through orError). Errors are mapped to wire codes in one place
// (errors.go).
// docs/API.md describes every route.
//
// # Roles
//
// Widgets, keys, sessions and conversations live in package broker (on
// NATS JetStream), but signaling does not hold a *broker.Broker: New takes
// a Deps of small interfaces, defined in roles.go where they are used, the
// way Galène's conn package meets WebRTC. Widgets and Keys serve the admin
// API and every key or widget check; Sessions admits visitors (sessions,
// nonces, the signing key, shared rate counts); Conversations carries a
// visitor's messages, replies, captures and uploads; Records is what the
// admin lists and privacy deletion erase; Voices runs voice legs and mode
// switches; Rooms is the ops view and the legs that feed it; Agents and
// Health answer about workers, readiness and the store. A *broker.Broker
// plays them all (BrokerDeps), which roles_test.go asserts.
//
// # Tests
//
// A handler's tests live beside it in this directory. Unit tests of the
// parsers, limiters and error table are in package signaling; HTTP-level
// tests of the handlers (admin_test.go, chat_test.go, ops_test.go,
// security_test.go, …) are in package signaling_test and run against the
// real thing through harness_test.go: a broker on an embedded NATS
// server on an ephemeral port, a media engine, the Server on 127.0.0.1:0
// and echo agent workers, all in process. End-to-end tests (Chromium, the
// parley binary and its CLIs, clusters, LiveKit, voice with pion peers)
// stay in cmd/parley.
package signaling
