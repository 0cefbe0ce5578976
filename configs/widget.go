package configs

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/publicsuffix"
)

// WidgetConfig is an embeddable widget: what the page shows, who may embed
// it, which agent answers and how visitors identify. The same type is the
// YAML seed, the record stored in JetStream KV and the admin API resource.
type WidgetConfig struct {
	// ID names the widget in the admin API and never changes; it defaults
	// to "wdg_" + the key without "pk_".
	ID string `yaml:"id" json:"id"`
	// Tenant owns the widget (default "default").
	Tenant string `yaml:"tenant" json:"tenant"`
	// Key is the public widget key: "pk_" + 1..61 of [A-Za-z0-9_-]. It
	// ships in page source; rotating it gives a new one.
	Key string `yaml:"public_key" json:"public_key"`
	// DisplayTitle is the widget's title, 1..80 characters (default: the
	// key).
	DisplayTitle string `yaml:"display_title" json:"display_title"`
	// LauncherLabel is the launcher button's label, 1..40 characters.
	LauncherLabel string `yaml:"launcher_label" json:"launcher_label"`
	// WelcomeText is shown when the widget opens, at most 120 characters.
	WelcomeText string `yaml:"welcome_text" json:"welcome_text"`
	// Mode is chat, voice or both.
	Mode string `yaml:"mode" json:"mode"`
	// Theme is auto, light or dark.
	Theme string `yaml:"theme" json:"theme"`
	// LauncherPosition is bottom-right, bottom-left, top-right, top-left or
	// embedded.
	LauncherPosition string `yaml:"launcher_position" json:"launcher_position"`
	// Colors are CSS hex colors (#rgb or #rrggbb).
	Colors WidgetColors `yaml:"colors" json:"colors"`
	// Translations maps a locale (BCP 47, e.g. "fr" or "pt-BR") to the
	// texts in that language.
	Translations map[string]WidgetText `yaml:"translations" json:"translations"`
	// AllowedOrigins lists at most 50 origins allowed to embed the widget:
	// an exact origin "scheme://host[:port]", "scheme://host:*" (any port),
	// or a registrable domain "example.com" admitting it and any subdomain
	// over http or https (computed with the public suffix list).
	AllowedOrigins []string `yaml:"allowed_origins" json:"allowed_origins"`
	// AllowDevOrigins also admits http(s)://localhost and 127.0.0.1 on any
	// port.
	AllowDevOrigins bool `yaml:"allow_dev_origins" json:"allow_dev_origins"`
	// Agent is the agent name conversations are dispatched to.
	Agent string `yaml:"agent" json:"agent"`
	// VoiceTransport carries the widget's voice: webrtc (Parley's own
	// media, the default) or livekit (a LiveKit SFU).
	VoiceTransport string `yaml:"voice_transport" json:"voice_transport"`
	// Voice tunes how voice legs hear the visitor: voice activity
	// detection and barge-in.
	Voice WidgetVoice `yaml:"voice" json:"voice"`
	// IdentityPolicy is guest (anonymous visitors only are expected),
	// identified (a verified identity is required) or both.
	IdentityPolicy string `yaml:"identity_policy" json:"identity_policy"`
	// IdentityResume says which verified identities may continue their
	// latest conversation by asking for it (resume_identity on POST
	// /v1/sessions) instead of with a resume token: off, expiring (the
	// default: identities that expire — a visitor JWT, a user token, a
	// bootstrap token's visitor) or any (user_hash too, whose value never
	// changes, so whoever once saw it could read the user's history).
	IdentityResume string `yaml:"identity_resume" json:"identity_resume"`
	// IdentitySecret verifies visitor identity: HS256 visitor JWTs and
	// user_hash = HMAC-SHA256(user_id). At least 32 bytes when set. It is a
	// secret: never logged, never returned by the API after creation.
	IdentitySecret string `yaml:"identity_secret" json:"-"`
	// NavMap lists the places an agent may guide a visitor to.
	NavMap []NavTarget `yaml:"nav_map" json:"nav_map"`
	// Triggers are the rules that open the widget proactively.
	Triggers []TriggerRule `yaml:"triggers" json:"triggers"`
	// Live reports whether the widget accepts sessions; nil means true.
	Live *bool `yaml:"live" json:"live,omitempty"`
	// Uploads reports whether visitors may attach files (POST
	// …/uploads, the widget's attach button); nil means true.
	Uploads *bool `yaml:"uploads" json:"uploads,omitempty"`
	// ConversationMaxAge overrides retention.conversation_max_age for this
	// widget's conversations: a Go duration such as "720h" (30 days),
	// at least 1s and at most retention.log_max_age. Empty: the
	// deployment default.
	ConversationMaxAge string `yaml:"conversation_max_age" json:"conversation_max_age,omitempty"`
	// MaxConversations caps this widget's live conversations (those an
	// agent worker holds); 0 means limits.conversations.per_widget.
	MaxConversations int `yaml:"max_conversations" json:"max_conversations,omitempty"`
}

