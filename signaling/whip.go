package signaling

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The HTTP side of WHIP (RFC 9725) around the voice handlers (voice.go):
// the leg's entity-tag and If-Match (§4.3.1), STUN/TURN servers as Link
// headers (§4.6), and OPTIONS on the endpoint (§4.2).

// acceptPost is the media type a WHIP endpoint takes (RFC 9725 §4.2; the
// Accept-Post header field of W3C LDP §7.1).
const acceptPost = contentSDP

// whipAllow is the Allow of the WHIP endpoint.
const whipAllow = "OPTIONS, POST"

// entityTag is a leg's ICE session tag (media.Leg.ICESession, base64url
// characters) as a strong entity-tag (RFC 9110 §8.8.3).
func entityTag(session string) string { return `"` + session + `"` }

// ifMatch is the If-Match of a request (RFC 9110 §13.1.1): any (*), or a
// list of entity-tags.
type ifMatch struct {
	any  bool
	tags []string // opaque-tags without their quotes; weak ones left out
}

// parseIfMatch reads If-Match; ok is false when the request has none. A
// weak tag never matches (If-Match compares strongly) and is left out; a
// bare token is taken as the tag it lacks quotes for, since some clients
// strip them.
func parseIfMatch(h http.Header) (m ifMatch, ok bool) {
	values := h.Values("If-Match")
	if len(values) == 0 {
		return m, false
	}
	for _, v := range values {
		for len(v) > 0 {
			v = strings.TrimLeft(v, " \t,")
			if v == "" {
				break
			}
			var tag string
			weak := strings.HasPrefix(v, "W/")
			if weak {
				v = v[2:]
			}
			switch {
			case v == "":
			case v[0] == '"':
				end := strings.IndexByte(v[1:], '"')
				if end < 0 {
					tag, v = v[1:], ""
				} else {
					tag, v = v[1:1+end], v[2+end:]
				}
			default:
				end := strings.IndexAny(v, " \t,")
				if end < 0 {
					end = len(v)
				}
				tag, v = v[:end], v[end:]
				if tag == "*" && !weak {
					m.any = true
					continue
				}
			}
			if !weak && tag != "" {
				m.tags = append(m.tags, tag)
			}
		}
	}
	return m, true
}

// matches reports whether the precondition holds for a leg whose current
// ICE session is session.
func (m ifMatch) matches(session string) bool {
	if m.any {
		return session != ""
	}
	for _, t := range m.tags {
		if t == session {
			return true
		}
	}
	return false
}

// setICEServerLinks adds one Link: <url>; rel="ice-server" per STUN and
// TURN URL (RFC 9725 §4.6, RFC 8288), with username, credential and
// credential-type="password" for TURN: the same servers as a session's
// ice_servers.
func setICEServerLinks(h http.Header, servers []iceServer) {
	for _, srv := range servers {
		for _, u := range srv.URLs {
			link := "<" + linkTarget(u) + `>; rel="ice-server"`
			if srv.Username != "" || srv.Credential != "" {
				link += "; username=" + quoteParam(srv.Username) + "; credential=" + quoteParam(srv.Credential) +
					`; credential-type="password"`
			}
			h.Add("Link", link)
		}
	}
}

// linkTarget escapes what may not stand between < and > in a Link header
// (RFC 8288 §3: a URI-Reference).
func linkTarget(u string) string {
	var b strings.Builder
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '"' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// quoteParam is a Link parameter value as an HTTP quoted-string.
func quoteParam(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// whipOptions puts Allow and Accept-Post on every OPTIONS of the WHIP
// endpoint, before the CORS layer answers a preflight from an allowed
// origin (with its own 204), so both answers carry them.
func whipOptions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.Header().Set("Allow", whipAllow)
			w.Header().Set("Accept-Post", acceptPost)
		}
		next.ServeHTTP(w, r)
	})
}

// serveVoiceOptions: OPTIONS /v1/sessions/{id}/webrtc that is not a CORS
// preflight from an allowed origin (those the CORS layer answers): 200
// with Allow and Accept-Post (RFC 9725 §4.2) and, unless it is a preflight,
// the STUN servers as Link headers (§4.6 advises against them on
// preflights). TURN servers come only to a caller that authenticates with
// the session's token, since their credentials are minted per session.
func (s *Server) serveVoiceOptions(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Access-Control-Request-Method") == "" && s.engine != nil {
		var servers []iceServer
		if sess, err := s.authSession(r, bearer(r)); err == nil {
			servers = s.iceServers(sess.ID, time.Now())
		} else if m := s.cfg.Media; len(m.STUNURLs) > 0 {
			servers = append(servers, iceServer{URLs: m.STUNURLs})
		}
		setICEServerLinks(w.Header(), servers)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// Bounds of endedLegs.
const (
	endedLegsMax = 4096
	endedLegsTTL = 2 * time.Minute
)

// endedLegs remembers the voice legs whose peer connection the visitor
// closed lately, so that the DELETE that follows answers 204: WHIP
// clients close their peer connection first and DELETE after (whip.js
// does), and the DTLS close_notify ends the leg before the DELETE arrives.
// Bounded by count (oldest out first) and age; safe for concurrent use.
type endedLegs struct {
	mu    sync.Mutex
	at    map[string]time.Time // "session id/leg id" → when it ended
	order []string             // keys, oldest first
}

// add notes that a session's leg ended at now.
func (e *endedLegs) add(sessionID, legID string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.at == nil {
		e.at = make(map[string]time.Time)
	}
	e.expire(now)
	for len(e.order) >= endedLegsMax {
		delete(e.at, e.order[0])
		e.order = e.order[1:]
	}
	k := sessionID + "/" + legID
	if _, ok := e.at[k]; !ok {
		e.order = append(e.order, k)
	}
	e.at[k] = now
}

// has reports whether a session's leg ended within endedLegsTTL of now.
func (e *endedLegs) has(sessionID, legID string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire(now)
	_, ok := e.at[sessionID+"/"+legID]
	return ok
}

// expire drops the entries older than endedLegsTTL; the caller holds mu.
func (e *endedLegs) expire(now time.Time) {
	n := 0
	for n < len(e.order) && now.Sub(e.at[e.order[n]]) > endedLegsTTL {
		delete(e.at, e.order[n])
		n++
	}
	e.order = e.order[n:]
}
