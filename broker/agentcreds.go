package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/configs"
)

// Agent credentials (protocol v2): an agent's NATS user may use only its
// own namespace P.agents.A. (see docs/PROTOCOL.md), so NATS itself keeps
// agent A out of agent B's conversations, the conversation log, the KV
// buckets and the JetStream API. The broker is the only writer of the log;
// an agent needs nothing but core NATS.

// AgentResponseExpiry is how long after the broker's dispatch request a
// worker may still answer it (NATS allow_responses): far above any
// sensible agents.dispatch_timeout (2 s by default), since a user JWT
// cannot follow the configuration. A late answer is refused by NATS; the
// broker stopped waiting for it long before.
const AgentResponseExpiry = time.Minute

// agentRolePrefix starts the role (and file) name of an agent's
// credentials.
const agentRolePrefix = "agent-"

// userPermissions returns the NATS permissions of role: none (everything
// allowed) for the broker and operator tools, agentPermissions for agents.
func userPermissions(role, prefix string) (jwt.Permissions, error) {
	if agent, ok := strings.CutPrefix(role, agentRolePrefix); ok {
		if err := checkAgentName(agent); err != nil {
			return jwt.Permissions{}, err
		}
		return agentPermissions(prefix, agent), nil
	}
	return jwt.Permissions{}, nil
}

// checkAgentName refuses an agent name that is not one NATS subject token:
// a dot or a wildcard in it would widen the agent's permissions.
func checkAgentName(agent string) error {
	if !agentbridge.ValidToken(agent) {
		return &ValidationError{Problems: []configs.Problem{{Field: "agent",
			Message: fmt.Sprintf("%q is not a valid agent name: 1 to 128 letters, digits, '_' or '-'", agent)}}}
	}
	return nil
}

// agentPermissions is everything a worker of agent may do on NATS under
// protocol v2 (docs/PROTOCOL.md, "Permissions"), and nothing else: no
// other agent's namespace, no P.conv.> (the log), no $JS.>/$KV.> (the
// JetStream API and buckets), no _INBOX.> (its requests' replies come to
// P.agents.A.inbox.>, the inbox prefix its connection must use).
//
//	publish:   P.agents.A.heartbeat, P.agents.A.append, P.agents.A.append.*,
//	           P.agents.A.read, P.agents.A.upload, P.agents.A.conv.*.out.audio
//	responses: one reply to each request delivered to it (the broker's
//	           dispatch), within AgentResponseExpiry
//	subscribe: P.agents.A.dispatch, P.agents.A.conv.*.event,
//	           P.agents.A.conv.*.in.audio, P.agents.A.inbox.>
func agentPermissions(prefix, agent string) jwt.Permissions {
	s := agentbridge.NewSubjects(prefix)
	var p jwt.Permissions
	p.Pub.Allow.Add(s.Heartbeat(agent), s.Append(agent), s.AppendTo(agent, "*"), s.Read(agent), s.Upload(agent), s.OutAudio(agent, "*"))
	p.Sub.Allow.Add(s.Dispatch(agent), s.ConvEvent(agent, "*"), s.InAudio(agent, "*"), s.Inbox(agent)+".>")
	p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: AgentResponseExpiry}
	return p
}

// AgentNATSPermissions is what a worker of one agent may do on NATS, in
// the form operators and the admin API show it.
type AgentNATSPermissions struct {
	// Agent is the agent name.
	Agent string `json:"agent"`
	// Namespace is the subject every allowed subject lies under
	// ("parley.agents.A.>").
	Namespace string `json:"subject_namespace"`
	// InboxPrefix is the inbox prefix the worker's connection must use.
	InboxPrefix string `json:"inbox_prefix"`
	// Publish and Subscribe are the allowed subjects.
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
	// AllowResponses is NATS's response permission: the worker may answer
	// each request delivered to it MaxMsgs times within Expires.
	AllowResponses struct {
		MaxMsgs int    `json:"max"`
		Expires string `json:"expires"`
	} `json:"allow_responses"`
}

