// Package signaling is Parley's HTTP and WebSocket edge: everything a
// browser, a site's server, an operator or a monitoring system calls.
//
//   - The widget's API: resolve, sessions, messages, history, captures,
//     uploads, mode switches and the chat WebSocket (with guided
//     navigation), plus /widget.js and the demo page.
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
// per client IP and per widget (counted across brokers). Widgets, keys,
// sessions and conversations live in package broker (on NATS JetStream).
// Errors are mapped to wire codes in one place (errors.go). docs/API.md
// describes every route.
package signaling
