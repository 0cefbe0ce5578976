// Package signalingtest provides test support for Parley's
// HTTP/WebSocket/WebRTC surface, like net/http/httptest: the client side a
// test drives a running edge with, as a browser or a site's server would.
// It is public so that the handler tests in signaling and the end-to-end
// tests in cmd/parley share one client; nothing in it belongs in a running
// program.
//
// It holds:
//
//   - Client, an HTTP client bound to an edge's base URL and a test, with
//     Response, its decoded answer;
//   - the widget and session calls (Resolve, NewSession, CreateSession, …)
//     and the site helpers around them (UserHash, ExpectErr);
//   - WSClient, a WebSocket client reading JSON frames, and ExpectReply;
//   - VoiceClient, a pion peer playing the visitor's browser, and Speech
//     and Tone, real Opus to send through it;
//   - Config, the configuration a test edge starts from;
//   - Scrape and MetricValue for /metrics, OpsRooms and WaitRoom for the
//     ops API;
//   - MultipartFile and Upload for the upload endpoint;
//   - ConnectAs and ConnectAgent, NATS connections to a test broker with a
//     role's credentials (an operator, an agent's worker), and StartWorker,
//     an agent worker running a test's handler.
//
// Each harness starts its own edge (a Server on a broker, or the whole
// app) and embeds a Client for it. This package imports configs, broker
// (whose Room the ops API lists, and whose NATS it connects to) and
// agentbridge (the workers' connect options), never signaling (whose own tests
// import it, so that would be a cycle) nor cmd/.
package signalingtest
