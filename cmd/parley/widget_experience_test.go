package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/signaling/signalingtest"
)

// The widget's experience around the happy path (issue 15, items 2–4), in
// headless Chromium: a page on an origin no widget allows, a call with no
// agent, call markers, attachments, and a page that is not a secure
// context. Chromium resolves two made-up names to 127.0.0.1
// (--host-resolver-rules), so the site is served, offline, on origins
// other than 127.0.0.1 and localhost, which Chromium treats as secure:
// http://parley-test.example:<port> (allowed by pk_xp, not a secure
// context) and http://refused.example:<port> (allowed by no widget).

const (
	xpKey        = "pk_xp"
	lonelyKey    = "pk_lonely"
	lonelyAgent  = "lonely" // no worker until the test starts one
	xpMaxUpload  = 8 << 10
	insecureHost = "parley-test.example"
	refusedHost  = "refused.example"
)

// xpSite is the site of TestWidgetExperience.
type xpSite struct {
	e      *env
	srv    *httptest.Server
	port   string // the site's port, on every name
	parley string // Parley's origin as the page sees it
	b      *browser
}

func startXPSite(t *testing.T) *xpSite {
	t.Helper()
	xp := siteWidget()
	xp.Key, xp.Triggers = xpKey, nil
	xp.AllowedOrigins = []string{"http://127.0.0.1:*", "http://" + insecureHost + ":*"}
	lonely := siteWidget()
	off := false
	lonely.Key, lonely.Agent, lonely.Triggers, lonely.Uploads = lonelyKey, lonelyAgent, nil, &off
	e := startEnv(t, voiceConfig, withWidget(xp), withWidget(lonely),
		func(c *configs.Config) { c.Limits.MaxUploadBytes = xpMaxUpload })
	signalingtest.StartWorker(t, e.agentConn(siteAgent), siteAgent, guideAgent)
	_, port, _ := strings.Cut(e.app.server.Addr(), ":")
	s := &xpSite{e: e, parley: "http://localhost:" + port}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data := map[string]string{"Title": "Acme", "Parley": s.parley, "Key": r.URL.Query().Get("key")}
		if r.URL.Query().Get("look") == "fr" {
			data["Language"], data["Theme"], data["Position"] = "fr-FR", "light", "bottom-right"
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = sitePage.Execute(w, data)
	}))
	t.Cleanup(s.srv.Close)
	_, s.port, _ = strings.Cut(strings.TrimPrefix(s.srv.URL, "http://"), ":")
	s.b = newBrowser(t, chromedp.Flag("host-resolver-rules",
		"MAP "+insecureHost+" 127.0.0.1, MAP "+refusedHost+" 127.0.0.1"))
	return s
}

// tab opens the site's page on host with the widget of key, after
// installing init (JavaScript run before the page's own scripts).
func (s *xpSite) tab(t *testing.T, host, query, init string) *browser {
	t.Helper()
	tab := s.b.newTab(t)
	if init != "" {
		tab.must("init script", chromedp.ActionFunc(func(ctx context.Context) error {
			_, err := page.AddScriptToEvaluateOnNewDocument(init).Do(ctx)
			return err
		}))
	}
	tab.must("open the page", chromedp.EmulateViewport(1000, 760),
		chromedp.Navigate("http://"+host+":"+s.port+"/?"+query))
	return tab
}

// chatTab opens a tab on the site's page on host with query, waits for
// the widget to be ready and opens its chat.
func (s *xpSite) chatTab(t *testing.T, host, query string) *browser {
	t.Helper()
	b := s.tab(t, host, query, "")
	b.waitReady()
	b.openChat()
	return b
}

func TestWidgetExperience(t *testing.T) {
	runOnSite(t, startXPSite, []siteSubtest[*xpSite]{
		{"OriginRefused", testOriginRefused},
		{"NoAgentCall", testNoAgentCall},
		{"CallMarkers", testCallMarkers},
		{"Attach", testAttach},
		{"InsecureMic", testInsecureMic},
	})
}

