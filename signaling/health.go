package signaling

import (
	"context"
	"net/http"
	"time"

	"github.com/parley-rtc/parley/broker"
)

// serveHealth: GET /healthz, the process is alive.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type readyResponse struct {
	// Status is "ready", or "degraded" when the store lost data or failed
	// reads: Parley still stores and serves, but an operator must look.
	Status string             `json:"status"`
	Agents map[string]int     `json:"agents"`
	Store  broker.StoreStatus `json:"store"`
}

// serveReady: GET /readyz, NATS connected, JetStream usable and the store
// writable (its write probe or the last real write succeeded). Agents with
// no live worker are reported but do not make Parley unready: messages are
// kept until a worker comes. Lost store data is reported ("degraded") but
// does not fail readiness: every broker shares the store, so taking this one
// out of rotation would not help.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.health.Ready(ctx); err != nil {
		writeErrorDetails(w, err, map[string]any{"store": s.health.StoreStatus()})
		return
	}
	st := s.health.StoreStatus()
	agents := make(map[string]int)
	for _, wc := range s.widgets.ListWidgets("") {
		agents[wc.Agent] = s.agents.AliveWorkers(wc.Agent)
	}
	status := "ready"
	if st.Degraded() {
		status = "degraded"
	}
	writeJSON(w, http.StatusOK, readyResponse{Status: status, Agents: agents, Store: st})
}
