package signaling

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// The admin API: "Authorization: Bearer ak_…" with scopes. A key limited
// to a tenant sees only that tenant's widgets, keys and data.

// adminHandler is the body of an admin or ops route: it runs with the
// verified admin key and either answers or returns an error, which admin
// writes through the error table (errors.go). It must not return an error
// after it has started to answer.
type adminHandler func(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error

// admin is the one gate of the admin and ops APIs: it authenticates the
// admin key, checks that it has scope, runs h, and maps what h returns to
// the wire.
func (s *Server) admin(scope string, h adminHandler) http.HandlerFunc {
	return gate(func(r *http.Request) (broker.KeyInfo, error) { return s.adminKey(r, scope) }, h)
}

// adminKey authenticates an admin key that has scope.
func (s *Server) adminKey(r *http.Request, scope string) (broker.KeyInfo, error) {
	key, err := s.keys.VerifyKey(r.Context(), bearer(r), broker.KeyAdmin)
	if err != nil {
		return key, err
	}
	if !key.HasScope(scope) {
		return key, fmt.Errorf("%w: API key missing required scope: %s", ErrMissingScope, scope)
	}
	return key, nil
}

// adminWidget returns the widget named in the path, if the key may see it.
func (s *Server) adminWidget(r *http.Request, key broker.KeyInfo) (broker.WidgetRecord, error) {
	w, err := s.widgets.WidgetByID(r.PathValue("id"))
	if err != nil || (key.Tenant != "" && w.Tenant != key.Tenant) {
		return broker.WidgetRecord{}, ErrWidgetNotFound
	}
	return w, nil
}

// adminWidgetView is a widget as the admin API shows it: everything but
// the identity secret (shown once, at creation).
type adminWidgetView struct {
	configs.WidgetConfig
	HasIdentitySecret bool      `json:"has_identity_secret"`
	PreviousKeyUntil  time.Time `json:"previous_key_valid_until,omitzero"`
	EmbedSnippet      string    `json:"embed_snippet"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

func (s *Server) widgetView(w broker.WidgetRecord) adminWidgetView {
	v := adminWidgetView{WidgetConfig: w.WidgetConfig, HasIdentitySecret: w.Secret != "",
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt}
	if !w.PreviousKeyUntil.IsZero() && time.Now().Before(w.PreviousKeyUntil) {
		v.PreviousKeyUntil = w.PreviousKeyUntil
	}
	v.EmbedSnippet = `<script src="` + s.publicBase() + `/widget.js" data-widget-key="` + w.Key + `" defer></script>`
	return v
}

// publicBase is the URL pages load Parley from.
func (s *Server) publicBase() string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	return "http://" + s.cfg.Listen
}

func (s *Server) serveAdminListWidgets(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	out := []adminWidgetView{}
	for _, wr := range s.widgets.ListWidgets(key.Tenant) {
		out = append(out, s.widgetView(wr))
	}
	writeJSON(w, http.StatusOK, map[string]any{"widgets": out})
	return nil
}

type createdWidget struct {
	adminWidgetView
	IdentitySecret string `json:"identity_secret"`
}

func (s *Server) serveAdminCreateWidget(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	var wc configs.WidgetConfig
	if err := decodeJSON(w, r, &wc); err != nil {
		return err
	}
	if key.Tenant != "" {
		if wc.Tenant != "" && wc.Tenant != key.Tenant {
			return fmt.Errorf("%w: this key may only create widgets of tenant %q", ErrMissingScope, key.Tenant)
		}
		wc.Tenant = key.Tenant
	}
	wc.Key, wc.IdentitySecret = "", "" // generated
	rec, err := s.widgets.CreateWidget(r.Context(), wc, true)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/admin/widgets/"+rec.ID)
	writeJSON(w, http.StatusCreated, createdWidget{adminWidgetView: s.widgetView(rec), IdentitySecret: rec.Secret})
	return nil
}

func (s *Server) serveAdminGetWidget(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	wr, err := s.adminWidget(r, key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.widgetView(wr))
	return nil
}

func (s *Server) serveAdminUpdateWidget(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	cur, err := s.adminWidget(r, key)
	if err != nil {
		return err
	}
	// A widget as GET shows it can be sent back: the read-only fields
	// are accepted when they hold the stored values, and refused when
	// they differ (they cannot be changed here).
	var req struct {
		configs.WidgetConfig
		HasIdentitySecret     *bool      `json:"has_identity_secret"`
		PreviousKeyValidUntil *time.Time `json:"previous_key_valid_until"`
		EmbedSnippet          *string    `json:"embed_snippet"`
		CreatedAt             *time.Time `json:"created_at"`
		UpdatedAt             *time.Time `json:"updated_at"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	var ro []configs.Problem
	refuse := func(field, msg string) { ro = append(ro, configs.Problem{Field: field, Message: "read-only: " + msg}) }
	if req.ID != "" && req.ID != cur.ID {
		refuse("id", fmt.Sprintf("the widget's id is %q and never changes", cur.ID))
	}
	if req.Key != "" && req.Key != cur.Key {
		refuse("public_key", "the widget's public key changes only by rotate-key")
	}
	if p := req.HasIdentitySecret; p != nil && *p != (cur.Secret != "") {
		refuse("has_identity_secret", "the identity secret is set only when the widget is created")
	}
	if p := req.PreviousKeyValidUntil; p != nil && !p.Equal(cur.PreviousKeyUntil) {
		refuse("previous_key_valid_until", "set by rotate-key")
	}
	if p := req.EmbedSnippet; p != nil && *p != s.widgetView(cur).EmbedSnippet {
		refuse("embed_snippet", "derived from the public key and the server's public_url")
	}
	if p := req.CreatedAt; p != nil && !p.Equal(cur.CreatedAt) {
		refuse("created_at", "set when the widget was created")
	}
	if p := req.UpdatedAt; p != nil && !p.Equal(cur.UpdatedAt) {
		refuse("updated_at", "the widget was changed after this copy was read; read it again")
	}
	if len(ro) > 0 {
		return &broker.ValidationError{Problems: ro}
	}
	wc := req.WidgetConfig
	if wc.Tenant == "" || key.Tenant != "" {
		wc.Tenant = cur.Tenant // a tenant key cannot move a widget out
	}
	rec, err := s.widgets.UpdateWidget(r.Context(), cur.ID, wc)
	if err != nil {
		return adminErr(err)
	}
	writeJSON(w, http.StatusOK, s.widgetView(rec))
	return nil
}

func (s *Server) serveAdminDeleteWidget(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	cur, err := s.adminWidget(r, key)
	if err != nil {
		return err
	}
	if err := s.widgets.DeleteWidget(r.Context(), cur.ID); err != nil {
		return adminErr(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type rotateRequest struct {
	GraceSeconds int `json:"grace_seconds"`
}

type rotateResponse struct {
	PublicKey             string    `json:"public_key"`
	PreviousKeyValidUntil time.Time `json:"previous_key_valid_until,omitzero"`
	EmbedSnippet          string    `json:"embed_snippet"`
}

// serveAdminRotateKey: POST /v1/admin/widgets/{id}/rotate-key
// {"grace_seconds": N}: a new public key; the old one stops at once, or
// after the grace period (at most a day).
func (s *Server) serveAdminRotateKey(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	cur, err := s.adminWidget(r, key)
	if err != nil {
		return err
	}
	var req rotateRequest
	if err := decodeOptionalJSON(w, r, &req); err != nil {
		return err
	}
	if req.GraceSeconds < 0 || req.GraceSeconds > 86400 {
		return &broker.ValidationError{Problems: []configs.Problem{{Field: "grace_seconds", Message: "must be between 0 and 86400"}}}
	}
	rec, err := s.widgets.RotateWidgetKey(r.Context(), cur.ID, time.Duration(req.GraceSeconds)*time.Second)
	if err != nil {
		return adminErr(err)
	}
	v := s.widgetView(rec)
	writeJSON(w, http.StatusOK, rotateResponse{PublicKey: rec.Key, PreviousKeyValidUntil: v.PreviousKeyUntil, EmbedSnippet: v.EmbedSnippet})
	return nil
}

type readinessCheck struct {
	Passed  bool           `json:"passed"`
	Reason  *string        `json:"reason"`
	Details map[string]any `json:"details"`
}

type readinessResponse struct {
	Ready        bool                      `json:"ready"`
	FailedChecks []string                  `json:"failed_checks"`
	Checks       map[string]readinessCheck `json:"checks"`
}

// serveAdminReadiness: GET /v1/admin/widgets/{id}/readiness — whether the
// widget is ready to embed, and which checks fail.
func (s *Server) serveAdminReadiness(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	wr, err := s.adminWidget(r, key)
	if err != nil {
		return err
	}
	checks := map[string]readinessCheck{}
	check := func(name string, ok bool, reason string, details map[string]any) {
		c := readinessCheck{Passed: ok, Details: details}
		if details == nil {
			c.Details = map[string]any{}
		}
		if !ok {
			c.Reason = &reason
		}
		checks[name] = c
	}
	prod := 0
	for _, o := range wr.AllowedOrigins {
		if u, ok := parseOrigin(o); !ok || !isDevHost(u.host) {
			prod++
		}
	}
	check("widget_live", wr.IsLive(), "the widget is not live", nil)
	check("allowed_origins_configured", prod > 0, "no production origin or domain in allowed_origins",
		map[string]any{"allowed_origins": len(wr.AllowedOrigins), "allow_dev_origins": wr.AllowDevOrigins})
	workers := s.agents.AliveWorkers(wr.Agent)
	check("agent_available", workers > 0, "no worker of agent "+strconv.Quote(wr.Agent)+" is running",
		map[string]any{"agent": wr.Agent, "workers": workers})
	keys, _ := s.keys.ListKeys(r.Context(), "")
	secretKeys := 0
	for _, k := range keys {
		if k.WidgetID == wr.ID && !k.Disabled {
			secretKeys++
		}
	}
	identityOK := wr.IdentityPolicy != "identified" || wr.Secret != "" || secretKeys > 0
	check("identity_configured", identityOK, "identity policy is identified but there is no identity secret or secret key",
		map[string]any{"identity_policy": wr.IdentityPolicy, "has_identity_secret": wr.Secret != "", "secret_keys": secretKeys})
	check("voice_available", !wr.AllowsVoice() || s.engine != nil, "the widget offers voice but this server has no media engine",
		map[string]any{"mode": wr.Mode})
	failed := []string{}
	for name, c := range checks {
		if !c.Passed {
			failed = append(failed, name)
		}
	}
	slices.Sort(failed)
	writeJSON(w, http.StatusOK, readinessResponse{Ready: len(failed) == 0, FailedChecks: failed, Checks: checks})
	return nil
}

type createKeyRequest struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	Tenant string   `json:"tenant"`
}

type createdKey struct {
	Key  string         `json:"key"`
	Info broker.KeyInfo `json:"info"`
}

// serveAdminCreateSecretKey: POST /v1/admin/widgets/{id}/secret-keys — a
// secret key for the widget's server, shown once.
func (s *Server) serveAdminCreateSecretKey(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	wr, err := s.adminWidget(r, key)
	if err != nil {
		return err
	}
	var req createKeyRequest
	if err := decodeOptionalJSON(w, r, &req); err != nil {
		return err
	}
	secret, info, err := s.keys.CreateSecretKey(r.Context(), wr.ID, req.Name)
	if err != nil {
		return adminErr(err)
	}
	writeJSON(w, http.StatusCreated, createdKey{Key: secret, Info: info})
	return nil
}

// serveAdminCreateKey: POST /v1/admin/keys — an admin key, shown once; it
// can have no scope and no tenant its creator lacks.
func (s *Server) serveAdminCreateKey(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	var req createKeyRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	for _, sc := range req.Scopes {
		if !key.HasScope(sc) {
			return fmt.Errorf("%w: cannot grant %s, which this key does not have", ErrMissingScope, sc)
		}
	}
	if key.Tenant != "" {
		if req.Tenant != "" && req.Tenant != key.Tenant {
			return fmt.Errorf("%w: this key may only create keys of tenant %q", ErrMissingScope, key.Tenant)
		}
		req.Tenant = key.Tenant
	}
	secret, info, err := s.keys.CreateAdminKey(r.Context(), req.Tenant, req.Name, req.Scopes)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, createdKey{Key: secret, Info: info})
	return nil
}

func (s *Server) serveAdminListKeys(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	keys, err := s.keys.ListKeys(r.Context(), key.Tenant)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
	return nil
}

// serveAdminRevokeKey: DELETE /v1/admin/keys/{kid} — the key stops at once.
func (s *Server) serveAdminRevokeKey(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	target, err := s.keys.Key(r.Context(), r.PathValue("kid"))
	if err != nil || (key.Tenant != "" && target.Tenant != key.Tenant) {
		return ErrKeyNotFound
	}
	info, err := s.keys.RevokeKey(r.Context(), target.ID)
	if err != nil {
		return adminErr(err)
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

// agentCredentials is the answer of POST /v1/admin/agents/{agent}/credentials:
// the permissions, and the .creds text that carries them.
type agentCredentials struct {
	broker.AgentNATSPermissions
	Creds string `json:"creds"`
}

// serveAdminAgentCredentials: POST /v1/admin/agents/{agent}/credentials —
// the NATS credentials of the agent's workers on the embedded NATS,
// confined to the agent's own subjects (issued if needed; the same ones on
// every call while they are current). With an external NATS, 409
// EXTERNAL_NATS and the permission block to configure there. The
// credentials are a secret: never logged, never cached.
func (s *Server) serveAdminAgentCredentials(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	if key.Tenant != "" {
		// An agent serves the widgets of any tenant that names it.
		return fmt.Errorf("%w: agent credentials reach every conversation of the agent, whatever the tenant: use a key for all tenants", ErrMissingScope)
	}
	agent := r.PathValue("agent")
	perms, err := s.agents.AgentPermissions(agent)
	if err != nil {
		return err
	}
	creds, err := s.agents.AgentCredentials(agent)
	if errors.Is(err, broker.ErrExternalNATS) {
		writeErrorDetails(w, fmt.Errorf("%w: this deployment uses an external NATS, whose users Parley does not manage: give the NATS user of agent %q the permissions in details", err, agent),
			map[string]any{"permissions": perms, "nats_server_config": perms.ServerConfig()})
		return nil
	}
	if err != nil {
		s.log.Error("agent credentials could not be issued", "agent", agent, "err", err)
		return err
	}
	s.log.Info("agent NATS credentials handed out", "agent", agent, "key_id", key.ID)
	writeJSON(w, http.StatusOK, agentCredentials{AgentNATSPermissions: perms, Creds: string(creds)})
	return nil
}

// adminWidgetIDs lists the widgets a listing covers: ?widget=ID or all the
// key may see.
func (s *Server) adminWidgetIDs(r *http.Request, key broker.KeyInfo) ([]string, error) {
	if id := r.URL.Query().Get("widget"); id != "" {
		w, err := s.widgets.WidgetByID(id)
		if err != nil || (key.Tenant != "" && w.Tenant != key.Tenant) {
			return nil, ErrWidgetNotFound
		}
		return []string{id}, nil
	}
	var ids []string
	for _, w := range s.widgets.ListWidgets(key.Tenant) {
		ids = append(ids, w.ID)
	}
	return ids, nil
}

func listLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, fmt.Errorf("%w: limit must be an integer from 1 to 1000", broker.ErrValidation)
	}
	return n, nil
}

// serveAdminConversations: GET /v1/admin/conversations?widget=&limit=.
func (s *Server) serveAdminConversations(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	return serveAdminList(s, w, r, key, "conversations", s.records.ListConversations)
}

// serveAdminLeads: GET /v1/admin/leads?widget=&limit=.
func (s *Server) serveAdminLeads(w http.ResponseWriter, r *http.Request, key broker.KeyInfo) error {
	return serveAdminList(s, w, r, key, "leads", s.records.Leads)
}

// serveAdminList answers a list over the widgets the key may see
// (?widget= narrows them) and ?limit=, as {field: [...]}.
func serveAdminList[T any](s *Server, w http.ResponseWriter, r *http.Request, key broker.KeyInfo, field string,
	list func(ctx context.Context, widgetIDs []string, limit int) ([]T, error)) error {
	ids, err := s.adminWidgetIDs(r, key)
	if err != nil {
		return err
	}
	limit, err := listLimit(r)
	if err != nil {
		return err
	}
	items, err := list(r.Context(), ids, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{field: items})
	return nil
}

// adminErr maps "no such widget/key" to the admin API's 404s.
func adminErr(err error) error {
	switch {
	case errors.Is(err, broker.ErrUnknownWidget):
		return ErrWidgetNotFound
	case errors.Is(err, broker.ErrUnknownKey):
		return ErrKeyNotFound
	}
	return err
}
