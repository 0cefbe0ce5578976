package signaling

import (
	"context"
	"net/http"
	"time"
)

// serveHealth: GET /healthz, the process is alive.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type readyResponse struct {
	Status string         `json:"status"`
	Agents map[string]int `json:"agents"`
}

// serveReady: GET /readyz, NATS connected and JetStream usable. Agents with
// no live worker are reported but do not make Parley unready: messages are
// kept until a worker comes.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.b.Ready(ctx); err != nil {
		writeError(w, err)
		return
	}
	agents := make(map[string]int)
	for _, wc := range s.b.ListWidgets("") {
		agents[wc.Agent] = s.b.AliveWorkers(wc.Agent)
	}
	writeJSON(w, http.StatusOK, readyResponse{Status: "ready", Agents: agents})
}