// MaxAge returns the widget's own conversation max age, if it has a valid
// one.
func (w WidgetConfig) MaxAge() (time.Duration, bool) {
	if w.ConversationMaxAge == "" {
		return 0, false
	}
	d, err := time.ParseDuration(w.ConversationMaxAge)
	if err != nil || d < MinConversationMaxAge {
		return 0, false
	}
	return d, true
}

// WidgetColors are the widget's colors.
type WidgetColors struct {
	Primary string `yaml:"primary" json:"primary"`
	Accent  string `yaml:"accent" json:"accent"`
}

// WidgetText holds the translatable texts of a widget.
type WidgetText struct {
	DisplayTitle  string `yaml:"display_title" json:"display_title,omitempty"`
	LauncherLabel string `yaml:"launcher_label" json:"launcher_label,omitempty"`
	WelcomeText   string `yaml:"welcome_text" json:"welcome_text,omitempty"`
}

// NavTarget is one place of a widget's nav map.
type NavTarget struct {
	// ID is what an agent names in a navigate action.
	ID string `yaml:"id" json:"id"`
	// Path is a same-origin path ("/pricing").
	Path string `yaml:"path" json:"path"`
	// Selector optionally names an element to scroll to.
	Selector string `yaml:"selector" json:"selector,omitempty"`
	// Label is a human name, used for spoken or written directions.
	Label string `yaml:"label" json:"label"`
}

// TriggerRule is one proactive-open rule, evaluated by the widget.
type TriggerRule struct {
	ID string `yaml:"id" json:"id"`
	// Type is url_matches, dwell_seconds, scroll_depth, exit_intent,
	// idle_seconds or repeat_visitor.
	Type string `yaml:"type" json:"type"`
	// Pattern is the URL path pattern (url_matches; "*" wildcards).
	Pattern string `yaml:"pattern" json:"pattern,omitempty"`
	// Value is seconds (dwell/idle), percent (scroll_depth) or visits
	// (repeat_visitor).
	Value int `yaml:"value" json:"value,omitempty"`
	// Message is shown when the rule fires.
	Message string `yaml:"message" json:"message,omitempty"`
	// Priority orders rules that fire together (higher first).
	Priority int `yaml:"priority" json:"priority"`
	// Cooldown is "session" (once per session) or "days" (once per
	// CooldownDays).
	Cooldown     string `yaml:"cooldown" json:"cooldown"`
	CooldownDays int    `yaml:"cooldown_days" json:"cooldown_days,omitempty"`
}

// Widget limits.
const (
	maxWidgetTitle      = 80
	maxLauncherLabel    = 40
	maxNavTargets       = 100
	maxTriggers         = 50
	maxTranslations     = 50
	minIdentitySecret   = 32
	defaultTenant       = "default"
	defaultLauncherText = "Chat with us"
)

// The values of WidgetConfig.IdentityResume.
const (
	IdentityResumeOff      = "off"
	IdentityResumeExpiring = "expiring"
	IdentityResumeAny      = "any"
)

// Widget enumerations.
var (
	widgetModes      = []string{"chat", "voice", "both"}
	widgetThemes     = []string{"auto", "light", "dark"}
	widgetPositions  = []string{"bottom-right", "bottom-left", "top-right", "top-left", "embedded"}
	identityPolicies = []string{"guest", "identified", "both"}
	identityResumes  = []string{IdentityResumeOff, IdentityResumeExpiring, IdentityResumeAny}
	triggerTypes     = []string{"url_matches", "dwell_seconds", "scroll_depth", "exit_intent", "idle_seconds", "repeat_visitor"}
	cooldowns        = []string{"session", "days"}
	hexColor         = regexp.MustCompile(`^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$`)
	localeTag        = regexp.MustCompile(`^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$`)
)

// IsLive reports whether the widget accepts sessions (Live unset means true).
func (w WidgetConfig) IsLive() bool {
	return w.Live == nil || *w.Live
}

// AllowsUploads reports whether visitors may attach files.
func (w WidgetConfig) AllowsUploads() bool { return w.Uploads == nil || *w.Uploads }

// AllowsVoice reports whether the widget's mode includes voice.
func (w WidgetConfig) AllowsVoice() bool { return w.Mode == "voice" || w.Mode == "both" }

