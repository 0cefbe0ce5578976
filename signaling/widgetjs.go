package signaling

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strings"
)

// The embeddable widget: one <script src=".../widget.js" data-widget-key=…>
// on a site's page. It is plain JavaScript served from the binary, so a
// self-hosted Parley needs no CDN and no build step.
//
// It is written as a few source files in static/widget/ (the wire protocol
// apart from the UI, as Galène keeps protocol.js apart from galene.js) and
// served as one script: at start-up the parts are joined, in the order of
// widgetParts, inside one arrow-function IIFE in strict mode, so they share
// its scope and nothing leaks to window but what a part assigns there
// (window.Parley). A part is not a script on its own: it uses names the
// others declare, and setup.js may return early.

// The parts, one variable each so a missing file fails the build.
var (
	//go:embed static/widget/setup.js
	widgetSetupJS string
	//go:embed static/widget/texts.js
	widgetTextsJS string
	//go:embed static/widget/protocol.js
	widgetProtocolJS string
	//go:embed static/widget/conversation.js
	widgetConversationJS string
	//go:embed static/widget/attach.js
	widgetAttachJS string
	//go:embed static/widget/page.js
	widgetPageJS string
	//go:embed static/widget/voice.js
	widgetVoiceJS string
	//go:embed static/widget/ui.js
	widgetUIJS string
	//go:embed static/widget/main.js
	widgetMainJS string
)

// widgetPart is one source file of the widget.
type widgetPart struct {
	name string // file name in static/widget/
	src  string
}

// widgetParts lists the parts in the order they are joined. setup.js comes
// first: it reads the script tag and returns early when the widget cannot
// run, before any other part has done anything. main.js comes last: it
// starts the widget once every part's constants exist. The parts between
// only declare functions and constants, so their order among themselves
// does not matter; it is fixed so the joined bytes, and the ETag, are.
func widgetParts() []widgetPart {
	return []widgetPart{
		{"setup.js", widgetSetupJS},
		{"texts.js", widgetTextsJS},
		{"protocol.js", widgetProtocolJS},
		{"conversation.js", widgetConversationJS},
		{"attach.js", widgetAttachJS},
		{"page.js", widgetPageJS},
		{"voice.js", widgetVoiceJS},
		{"ui.js", widgetUIJS},
		{"main.js", widgetMainJS},
	}
}

// widgetJSHead opens the joined script: the notice a reader of the served
// file sees first, then the IIFE that holds every part.
const widgetJSHead = `/*!
 * Parley widget, served by Parley at /widget.js. Install with one tag:
 *
 *   <script src="https://parley.example.com/widget.js" data-widget-key="pk_…" defer></script>
 *
 * Plain JavaScript without dependencies or a build step. The UI lives in a
 * shadow DOM, so it neither inherits the page's CSS nor leaks its own.
 * Attributes, window.Parley and its events: docs/WIDGET.md.
 * Joined at start-up from Parley's signaling/static/widget/*.js.
 */
(() => {
"use strict";
`

// widgetJSTail closes the IIFE and runs it.
const widgetJSTail = "})();\n"

// joinWidgetJS joins parts into the one script served at /widget.js, each
// after a comment naming its file (to find a line in the sources), and
// returns it with its strong ETag: a hash of the joined bytes.
func joinWidgetJS(parts []widgetPart) (js []byte, etag string) {
	var b strings.Builder
	b.WriteString(widgetJSHead)
	for _, p := range parts {
		b.WriteString("\n// ---- " + p.name + " ----\n")
		b.WriteString(p.src)
		if !strings.HasSuffix(p.src, "\n") {
			b.WriteString("\n")
		}
	}
	b.WriteString(widgetJSTail)
	js = []byte(b.String())
	sum := sha256.Sum256(js)
	return js, `"` + hex.EncodeToString(sum[:12]) + `"`
}

// widgetJS is the joined script and widgetJSETag its strong validator,
// computed once at start-up and never changed (the parts are fixed at
// build time).
var widgetJS, widgetJSETag = joinWidgetJS(widgetParts())

// widgetJSMaxAge is how long browsers and CDNs may use the script without
// asking again: short, so an upgrade reaches every site within minutes;
// after that the ETag makes the check a 304.
const widgetJSMaxAge = "public, max-age=300"

// serveWidgetJS: GET /widget.js. Any site may load the script itself (it
// holds no secret); what a page may do with it is decided per widget by
// the API (origins, challenges).
func (s *Server) serveWidgetJS(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("Cache-Control", widgetJSMaxAge)
	h.Set("ETag", widgetJSETag)
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	if etagMatches(r.Header.Get("If-None-Match"), widgetJSETag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	_, _ = w.Write(widgetJS)
}

// etagMatches reports whether an If-None-Match header names etag (RFC 9110
// §13.1.2: weak comparison, "*" matches anything).
func etagMatches(header, etag string) bool {
	for v := range strings.SplitSeq(header, ",") {
		v = strings.TrimSpace(v)
		if v == "*" || strings.TrimPrefix(v, "W/") == etag {
			return true
		}
	}
	return false
}
