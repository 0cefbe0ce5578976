package configs

import (
	"fmt"
	"time"
)

// RetentionConfig bounds how long Parley keeps conversations. A
// conversation expires as a whole: when its last activity (the newest
// event in its log) is older than its widget's conversation_max_age (the
// widget's own value, or ConversationMaxAge), a broker-side sweeper
// deletes its log, records, leads and uploads. LogMaxAge is a hard
// backstop on the stream itself: events older than it go even if no
// sweeper runs, so it must be at least the longest conversation max age.
type RetentionConfig struct {
	// ConversationMaxAge is the deployment default: how long after its
	// last activity a conversation is kept (1s..LogMaxAge).
	ConversationMaxAge time.Duration `yaml:"conversation_max_age"`
	// LogMaxAge is the conversation stream's MaxAge (and the TTL of the
	// conversations and leads buckets and of uploads): no event, record or
	// file is kept longer than this after it was written. 0 means no
	// stream-level limit.
	LogMaxAge time.Duration `yaml:"log_max_age"`
	// UploadsMaxBytes caps the uploads object store; a full store refuses
	// new uploads (503 STORE_UNAVAILABLE), it never drops old ones. 0 means
	// no limit.
	UploadsMaxBytes int64 `yaml:"uploads_max_bytes"`
	// SweepInterval is how often each broker looks for expired
	// conversations.
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

// Retention defaults and bounds.
const (
	// DefaultConversationMaxAge is 90 days.
	DefaultConversationMaxAge = 90 * 24 * time.Hour
	// DefaultLogMaxAge is 400 days (9600h).
	DefaultLogMaxAge = 400 * 24 * time.Hour
	// MinConversationMaxAge is the shortest conversation_max_age (tests and
	// deployments that keep nothing once the visitor has gone).
	MinConversationMaxAge = time.Second
)

func defaultRetention() RetentionConfig {
	return RetentionConfig{
		ConversationMaxAge: DefaultConversationMaxAge,
		LogMaxAge:          DefaultLogMaxAge,
		SweepInterval:      10 * time.Minute,
	}
}

// MaxAgeLimit is the longest conversation_max_age a widget may have: the
// stream's LogMaxAge (0: no limit).
func (r RetentionConfig) MaxAgeLimit() time.Duration { return r.LogMaxAge }

// CheckWidgetMaxAge returns what is wrong with a widget's max age d (0:
// unset) under this deployment's limits, or "".
func (r RetentionConfig) CheckWidgetMaxAge(d time.Duration) string {
	if d != 0 && r.LogMaxAge > 0 && d > r.LogMaxAge {
		return fmt.Sprintf("must be at most retention.log_max_age (%s), got %s", r.LogMaxAge, d)
	}
	return ""
}

// validate checks the retention settings.
func (r *RetentionConfig) validate(ps *problems) {
	if r.ConversationMaxAge < MinConversationMaxAge {
		ps.add("retention.conversation_max_age", "must be at least %s, got %s", MinConversationMaxAge, r.ConversationMaxAge)
	}
	if r.LogMaxAge < 0 {
		ps.add("retention.log_max_age", "must not be negative (0: no limit), got %s", r.LogMaxAge)
	} else if r.LogMaxAge > 0 && r.LogMaxAge < r.ConversationMaxAge {
		ps.add("retention.log_max_age", "must be 0 or at least retention.conversation_max_age (%s), got %s", r.ConversationMaxAge, r.LogMaxAge)
	}
	if r.UploadsMaxBytes < 0 {
		ps.add("retention.uploads_max_bytes", "must not be negative (0: no limit), got %d", r.UploadsMaxBytes)
	}
	ps.positive("retention.sweep_interval", r.SweepInterval)
}

// validateSessionSweep checks the idle-sweeper settings of sessions.
func (s *SessionsConfig) validateSweep(ps *problems) {
	ps.positive("sessions.idle_timeout", s.IdleTimeout)
	ps.positive("sessions.sweep_interval", s.SweepInterval)
	if s.RecordGrace < 0 {
		ps.add("sessions.record_grace", "must not be negative, got %s", s.RecordGrace)
	}
}