// AllowsChat reports whether the widget's mode includes chat.
func (w WidgetConfig) AllowsChat() bool { return w.Mode == "chat" || w.Mode == "both" }

// Normalize fills in defaults and canonical spellings: id and title from
// the key, tenant, labels, enumerations, lower-cased origins.
func (w *WidgetConfig) Normalize() {
	if w.ID == "" && strings.HasPrefix(w.Key, widgetKeyPrefix) {
		w.ID = "wdg_" + strings.TrimPrefix(w.Key, widgetKeyPrefix)
	}
	if w.Tenant == "" {
		w.Tenant = defaultTenant
	}
	if w.DisplayTitle == "" {
		w.DisplayTitle = w.Key
	}
	if w.LauncherLabel == "" {
		w.LauncherLabel = defaultLauncherText
	}
	if w.Agent == "" {
		w.Agent = DefaultAgent
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&w.Mode, "both")
	def(&w.Theme, "auto")
	def(&w.LauncherPosition, "bottom-right")
	def(&w.IdentityPolicy, "both")
	def(&w.IdentityResume, IdentityResumeExpiring)
	def(&w.VoiceTransport, "webrtc")
	w.Voice = w.Voice.WithDefaults()
	def(&w.Colors.Primary, "#4f46e5")
	def(&w.Colors.Accent, "#22c55e")
	for i, o := range w.AllowedOrigins {
		w.AllowedOrigins[i] = strings.ToLower(strings.TrimSpace(o))
	}
	if w.AllowedOrigins == nil {
		w.AllowedOrigins = []string{}
	}
	if w.Translations == nil {
		w.Translations = map[string]WidgetText{}
	}
	if w.NavMap == nil {
		w.NavMap = []NavTarget{}
	}
	if w.Triggers == nil {
		w.Triggers = []TriggerRule{}
	}
	for i := range w.Triggers {
		def(&w.Triggers[i].Cooldown, "session")
	}
}

