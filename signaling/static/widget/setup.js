// setup.js runs first. It reads the widget's <script> tag and stops the
// whole script right here when the widget cannot run (a second copy on the
// page, no data-widget-key), before any other part has done anything.
//
// It owns what every part shares in the one function the server wraps the
// parts in (signaling/widgetjs.go): the tag's settings (backend, language,
// identity), the page's storage, the widget's state `st`, and the events a
// page subscribes to with Parley.on (emit, reportError).

// ---- The script tag ---------------------------------------------------
const script = document.currentScript ||
  [...document.querySelectorAll("script[src]")].find((s) => /\/widget\.js(\?|#|$)/.test(s.src));
const attrs = (script && script.dataset) || {};
const events = {}; // event name -> Set of handlers

if (window.Parley && window.Parley._loaded) {
  console.warn("[parley] widget.js is included more than once on this page; only the first copy runs.");
  return;
}
const widgetKey = (attrs.widgetKey || "").trim();
if (!widgetKey) {
  console.error('[parley] The widget is not shown: its <script> tag has no data-widget-key attribute. ' +
    'Add data-widget-key="pk_…" (the embed_snippet of your widget in the admin API).');
  // Host code calling window.Parley must not break: every method is a no-op.
  const nop = () => false;
  window.Parley = Object.freeze({ _loaded: true, open: nop, close: nop, identify: nop, onNavigate: nop,
    navigate: nop, on: () => () => {}, off: nop });
  return;
}

const scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
const backend = (attrs.backendUrl || scriptOrigin).replace(/\/+$/, "");
const language = attrs.language || navigator.language || "en";
const spaOptIn = attrs.spa !== undefined && attrs.spa !== "false";
let identity = { visitorToken: attrs.visitorToken || "", userId: attrs.userId || "", userHash: attrs.userHash || "" };

// ---- Storage (may be unavailable: privacy modes, sandboxed frames) -----
const K = {
  resume: "parley.resume." + widgetKey, // the latest resume token (sessionStorage)
  state: "parley.state." + widgetKey,   // {conv, seq, open, nav} (sessionStorage)
  visits: "parley.visits." + widgetKey, // visit count (localStorage)
  visit: "parley.visit." + widgetKey,   // this browser session was counted (sessionStorage)
  trigger: (id) => "parley.trigger." + widgetKey + "." + id,
};
function sget(area, k) { try { return window[area].getItem(k); } catch (_) { return null; } }
function sset(area, k, v) { try { window[area].setItem(k, v); } catch (_) { /* storage off */ } }
function sdel(area, k) { try { window[area].removeItem(k); } catch (_) { /* storage off */ } }
function loadState() { try { return JSON.parse(sget("sessionStorage", K.state) || "{}") || {}; } catch (_) { return {}; } }
function saveState(patch) { sset("sessionStorage", K.state, JSON.stringify({ ...loadState(), ...patch })); }

// ---- State ------------------------------------------------------------
const st = {
  ready: false, failed: null, widget: null, challenge: "", challengeAt: 0,
  session: null, sessionP: null, ws: null, chat: "idle", retry: 0, retryTimer: 0,
  lastSeq: 0, rendered: false,
  outbox: [],            // messages not yet acked: {type, body, client_message_id, el, tries}
  resends: 0,            // messages sent again after a retryable refusal
  open: false, openWhenReady: null, userOpened: false, anchor: null,
  mode: "chat", agentState: "", call: null, callState: "idle", micError: "",
  replies: new Map(),    // agent message id -> line
  heard: new Map(),      // transcript message id -> line
  doneIds: new Set(),    // agent replies shown complete
  cutIds: new Set(),     // agent replies the visitor interrupted (barge-in)
  heardText: new Map(),  // interrupted reply id -> the words of it the visitor heard (Parley spoke it)
  voiceTurns: new Set(), // visitor turns Parley heard on a call and shown (message ids)
  hearing: false,        // the visitor is speaking on the call (speech frames)
  closed: false,         // an operator closed the conversation; no new one until the visitor asks
  unavailable: false,    // told AGENT_UNAVAILABLE, and no agent has answered since
  marks: new Set(),      // log positions of the call markers shown
  callStartedAt: 0,      // when the call of the last start marker started (ms), for its end's duration
  uploading: 0,          // uploads on their way
  micWarned: false,      // the console was told why voice can't work here
  freshCard: null,       // the capture pill of the current turn
  typingEl: null, claims: null, captured: new Set(), offered: new Set(),
  navHandler: null, errors: [], navigations: [], triggersFired: [],
  trickle: { patches: 0, candidates: 0, end: false }, // of the latest call
};
const reduceMotion = () => window.matchMedia && matchMedia("(prefers-reduced-motion: reduce)").matches;

function emit(name, detail) {
  for (const fn of [...(events[name] || [])]) {
    try { fn(detail); } catch (e) { console.error("[parley] a Parley.on(\"" + name + "\") handler threw:", e); }
  }
  try { window.dispatchEvent(new CustomEvent("parley:" + name, { detail })); } catch (_) { /* old browser */ }
}
function reportError(code, message, extra) {
  st.errors.push(code);
  emit("error", { code, message, ...(extra || {}) });
}
