package configs

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
)

// Limits checked by Validate.
const (
	maxReplicas        = 5      // upper bound of nats.replicas
	maxMessageChars    = 100000 // upper bound of chat.max_message_chars
	minSigningKeyBytes = 32     // minimum length of security.signing_key
	maxEchoWorkers     = 64     // upper bound of echo_agent.workers
	maxWidgetOrigins   = 50     // upper bound of a widget's allowed_origins
	maxWidgetName      = 80     // maximum widget name length in characters
	maxWelcomeText     = 120    // maximum widget welcome_text length in characters
	minWidgetKey       = 4      // minimum widget key length
	maxWidgetKey       = 64     // maximum widget key length
	widgetKeyPrefix    = "pk_"  // prefix every widget key must have
)

// Problem is one validation failure.
type Problem struct {
	// Field is the YAML path of the offending setting, such as
	// "nats.prefix" or "widgets[0].allowed_origins[1]".
	Field string
	// Message says what is wrong.
	Message string
}

// ValidationError lists every problem Validate found. It wraps ErrInvalid.
type ValidationError struct {
	// Problems are in field order.
	Problems []Problem
}

// Error lists the problems, one "field.path: problem" line each.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalid.Error())
	b.WriteString(":")
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s", p.Field, p.Message)
	}
	return b.String()
}

// Unwrap returns ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// problems collects validation failures.
type problems []Problem