// AgentPermissions returns the NATS permissions of agent's workers under
// subject prefix prefix (nats.prefix); ErrValidation for an agent name
// that is not one subject token.
func AgentPermissions(prefix, agent string) (AgentNATSPermissions, error) {
	if err := checkAgentName(agent); err != nil {
		return AgentNATSPermissions{}, err
	}
	s := agentbridge.NewSubjects(prefix)
	p := agentPermissions(s.Prefix, agent)
	out := AgentNATSPermissions{Agent: agent, Namespace: s.Agent(agent) + ".>", InboxPrefix: s.Inbox(agent),
		Publish: p.Pub.Allow, Subscribe: p.Sub.Allow}
	out.AllowResponses.MaxMsgs = p.Resp.MaxMsgs
	out.AllowResponses.Expires = p.Resp.Expires.String()
	return out, nil
}

// ServerConfig is the permissions block to give agent's user in an
// external nats-server's configuration (an entry of authorization.users
// or of an account's users), equivalent to the credentials Parley issues
// on its embedded server.
func (p AgentNATSPermissions) ServerConfig() string {
	list := func(subjects []string) string {
		q := make([]string, len(subjects))
		for i, s := range subjects {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Parley protocol v2: the NATS permissions of the workers of agent %q.\n", p.Agent)
	fmt.Fprintf(&b, "# The worker's connection must use the inbox prefix %s.\n", p.InboxPrefix)
	b.WriteString("permissions: {\n")
	fmt.Fprintf(&b, "  publish: { allow: %s }\n", list(p.Publish))
	fmt.Fprintf(&b, "  subscribe: { allow: %s }\n", list(p.Subscribe))
	fmt.Fprintf(&b, "  allow_responses: { max: %d, expires: %q }\n", p.AllowResponses.MaxMsgs, p.AllowResponses.Expires)
	b.WriteString("}\n")
	return b.String()
}

// EnsureAgentCreds returns the .creds file of agent in dataDir's auth
// directory, issuing it with the data directory's account key if it does
// not exist yet or carries other permissions (an older protocol, another
// prefix). A running `parley serve` accepts it at once (see natsauth.go).
// The directory must have been created by `parley serve`
// (ErrNoCredentials); agent must be one subject token (ErrValidation).
func EnsureAgentCreds(dataDir, prefix, agent string) (string, error) {
	if err := checkAgentName(agent); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(AuthDir(dataDir), accountSeedFile)); err != nil {
		return "", fmt.Errorf("%w in %s (start parley serve with this --data-dir first): %w", ErrNoCredentials, AuthDir(dataDir), unwrapPath(err))
	}
	a, err := loadNATSAuth(dataDir, false)
	if err != nil {
		return "", err
	}
	return a.ensureCreds(AgentRole(agent), agentbridge.NewSubjects(prefix).Prefix)
}

// AgentCredentials returns the text of the .creds file of agent's workers
// on the embedded NATS, issuing it if needed; the running server accepts
// it without a restart. ErrExternalNATS with an external NATS (configure
// its user with AgentPermissions there); ErrValidation for a bad name.
// The text is a secret: never log it.
func (b *Broker) AgentCredentials(agent string) ([]byte, error) {
	if err := checkAgentName(agent); err != nil {
		return nil, err
	}
	if b.auth == nil {
		return nil, ErrExternalNATS
	}
	p, err := b.auth.ensureCreds(AgentRole(agent), b.cfg.NATS.Prefix)
	if err != nil {
		return nil, err
	}
	creds, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("broker: nats credentials: %w", unwrapPath(err))
	}
	return creds, nil
}

// AgentPermissions returns the NATS permissions of agent's workers under
// this broker's nats.prefix.
func (b *Broker) AgentPermissions(agent string) (AgentNATSPermissions, error) {
	return AgentPermissions(b.cfg.NATS.Prefix, agent)
}