// Validate returns every problem of a normalized widget, with field paths
// relative to the widget ("display_title", "allowed_origins[2]", …).
func (w *WidgetConfig) Validate() []Problem {
	var ps problems
	keyMsg := checkWidgetKey(w.Key)
	if keyMsg != "" {
		ps.add("public_key", "%s", keyMsg)
	}
	// An id derived from a bad key is not a second problem.
	if (w.ID != "" || keyMsg == "") && (!strings.HasPrefix(w.ID, "wdg_") || !isToken(w.ID) || len(w.ID) > 68) {
		ps.add("id", `must be "wdg_" followed by letters, digits, '_' or '-', got %q`, w.ID)
	}
	ps.token("tenant", w.Tenant)
	ps.runes("display_title", w.DisplayTitle, 1, maxWidgetTitle)
	ps.runes("launcher_label", w.LauncherLabel, 1, maxLauncherLabel)
	ps.runes("welcome_text", w.WelcomeText, 0, maxWelcomeText)
	ps.oneOf("mode", w.Mode, widgetModes...)
	ps.oneOf("theme", w.Theme, widgetThemes...)
	ps.oneOf("launcher_position", w.LauncherPosition, widgetPositions...)
	ps.oneOf("identity_policy", w.IdentityPolicy, identityPolicies...)
	ps.oneOf("identity_resume", w.IdentityResume, identityResumes...)
	ps.oneOf("voice_transport", w.VoiceTransport, "webrtc", "livekit")
	w.Voice.validate(&ps)
	for name, c := range map[string]string{"colors.primary": w.Colors.Primary, "colors.accent": w.Colors.Accent} {
		if !hexColor.MatchString(c) {
			ps.add(name, "must be a hex color such as #4f46e5, got %q", c)
		}
	}
	if len(w.Translations) > maxTranslations {
		ps.add("translations", "at most %d locales, got %d", maxTranslations, len(w.Translations))
	}
	locales := make([]string, 0, len(w.Translations))
	for l := range w.Translations {
		locales = append(locales, l)
	}
	slices.Sort(locales)
	for _, l := range locales {
		t := w.Translations[l]
		p := "translations." + l
		if !localeTag.MatchString(l) {
			ps.add(p, "%q is not a locale tag such as \"fr\" or \"pt-BR\"", l)
		}
		ps.runes(p+".display_title", t.DisplayTitle, 0, maxWidgetTitle)
		ps.runes(p+".launcher_label", t.LauncherLabel, 0, maxLauncherLabel)
		ps.runes(p+".welcome_text", t.WelcomeText, 0, maxWelcomeText)
	}
	if n := len(w.AllowedOrigins); n > maxWidgetOrigins {
		ps.add("allowed_origins", "at most %d entries, got %d", maxWidgetOrigins, n)
	}
	if len(w.AllowedOrigins) == 0 && !w.AllowDevOrigins {
		ps.add("allowed_origins", "list at least one origin or domain (or set allow_dev_origins for local development)")
	}
	for j, o := range w.AllowedOrigins {
		if msg := checkAllowedOrigin(o); msg != "" {
			ps.add(fmt.Sprintf("allowed_origins[%d]", j), "%q: %s", o, msg)
		}
	}
	ps.token("agent", w.Agent)
	if s := w.IdentitySecret; s != "" && len(s) < minIdentitySecret {
		ps.add("identity_secret", "must be at least %d bytes when set", minIdentitySecret)
	}
	if len(w.NavMap) > maxNavTargets {
		ps.add("nav_map", "at most %d targets, got %d", maxNavTargets, len(w.NavMap))
	}
	seen := map[string]bool{}
	for j, t := range w.NavMap {
		p := fmt.Sprintf("nav_map[%d]", j)
		if !isToken(t.ID) || len(t.ID) > 64 {
			ps.add(p+".id", "must be 1..64 letters, digits, '_' or '-', got %q", t.ID)
		} else if seen[t.ID] {
			ps.add(p+".id", "duplicate id %q", t.ID)
		}
		seen[t.ID] = true
		if !strings.HasPrefix(t.Path, "/") || strings.HasPrefix(t.Path, "//") || strings.ContainsAny(t.Path, " \\") || len(t.Path) > 2048 {
			ps.add(p+".path", "must be a same-origin path starting with one '/', got %q", t.Path)
		}
		ps.runes(p+".label", t.Label, 1, 80)
		ps.runes(p+".selector", t.Selector, 0, 256)
	}
	ps.intRange("max_conversations", w.MaxConversations, 0, 10_000_000)
	if w.ConversationMaxAge != "" {
		if d, err := time.ParseDuration(w.ConversationMaxAge); err != nil || d < MinConversationMaxAge {
			ps.add("conversation_max_age", `must be a duration of at least %s such as "720h", got %q`, MinConversationMaxAge, w.ConversationMaxAge)
		}
	}
	if len(w.Triggers) > maxTriggers {
		ps.add("triggers", "at most %d rules, got %d", maxTriggers, len(w.Triggers))
	}
	for j, t := range w.Triggers {
		p := fmt.Sprintf("triggers[%d]", j)
		ps.oneOf(p+".type", t.Type, triggerTypes...)
		ps.oneOf(p+".cooldown", t.Cooldown, cooldowns...)
		ps.runes(p+".message", t.Message, 0, maxWelcomeText)
		switch t.Type {
		case "url_matches":
			ps.runes(p+".pattern", t.Pattern, 1, 512)
		case "dwell_seconds", "idle_seconds":
			ps.intRange(p+".value", t.Value, 1, 3600)
		case "scroll_depth":
			ps.intRange(p+".value", t.Value, 1, 100)
		case "repeat_visitor":
			ps.intRange(p+".value", t.Value, 1, 1000)
		}
		if t.Cooldown == "days" {
			ps.intRange(p+".cooldown_days", t.CooldownDays, 1, 365)
		}
	}
	return ps
}

// runes checks that s has lo..hi characters.
func (ps *problems) runes(field, s string, lo, hi int) {
	if n := utf8.RuneCountInString(s); n < lo || n > hi {
		if lo == 0 {
			ps.add(field, "must be at most %d characters, got %d", hi, n)
			return
		}
		ps.add(field, "must be %d..%d characters, got %d", lo, hi, n)
	}
}

// IsDomainEntry reports whether an allowed_origins entry is a registrable
// domain (no scheme) rather than an origin.
func IsDomainEntry(entry string) bool { return !strings.Contains(entry, "://") }

// checkAllowedOrigin returns what is wrong with an allowed_origins entry.
func checkAllowedOrigin(s string) string {
	if !IsDomainEntry(s) {
		return checkOrigin(s)
	}
	if s == "" || strings.ContainsAny(s, "/:?#@* ") || net.ParseIP(s) != nil {
		return `want an origin "https://host[:port]" or a registrable domain such as "example.com"`
	}
	etld1, err := publicsuffix.EffectiveTLDPlusOne(s)
	switch {
	case err != nil:
		return "not a registrable domain: " + err.Error()
	case etld1 != s:
		return fmt.Sprintf("not a registrable domain (that would be %q); for one host use an origin such as \"https://%s\"", etld1, s)
	}
	return ""
}
