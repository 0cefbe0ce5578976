package signaling

import (
	"fmt"
	"net/http"
	"time"

	"github.com/parley-rtc/parley/broker"
)

// Server-to-server endpoints, authenticated with a widget's secret key
// ("Authorization: Bearer sk_…"), which never reaches a browser.

// secretKeyWidget authenticates a secret key and returns its widget.
func (s *Server) secretKeyWidget(r *http.Request) (broker.WidgetRecord, error) {
	key, err := s.keys.VerifyKey(r.Context(), bearer(r), broker.KeySecret)
	if err != nil {
		return broker.WidgetRecord{}, err
	}
	w, err := s.widgets.WidgetByID(key.WidgetID)
	if err != nil || w.Tenant != key.Tenant {
		return broker.WidgetRecord{}, fmt.Errorf("%w: the key's widget no longer exists", broker.ErrUnknownKey)
	}
	return w, nil
}

// secretKey is the gate of the server-to-server routes: h runs with the
// widget of the verified secret key (secretKeyWidget).
func (s *Server) secretKey(h func(w http.ResponseWriter, r *http.Request, wr broker.WidgetRecord) error) http.HandlerFunc {
	return gate(s.secretKeyWidget, h)
}

type bootstrapRequest struct {
	Origin  string         `json:"origin"`
	Visitor *VisitorClaims `json:"visitor"`
}

type tokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// serveBootstrapToken: POST /v1/tokens (secret key) → a short-lived,
// single-use token the site's server hands its page; POST /v1/sessions
// takes it instead of widget key + challenge. Optional: the origin it is
// for, and verified visitor claims.
func (s *Server) serveBootstrapToken(w http.ResponseWriter, r *http.Request, wr broker.WidgetRecord) error {
	var req bootstrapRequest
	if err := decodeOptionalJSON(w, r, &req); err != nil {
		return err
	}
	if req.Origin != "" {
		if _, err := checkOrigin(wr.WidgetConfig, req.Origin); err != nil {
			return err
		}
		req.Origin = canonicalOrigin(req.Origin)
	}
	if req.Visitor != nil {
		if err := req.Visitor.validate(); err != nil {
			return err
		}
		req.Visitor.Method = "bootstrap"
	}
	token, _, exp, err := s.tokens.mintBootstrapToken(wr.ID, req.Origin, req.Visitor, time.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, tokenResponse{Token: token, ExpiresAt: exp.UTC()})
	return nil
}

type userTokenRequest struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Phone  string `json:"phone"`
	Name   string `json:"name"`
}

type userTokenResponse struct {
	UserToken string    `json:"user_token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// serveUserToken: POST /v1/user-tokens (secret key) {"user_id", "email"?,
// "phone"?, "name"?} → a user token valid for security.user_token_ttl (5
// minutes), exchanged at session creation for an identified visitor.
func (s *Server) serveUserToken(w http.ResponseWriter, r *http.Request, wr broker.WidgetRecord) error {
	var req userTokenRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	c := VisitorClaims{Subject: req.UserID, Email: req.Email, Phone: req.Phone, Name: req.Name, Method: "user_token"}
	if err := c.validate(); err != nil {
		return err
	}
	token, exp, err := s.tokens.mintUserToken(wr.ID, c, time.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, userTokenResponse{UserToken: token, ExpiresAt: exp.UTC()})
	return nil
}