// add records a failure of field.
func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Validate checks every setting and returns a *ValidationError (wrapping
// ErrInvalid) listing all problems, or nil. It does not modify c.
func (c *Config) Validate() error {
	var ps problems
	ps.hostPort("listen", c.Listen, 0)
	if c.PublicURL != "" {
		if msg := checkPublicURL(c.PublicURL); msg != "" {
			ps.add("public_url", "%s", msg)
		}
	}
	if strings.TrimSpace(c.DataDir) == "" {
		ps.add("data_dir", "must not be empty")
	}
	ps.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	ps.oneOf("log.format", c.Log.Format, "auto", "json", "text")
	c.NATS.validate(&ps)

	ps.positive("agents.dispatch_timeout", c.Agents.DispatchTimeout)
	ps.positive("agents.dispatch_retry_max", c.Agents.DispatchRetryMax)
	ps.positive("agents.heartbeat_timeout", c.Agents.HeartbeatTimeout)
	// An agent event's whole body is bounded by agentbridge.MaxAppendBytes.
	ps.intRange("agents.max_delta_bytes", c.Agents.MaxDeltaBytes, 1, agentbridge.MaxAppendBytes/2)
	ps.intRange("agents.max_reply_bytes", c.Agents.MaxReplyBytes, 1, agentbridge.MaxAppendBytes/2)
	ps.intRange("agents.max_action_bytes", c.Agents.MaxActionBytes, 1, agentbridge.MaxAppendBytes/2)
	for agent, f := range c.Agents.AudioFormats {
		ps.token("agents.audio_formats key", agent)
		if !audioFormat(f) {
			ps.add("agents.audio_formats."+agent, `must be "opus" or "pcm_s16le/<16000|24000|48000>", got %q`, f)
		}
	}
	c.Agents.validateBargeIn(&ps)
	c.validateSpeech(&ps)

	ps.positive("sessions.ttl", c.Sessions.TTL)
	ps.positive("sessions.resume_window", c.Sessions.ResumeWindow)
	if d := c.Sessions.ChallengeTTL; d < 10*time.Second || d > time.Hour {
		ps.add("sessions.challenge_ttl", "must be between 10s and 1h, got %s", d)
	}

	ps.intRange("chat.max_message_chars", c.Chat.MaxMessageChars, 1, maxMessageChars)
	ps.positive("chat.reply_timeout", c.Chat.ReplyTimeout)
	ps.positive("chat.ping_idle", c.Chat.PingIdle)
	ps.positive("chat.ping_timeout", c.Chat.PingTimeout)

	if k := c.Security.SigningKey; k != "" && len(k) < minSigningKeyBytes {
		// Never echo the key, not even its length.
		ps.add("security.signing_key", "must be at least %d bytes when set (or empty to generate one)", minSigningKeyBytes)
	}

	ps.intRange("echo_agent.workers", c.EchoAgent.Workers, 0, maxEchoWorkers)
	ps.token("echo_agent.agent", c.EchoAgent.Agent)
	if as := c.EchoAgent.Assistant; as.BaseURL != "" {
		if msg := checkPublicURL(as.BaseURL); msg != "" {
			ps.add("echo_agent.assistant.base_url", "%s", msg)
		}
	}
	if f := c.EchoAgent.Assistant.APIKeyFile; f != "" {
		ps.readableFile("echo_agent.assistant.api_key_file", f)
	}

	c.Media.validate(&ps)
	c.Limits.validate(&ps)
	c.LiveKit.validate(&ps)
	c.Ops.validate(&ps)
	c.Sessions.validateSweep(&ps)
	c.Retention.validate(&ps)
	for i, w := range c.Widgets {
		if d, ok := w.MaxAge(); ok {
			if msg := c.Retention.CheckWidgetMaxAge(d); msg != "" {
				ps.add(fmt.Sprintf("widgets[%d].conversation_max_age", i), "%s", msg)
			}
		}
	}
	if _, err := ParsePrefixes(c.Security.TrustedProxies); err != nil {
		ps.add("security.trusted_proxies", "%v", err)
	}
	ps.positive("security.bootstrap_token_ttl", c.Security.BootstrapTokenTTL)
	ps.positive("security.user_token_ttl", c.Security.UserTokenTTL)
	if d := c.Security.ClockSkew; d < 0 || d > 10*time.Minute {
		ps.add("security.clock_skew", "must be between 0s and 10m, got %s", d)
	}
	validateWidgets(&ps, c.Widgets)
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// validate checks the NATS settings.
func (n *NATSConfig) validate(ps *problems) {
	if n.URL == "" {
		ps.hostPort("nats.listen", n.Listen, -1)
	} else {
		for i, u := range strings.Split(n.URL, ",") {
			if msg := checkNATSURL(strings.TrimSpace(u)); msg != "" {
				ps.add("nats.url", "entry %d: %s", i+1, msg)
			}
		}
	}
	ps.token("nats.prefix", n.Prefix)
	n.validateAuth(ps)
	n.validateOps(ps)
	ps.intRange("nats.max_consumers", n.MaxConsumers, 10, 10_000_000)
	switch {
	case n.MaxStoreBytes != 0 && n.URL != "":
		ps.add("nats.max_store_bytes", "only caps the embedded server; set it on the external NATS server instead")
	case n.MaxStoreBytes != 0 && n.MaxStoreBytes < 1<<20:
		ps.add("nats.max_store_bytes", "must be 0 (nats-server's default) or at least 1048576, got %d", n.MaxStoreBytes)
	}
}

// validateWidgets checks the widget list.
func validateWidgets(ps *problems, widgets []WidgetConfig) {
	if len(widgets) == 0 {
		ps.add("widgets", "at least one widget is required")
		return
	}
	keys := make(map[string]int, len(widgets))
	ids := make(map[string]int, len(widgets))
	for i := range widgets {
		w := &widgets[i]
		p := fmt.Sprintf("widgets[%d]", i)
		for _, pr := range w.Validate() {
			ps.add(p+"."+pr.Field, "%s", pr.Message)
		}
		if j, dup := keys[w.Key]; dup {
			ps.add(p+".public_key", "duplicate public_key %q (also widgets[%d])", w.Key, j)
		} else if j, dup := ids[w.ID]; dup && w.ID != "" {
			ps.add(p+".id", "duplicate id %q (also widgets[%d])", w.ID, j)
		}
		keys[w.Key] = i
		ids[w.ID] = i
	}
}

// hostPort checks that s is host:port with a numeric port in minPort..65535.
func (ps *problems) hostPort(field, s string, minPort int) {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		ps.add(field, "must be host:port such as 127.0.0.1:8080, got %q", s)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < minPort || n > 65535 {
		ps.add(field, "port must be a number in %d..65535, got %q", minPort, port)
	}
}

// oneOf checks that s is one of allowed.
func (ps *problems) oneOf(field, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	ps.add(field, "must be one of %s, got %q", strings.Join(allowed, ", "), s)
}

// positive checks that d > 0.
func (ps *problems) positive(field string, d time.Duration) {
	if d <= 0 {
		ps.add(field, "must be a positive duration such as 2s, got %s", d)
	}
}

// intRange checks that lo <= n <= hi.
func (ps *problems) intRange(field string, n, lo, hi int) {
	if n < lo || n > hi {
		ps.add(field, "must be between %d and %d, got %d", lo, hi, n)
	}
}

// token checks that s is a single NATS subject token.
func (ps *problems) token(field, s string) {
	if !isToken(s) {
		ps.add(field, "must be a non-empty name of letters, digits, '_' and '-', got %q", s)
	}
}

// isToken reports whether s is non-empty and only contains [A-Za-z0-9_-],
// which makes it usable as one NATS subject token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkWidgetKey returns what is wrong with a widget key, or "".
func checkWidgetKey(k string) string {
	switch {
	case !strings.HasPrefix(k, widgetKeyPrefix):
		return fmt.Sprintf("must start with %q, got %q", widgetKeyPrefix, k)
	case len(k) < minWidgetKey || len(k) > maxWidgetKey:
		return fmt.Sprintf("must be %d..%d characters long, got %d", minWidgetKey, maxWidgetKey, len(k))
	case !isToken(k):
		return fmt.Sprintf("must only contain letters, digits, '_' and '-', got %q", k)
	}
	return ""
}