// testOriginRefused: a page on an origin no widget allows. The console
// says ORIGIN_NOT_ALLOWED with the page's origin and the widget key within
// a second of the navigation, the widget asks once (no retries), shows
// nothing to the visitor, and the server logs the refusal.
func testOriginRefused(t *testing.T, s *xpSite) {
	origin := "http://" + refusedHost + ":" + s.port
	b := s.tab(t, refusedHost, "key="+xpKey, `window.refused = null;
		addEventListener("parley:error", (e) => { if (!window.refused) window.refused = {at: performance.now(), detail: e.detail}; });`)
	b.waitJS(10*time.Second, "the widget's error event", `window.refused !== null`)
	var got struct {
		At     float64
		Detail struct{ Code, Origin, WidgetKey string }
	}
	b.mustEval(`({at: refused.at, detail: {code: refused.detail.code, origin: refused.detail.origin, widgetKey: refused.detail.widget_key}})`, &got)
	t.Logf("ORIGIN_NOT_ALLOWED in the page %.0f ms after the navigation started (bound 1000 ms)", got.At)
	if got.Detail.Code != "ORIGIN_NOT_ALLOWED" || got.Detail.Origin != origin || got.Detail.WidgetKey != xpKey {
		t.Fatalf("error event %+v", got.Detail)
	}
	if got.At > 1000 {
		t.Fatalf("the owner learned of the refusal %.0f ms after the navigation, want within 1 s", got.At)
	}
	line := "ORIGIN_NOT_ALLOWED: the widget with key " + xpKey + " does not allow this page's origin " + origin
	agenttest.Poll(t, 5*time.Second, "the console line", func() bool { return b.consoleHas(line) })
	// Nothing for the visitor to click that would not work.
	var hosts int
	b.mustEval(`document.querySelectorAll("[data-parley-widget]").length`, &hosts)
	if hosts != 0 {
		t.Fatalf("%d widget elements on the refused page", hosts)
	}
	// The page's own "Talk to us" button: Parley.open() says no.
	b.must("click the page's button", chromedp.Click("#cta", chromedp.ByID))
	b.waitJS(5*time.Second, "Parley.open() to refuse", `window.ctaOpened === false`)
	if !b.consoleHas("[parley] Parley.open() ignored: the widget is not shown (ORIGIN_NOT_ALLOWED") {
		t.Fatal("no console line for the refused open()")
	}
	// No retry storm: one resolve, however long we look (the old widget
	// retried at 2, 4 and 8 s).
	resolves := func() int {
		return strings.Count(s.e.logs.String(), `"method":"POST","path":"/v1/widget/resolve","status":403`)
	}
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := resolves(); n > 1 {
			t.Fatalf("%d resolve requests from the refused page, want 1", n)
		}
		b.mustEval(`true`, nil) // paces the loop on a round trip to the page
	}
	var entries int
	b.mustEval(`performance.getEntriesByType("resource").filter((r) => r.name.includes("/v1/widget/resolve")).length`, &entries)
	t.Logf("resolve requests: %d seen by Parley, %d by the page, in %v", resolves(), entries, 2500*time.Millisecond)
	if entries != 1 {
		t.Fatalf("the page made %d resolve requests", entries)
	}
	if !strings.Contains(s.e.logs.String(), `"origin":"`+origin+`"`) {
		t.Fatal("the refusal is not in the server log")
	}
}

// silentMic replaces the microphone with silence (the agent hears no
// turns of its own; the turns here are the test's).
const silentMic = `navigator.mediaDevices.getUserMedia = async () => new AudioContext().createMediaStreamDestination().stream; true`

// testNoAgentCall: the widget's agent has no worker. A typed message gets
// the "nobody is available" note; a call says so on its bar (not a green
// "On a call"); a turn said on the call is kept. When a worker starts,
// the note goes, the bar says "On a call", and the kept turn is answered.
func testNoAgentCall(t *testing.T, s *xpSite) {
	e := s.e
	b := s.chatTab(t, "127.0.0.1", "key="+lonelyKey)
	sess := b.session()
	// This widget takes no attachments (uploads: false): no attach button.
	b.waitJS(5*time.Second, "no attach button", sq("button.attach")+`.hidden && `+sq("button.mic")+`.getClientRects().length > 0`)
	b.typeMessage("anyone there?")
	const nobody = "Nobody is available to answer right now. Your message is saved and will be answered as soon as someone is."
	b.waitJS(15*time.Second, "the chat's note", hasLine("note.unavailable", nobody))
	b.mustEval(silentMic, nil)
	b.click("button.mic")
	d := b.waitJS(15*time.Second, "the call bar to say nobody is available", widgetJS+`.call === "connected" && `+
		sq(".callbar")+`.dataset.state === "waiting" && `+sq(".callbar .state")+`.textContent === "Nobody is available right now" && `+
		sq(".callbar .cap-hint")+`.textContent === "Stay on the call or type: we'll answer as soon as someone is."`)
	t.Logf("call connected, bar says nobody is available (%v)", d.Round(time.Millisecond))
	var notes int
	b.mustEval(`Parley._debug.shadow().querySelectorAll(".note.unavailable").length`, &notes)
	if notes != 1 {
		t.Fatalf("%d nobody-available notes, want 1", notes)
	}
	b.viewportShot("widget-no-agent-call.png")
	// A turn on the call, as the speech pipeline reports one: stored with
	// no worker to hear it.
	v, ok := e.app.broker.Voice(sess.SessionID)
	if !ok {
		t.Fatal("no voice leg")
	}
	heardID, err := v.Heard(context.Background(), broker.VoiceTurn{Text: "where is my order", Engine: "test", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	b.waitJS(10*time.Second, "the turn in the page", fmt.Sprintf(`!!Parley._debug.shadow().querySelector(".msg.visitor.voice[data-id='%s']")`, heardID))

	// An agent comes.
	started := time.Now()
	signalingtest.StartWorker(t, e.agentConn(lonelyAgent), lonelyAgent, guideAgent)
	d = b.waitJS(20*time.Second, "the note gone and the bar on a call", `!Parley._debug.shadow().querySelector(".note.unavailable") && `+
		sq(".callbar")+`.dataset.state === "connected" && `+sq(".callbar .state")+`.textContent.startsWith("On a call") && `+
		sq(".callbar .cap-hint")+`.textContent === ""`)
	t.Logf("worker started → note gone, bar on a call: %v", time.Since(started).Round(time.Millisecond))
	b.waitJS(20*time.Second, "the kept turns answered", hasLine("agent", "echo: where is my order")+" && "+hasLine("agent", "echo: anyone there?"))
	hist := signalingtest.Transcript(e.History(session{ID: sess.SessionID, Token: b.token()}))
	joined := strings.Join(hist, "|")
	for _, want := range []string{"visitor: anyone there?", "visitor: where is my order", "agent: echo: where is my order"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("history %q lacks %q", hist, want)
		}
	}
	b.click(".totext")
	b.waitJS(10*time.Second, "the call ended", widgetJS+`.call === "ended"`)
}

// testCallMarkers: a call leaves "Call started HH:MM" and "Call ended
// (N s)" in the transcript, live and, after a reload, from the history,
// once each.
func testCallMarkers(t *testing.T, s *xpSite) {
	b := s.chatTab(t, "127.0.0.1", "key="+xpKey)
	b.typeMessage("before the call")
	b.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: before the call"))
	b.mustEval(silentMic, nil)
	b.click("button.mic")
	b.waitJS(15*time.Second, "the call", widgetJS+`.call === "connected"`)
	const marks = `[...Parley._debug.shadow().querySelectorAll(".log .note.callmark")].map((el) => el.className + "=" + el.textContent)`
	b.waitJS(10*time.Second, "the start marker", `(`+marks+`).length === 1 && /^Call started \d\d:\d\d/.test(`+sq(".note.call-started")+`.textContent)`)
	b.click(".totext")
	b.waitJS(10*time.Second, "the end marker", `(`+marks+`).length === 2 && /^Call ended \(\d+ s\)$/.test(`+sq(".note.call-ended")+`.textContent)`)
	var live []string
	b.mustEval(marks, &live)
	b.typeMessage("after the call")
	b.waitJS(10*time.Second, "the echo", hasLine("agent", "echo: after the call"))
	// Where they sit: between the turns before and after the call.
	const order = `[...Parley._debug.shadow().querySelectorAll(".log > .msg:not(.welcome), .log > .note.callmark")].map((el) => el.textContent)`
	var before []string
	b.mustEval(order, &before)
	b.must("reload", chromedp.Reload())
	b.waitReady()
	b.waitJS(15*time.Second, "the history", `(`+marks+`).length === 2 && `+hasLine("agent", "echo: after the call"))
	var after, reloaded []string
	b.mustEval(order, &after)
	b.mustEval(marks, &reloaded)
	t.Logf("markers live %q, after a reload %q", live, reloaded)
	if strings.Join(after, "|") != strings.Join(before, "|") {
		t.Fatalf("after the reload\n%q\nbefore\n%q", after, before)
	}
}

// testAttach: the composer's attach button sends a file (progress, then
// the line, acked, and the agent has it); a file over the limit is refused
// before it is sent, and one of a type the server does not take is
// refused by it (415), each said in the visitor's language.
func testAttach(t *testing.T, s *xpSite) {
	e := s.e
	b := s.chatTab(t, "127.0.0.1", "key="+xpKey)
	sess := b.session()
	b.waitJS(5*time.Second, "the attach button", sq("button.attach")+` && !`+sq("button.attach")+`.hidden && !`+sq("button.attach")+`.disabled
		&& `+sq("button.attach")+`.getAttribute("aria-label") === "Attach a file" && `+sq("input.file")+`.accept === "image/*,application/pdf,text/plain"`)
	// pick puts a file in the (hidden) file input, as the picker does.
	pick := func(name, typ, content string, size int) {
		t.Helper()
		b.mustEval(fmt.Sprintf(`(() => {
			const body = %q.length ? %q : new Uint8Array(%d).fill(1);
			const dt = new DataTransfer(); dt.items.add(new File([body], %q, {type: %q}));
			const input = Parley._debug.shadow().querySelector("input.file");
			input.files = dt.files; input.dispatchEvent(new Event("change")); return true; })()`, content, content, size, name, typ), nil)
	}
	pick("order-4411.txt", "text/plain", "Order 4411: two anvils, one dented.", 0)
	b.waitJS(15*time.Second, "the attachment sent and acked", `(() => {
		const el = Parley._debug.shadow().querySelector(".msg.visitor.attachment");
		return el && el.dataset.upload && el.dataset.upload.startsWith("upl_") && !el.classList.contains("pending") && !el.querySelector(".progress")
			&& el.querySelector(".body").textContent === "order-4411.txt"; })()`)
	b.waitJS(10*time.Second, "the agent's answer", hasLine("agent", "echo: order-4411.txt"))
	var uploads []agentbridge.Attachment
	agenttest.Poll(t, 5*time.Second, "the message with its upload in the log", func() bool {
		evs, err := e.app.broker.ReadLog(context.Background(), sess.ConversationID, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Type == agentbridge.EventUserMessage && ev.Text == "order-4411.txt" {
				uploads = ev.Attachments
			}
		}
		return len(uploads) == 1
	})
	if uploads[0].Name != "order-4411.txt" || !strings.HasPrefix(uploads[0].ContentType, "text/plain") {
		t.Fatalf("upload in the log: %+v", uploads[0])
	}
	// Too big: refused here, nothing sent.
	pick("scan.png", "image/png", "", xpMaxUpload+1)
	b.waitJS(5*time.Second, "the size refusal", `(() => {
		const el = [...Parley._debug.shadow().querySelectorAll(".msg.attachment.failed")].find((x) => x.querySelector(".body").textContent === "scan.png");
		return el && el.querySelector(".progress").textContent === "scan.png is too large to send (the limit is 8 KB)."; })()`)
	// A type the server does not take (decided by the content): 415.
	pick("tool.bin", "", "", 600)
	b.waitJS(10*time.Second, "the type refusal", `(() => {
		const el = [...Parley._debug.shadow().querySelectorAll(".msg.attachment.failed")].find((x) => x.querySelector(".body").textContent === "tool.bin");
		return el && el.querySelector(".progress").textContent === "tool.bin can't be sent: only images, PDF and plain text files are accepted."; })()`)
	if !strings.Contains(e.logs.String(), `"path":"/v1/sessions/`+sess.SessionID+`/uploads","status":415`) {
		t.Fatal("the server did not refuse the .bin with 415")
	}
	b.viewportShot("widget-attach.png")
	// After a reload, from the history: the same line, with its clip.
	b.must("reload", chromedp.Reload())
	b.waitReady()
	b.waitJS(15*time.Second, "the attachment in the history", `[...Parley._debug.shadow().querySelectorAll(".msg.visitor.attachment")]
		.some((el) => el.querySelector(".body").textContent === "order-4411.txt" && el.querySelector("svg.via").getAttribute("aria-label") === "Attachment")`)

	// In French.
	fr := s.chatTab(t, "127.0.0.1", "key="+xpKey+"&look=fr")
	fr.waitJS(5*time.Second, "the attach button in French", sq("button.attach")+`.getAttribute("aria-label") === "Joindre un fichier"`)
	fr.mustEval(fmt.Sprintf(`(() => {
		const dt = new DataTransfer(); dt.items.add(new File([new Uint8Array(%d)], "scan.png", {type: "image/png"}));
		const input = Parley._debug.shadow().querySelector("input.file");
		input.files = dt.files; input.dispatchEvent(new Event("change")); return true; })()`, xpMaxUpload+1), nil)
	fr.waitJS(5*time.Second, "the size refusal in French", `[...Parley._debug.shadow().querySelectorAll(".msg.attachment.failed .progress")]
		.some((x) => x.textContent === "scan.png est trop volumineux (la limite est de 8 KB).")`)
}

// testInsecureMic: on a page that is not a secure context the mic button
// says why voice is unavailable before anyone clicks it (aria and hover
// text), and a click says it in the log instead of failing later.
func testInsecureMic(t *testing.T, s *xpSite) {
	b := s.tab(t, insecureHost, "key="+xpKey, "")
	b.waitReady()
	var secure bool
	b.mustEval(`window.isSecureContext`, &secure)
	if secure {
		t.Fatalf("http://%s is a secure context: the test proves nothing", insecureHost)
	}
	b.openChat()
	const said = "Voice calls need a secure (https) page. You can type instead."
	b.waitJS(5*time.Second, "the mic button's explanation", sq("button.mic")+` && !`+sq("button.mic")+`.hidden
		&& `+sq("button.mic")+`.getAttribute("aria-disabled") === "true" && `+sq("button.mic")+`.title === `+fmt.Sprintf("%q", said)+`
		&& `+sq("button.mic")+`.getAttribute("aria-label") === "Start a voice call — `+said+`"`)
	if !b.consoleHas("[parley:mic] Voice is unavailable on this page: Microphone API is not available on this page") {
		t.Fatal("no console line for the site's developer")
	}
	b.viewportShot("widget-insecure-mic.png")
	b.click("button.mic")
	b.waitJS(5*time.Second, "the note", widgetJS+`.micError === "insecure" && `+
		hasLine("mic-error", "Voice needs a secure (https) page. You can still ask questions by typing below."))
}
