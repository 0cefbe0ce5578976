// ui.js owns everything on screen, in a shadow DOM: the stylesheet, the
// launcher, the panel (header, call bar with captions, log, composer) and
// its controls, placing the panel next to what opened it, and the small
// functions the other parts draw with (addLine, addNote, showTyping,
// setStatus, caption, setCall, updateControls). Before build() ui is null,
// and those that may be called that early do nothing.

// ---- UI -------------------------------------------------------------------
let ui = null; // {host, root, shadow, …} once built

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}
const ICONS = {
  chat: "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z",
  mic: "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z",
  send: "M3 20.5 21 12 3 3.5 3 10l12 2-12 2z",
  close: "M6.4 5 5 6.4 10.6 12 5 17.6 6.4 19 12 13.4 17.6 19 19 17.6 13.4 12 19 6.4 17.6 5 12 10.6z",
  clip: "M16.5 6.5v10a4.5 4.5 0 0 1-9 0V5a3 3 0 0 1 6 0v10.5a1.5 1.5 0 0 1-3 0V6.5H9v9a3 3 0 0 0 6 0V5a4.5 4.5 0 0 0-9 0v11.5a6 6 0 0 0 12 0v-10h-1.5z",
  keyboard: "M4 6h16a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2zm1 3v2h2V9H5zm3 0v2h2V9H8zm3 0v2h2V9h-2zm3 0v2h2V9h-2zm3 0v2h2V9h-2zM7 13v2h10v-2H7z",
};
function icon(name, title, cls) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon" + (cls ? " " + cls : ""));
  if (title) {
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title);
    const t = document.createElementNS(ns, "title");
    t.textContent = title;
    svg.append(t);
  } else {
    svg.setAttribute("aria-hidden", "true");
  }
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

const CSS = `
:host { all: initial; }
.root { --p: #4f46e5; --on-p: #fff; --a: #22c55e; --bg: #fff; --fg: #111827; --muted: #6b7280; --line: #e5e7eb;
  --agent: #f3f4f6; --shadow: 0 12px 40px rgba(0,0,0,.18); --err: #b91c1c;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); color-scheme: light; }
.root[data-theme="dark"] { --bg: #111827; --fg: #f9fafb; --muted: #9ca3af; --line: #374151; --agent: #1f2937; --err: #f87171; color-scheme: dark; }
@media (prefers-color-scheme: dark) {
  .root[data-theme="auto"] { --bg: #111827; --fg: #f9fafb; --muted: #9ca3af; --line: #374151; --agent: #1f2937; --err: #f87171; color-scheme: dark; }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
button { font: inherit; cursor: pointer; }
:focus-visible { outline: 3px solid color-mix(in srgb, var(--p) 60%, transparent); outline-offset: 2px; }
.icon { width: 20px; height: 20px; fill: currentColor; flex: none; }
.launcher { position: fixed; z-index: 2147483000; display: flex; align-items: center; gap: 8px; border: 0; border-radius: 999px;
  padding: 12px 18px; background: var(--p); color: var(--on-p); box-shadow: var(--shadow); font-weight: 600; }
.launcher:hover { filter: brightness(1.08); }
.launcher .live { width: 9px; height: 9px; border-radius: 50%; background: #22c55e; box-shadow: 0 0 0 2px var(--on-p); }
.panel { position: fixed; z-index: 2147483001; width: min(380px, calc(100vw - 24px)); height: min(600px, calc(100vh - 110px));
  display: flex; flex-direction: column; background: var(--bg); color: var(--fg); border: 1px solid var(--line);
  border-radius: 16px; box-shadow: var(--shadow); overflow: hidden; }
.root[data-pos="bottom-right"] .launcher { right: 20px; bottom: 20px; }
.root[data-pos="bottom-right"] .panel { right: 20px; bottom: 84px; }
.root[data-pos="bottom-left"] .launcher { left: 20px; bottom: 20px; }
.root[data-pos="bottom-left"] .panel { left: 20px; bottom: 84px; }
.root[data-pos="top-right"] .launcher { right: 20px; top: 20px; }
.root[data-pos="top-right"] .panel { right: 20px; top: 84px; }
.root[data-pos="top-left"] .launcher { left: 20px; top: 20px; }
.root[data-pos="top-left"] .panel { left: 20px; top: 84px; }
.root[data-pos="embedded"] .panel { position: relative; width: 100%; height: 100%; min-height: 420px; box-shadow: none; z-index: auto; }
.root.anchored .panel { right: auto; bottom: auto; }
@media (prefers-reduced-motion: no-preference) {
  .panel:not([hidden]) { animation: pop .16s ease-out; }
  @keyframes pop { from { opacity: 0; transform: translateY(8px) scale(.98); } }
  .typing i { animation: blink 1.2s infinite both; }
  .typing i:nth-child(2) { animation-delay: .2s; } .typing i:nth-child(3) { animation-delay: .4s; }
  @keyframes blink { 0%, 80%, 100% { opacity: .25; } 40% { opacity: 1; } }
  .callbar .dot { transition: background .2s; }
  .callbar[data-hearing="true"] .dot { animation: hear 1s ease-in-out infinite alternate; }
  @keyframes hear { to { box-shadow: 0 0 0 7px color-mix(in srgb, #16a34a 15%, transparent); } }
}
header { display: flex; align-items: center; gap: 10px; padding: 14px 14px 12px 16px; background: var(--p); color: var(--on-p); }
header .titles { flex: 1; min-width: 0; }
header h2 { margin: 0; font-size: 16px; font-weight: 650; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
header .status { margin: 0; font-size: 12px; opacity: .85; }
.iconbtn { display: grid; place-items: center; width: 36px; height: 36px; border-radius: 10px; border: 0; background: transparent; color: inherit; }
.iconbtn:hover { background: color-mix(in srgb, currentColor 14%, transparent); }
.callbar { display: grid; grid-template-columns: auto 1fr auto; gap: 4px 10px; align-items: center; padding: 10px 14px;
  border-bottom: 1px solid var(--line); background: color-mix(in srgb, var(--a) 10%, var(--bg)); }
.callbar .dot { width: 10px; height: 10px; border-radius: 50%; background: var(--muted); }
.callbar[data-state="connected"] .dot { background: #16a34a; }
.callbar[data-state="connecting"] .dot, .callbar[data-state="reconnecting"] .dot { background: #d97706; }
.callbar[data-state="failed"] .dot { background: var(--err); }
.callbar[data-state="waiting"] .dot { background: #d97706; }
.note.callmark { display: flex; align-items: center; gap: 8px; align-self: stretch; max-width: none; font-size: 12px; }
.note.callmark::before, .note.callmark::after { content: ""; flex: 1; border-top: 1px solid var(--line); }
.msg.attachment .progress { display: block; font-size: 12px; opacity: .85; }
.composer .mic[aria-disabled="true"] { opacity: .4; cursor: not-allowed; }
.callbar[data-hearing="true"] .dot { box-shadow: 0 0 0 4px color-mix(in srgb, #16a34a 35%, transparent); }
.msg.interrupted .cut { display: block; margin-top: 2px; font-size: 12px; font-style: italic; color: var(--muted); }
.callbar .state { font-weight: 600; font-size: 13px; }
.callbar .captions { grid-column: 1 / -1; font-size: 13px; color: var(--muted); display: grid; gap: 2px; }
.callbar .captions p { margin: 0; overflow: hidden; display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; }
.callbar .captions p:empty { display: none; }
.totext { display: flex; align-items: center; gap: 6px; border: 1px solid var(--line); background: var(--bg); color: var(--fg);
  border-radius: 999px; padding: 5px 12px; font-size: 13px; }
.log { flex: 1; overflow-y: auto; padding: 14px; display: flex; flex-direction: column; gap: 8px; overscroll-behavior: contain; }
.msg { max-width: 85%; padding: 8px 12px; border-radius: 14px; white-space: pre-wrap; overflow-wrap: anywhere; }
.msg.visitor { align-self: flex-end; background: var(--p); color: var(--on-p); border-bottom-right-radius: 4px; }
.msg.agent { align-self: flex-start; background: var(--agent); border-bottom-left-radius: 4px; }
.msg.proactive { border: 1px solid var(--a); }
.msg.pending { opacity: .7; }
.msg.failed { outline: 2px solid var(--err); }
.msg.interim { opacity: .7; font-style: italic; }
.msg .via { width: 14px; height: 14px; vertical-align: -0.15em; margin-right: 5px; opacity: .85; }
.note { align-self: center; text-align: center; font-size: 13px; color: var(--muted); max-width: 92%; }
.note.error { color: var(--err); }
.note.closed { color: var(--fg); }
.note .newconv { font: inherit; color: var(--p); background: none; border: 0; padding: 0; text-decoration: underline; cursor: pointer; }
.note.directions { color: var(--fg); font-style: italic; }
.typing { align-self: flex-start; background: var(--agent); border-radius: 14px; padding: 10px 14px; display: flex; gap: 4px; }
.typing i { width: 7px; height: 7px; border-radius: 50%; background: var(--muted); display: block; }
.capture { align-self: stretch; border: 1px solid var(--line); border-radius: 12px; padding: 10px 12px; display: grid; gap: 8px; font-size: 14px; }
.capture p { margin: 0; }
.capture-field { display: grid; gap: 3px; }
.capture-field label { font-size: 12px; color: var(--muted); }
.capture input { font: inherit; padding: 7px 10px; border-radius: 8px; border: 1px solid var(--line); background: var(--bg); color: var(--fg); }
.capture input[aria-invalid="true"] { border-color: var(--err); }
.capture-actions { display: flex; gap: 8px; }
.capture-ok { border: 0; border-radius: 8px; padding: 6px 14px; background: var(--p); color: var(--on-p); }
.capture-no { border: 1px solid var(--line); border-radius: 8px; padding: 6px 12px; background: transparent; color: var(--fg); }
.capture-msg { color: var(--err); font-size: 13px; }
.capture-msg:empty { display: none; }
.capture.saved { color: var(--fg); border-color: var(--a); }
form.composer { display: flex; align-items: flex-end; gap: 6px; padding: 10px; border-top: 1px solid var(--line); }
textarea { flex: 1; resize: none; font: inherit; color: var(--fg); background: var(--bg); border: 1px solid var(--line);
  border-radius: 12px; padding: 8px 12px; max-height: 120px; min-height: 40px; }
textarea:focus { outline: 2px solid var(--p); outline-offset: 0; border-color: transparent; }
.composer .iconbtn { color: var(--p); width: 40px; height: 40px; }
.composer .mic[aria-pressed="true"] { background: var(--p); color: var(--on-p); }
.composer .iconbtn:disabled { opacity: .4; cursor: default; }
footer { text-align: center; font-size: 11px; color: var(--muted); padding: 0 0 8px; }
footer a { color: inherit; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

function contrastText(hex) {
  let s = (hex || "").replace("#", "");
  if (s.length === 3) s = s.split("").map((c) => c + c).join("");
  const n = parseInt(s, 16);
  if (Number.isNaN(n) || s.length !== 6) return "#fff";
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const L = 0.2126 * lin(n >> 16) + 0.7152 * lin((n >> 8) & 255) + 0.0722 * lin(n & 255);
  return L > 0.45 ? "#111827" : "#fff";
}

const logEl = () => ui.log;
const input = () => ui.input;
const audioEl = () => ui.audio;
const bodyOf = (el) => el.querySelector(".body");

function build() {
  const w = st.widget;
  let position = attrs.position || w.launcher_position || "bottom-right";
  let container = null;
  if (position === "embedded") {
    container = attrs.container ? findSelector(attrs.container) : null;
    if (!container) {
      console.error("[parley] data-position=\"embedded\" needs data-container with the selector of an element on the page" +
        (attrs.container ? " (" + attrs.container + " was not found)" : "") + "; showing the floating launcher instead.");
      position = "bottom-right";
    }
  }
  const theme = ["auto", "light", "dark"].includes(attrs.theme) ? attrs.theme : w.theme || "auto";
  const tx = texts();
  const host = h("div", { "data-parley-widget": widgetKey });
  const shadow = host.attachShadow({ mode: "open" });
  if ("adoptedStyleSheets" in shadow && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
    // Constructed stylesheets are not inline styles: they work under a
    // strict style-src Content-Security-Policy.
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    shadow.append(h("style", { text: CSS }));
  }
  const root = h("div", { class: "root", "data-theme": theme, "data-pos": position, lang: language });
  const primary = (w.colors && w.colors.primary) || "#4f46e5";
  root.style.setProperty("--p", primary);
  root.style.setProperty("--on-p", contrastText(primary));
  if (w.colors && w.colors.accent) root.style.setProperty("--a", w.colors.accent);

  const launcher = h("button", { class: "launcher", type: "button", "aria-expanded": "false", "aria-controls": "parley-panel",
    "aria-label": tx.launcher_label + " – " + T.open });
  const live = h("span", { class: "live", hidden: true, "aria-hidden": "true" });
  launcher.append(icon("chat"), h("span", { text: tx.launcher_label }), live);

  const title = h("h2", { id: "parley-title", text: tx.display_title });
  const status = h("p", { class: "status", role: "status", "aria-live": "polite" });
  const closeBtn = h("button", { class: "iconbtn close", type: "button", "aria-label": T.close, title: T.close });
  closeBtn.append(icon("close"));
  const header = h("header", {}, h("div", { class: "titles" }, title, status), position === "embedded" ? null : closeBtn);

  const callState = h("span", { class: "state" });
  const toText = h("button", { class: "totext", type: "button", "aria-label": T.endCall });
  toText.append(icon("keyboard"), h("span", { text: T.toText }));
  const capYou = h("p", { class: "cap-you" });
  const capAgent = h("p", { class: "cap-agent" });
  const capHint = h("p", { class: "cap-hint" });
  const callbar = h("div", { class: "callbar", role: "status", "aria-live": "polite", hidden: true },
    h("span", { class: "dot", "aria-hidden": "true" }), callState, toText, h("div", { class: "captions" }, capHint, capYou, capAgent));

  const log = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": T.conversation, tabindex: "0" });
  const textarea = h("textarea", { rows: "1", "aria-label": T.message, placeholder: T.placeholder,
    maxlength: String(w.max_message_chars || 4000), enterkeyhint: "send" });
  const mic = h("button", { class: "iconbtn mic", type: "button", "aria-pressed": "false", "aria-label": T.startCall, title: T.startCall, hidden: true });
  mic.append(icon("mic"));
  const sendBtn = h("button", { class: "iconbtn send", type: "submit", "aria-label": T.send, title: T.send });
  sendBtn.append(icon("send"));
  const attach = h("button", { class: "iconbtn attach", type: "button", "aria-label": T.attach, title: T.attach, hidden: true });
  attach.append(icon("clip"));
  const up = (w.uploads && w.uploads.types) || [];
  const file = h("input", { type: "file", class: "file", hidden: true, tabindex: "-1", "aria-hidden": "true",
    accept: up.join(",") });
  const composer = h("form", { class: "composer" }, attach, file, textarea, mic, sendBtn);
  const brand = h("a", { href: "https://github.com/parley-rtc/parley", target: "_blank", rel: "noopener noreferrer", text: "Parley" });
  const footer = h("footer", {}, T.poweredBy + " ", brand);
  const panel = h("section", { class: "panel", id: "parley-panel", role: position === "embedded" ? "region" : "dialog",
    "aria-modal": position === "embedded" ? null : "false", "aria-labelledby": "parley-title", hidden: position !== "embedded" },
  header, callbar, log, composer, footer);
  const audio = h("audio", { autoplay: true });
  root.append(panel, audio);
  if (position !== "embedded") root.append(launcher);
  shadow.append(root);
  (container || document.body).append(host);

  ui = { host, shadow, root, launcher, live, panel, status, closeBtn, callbar, callState, capYou, capAgent, capHint, toText,
    log, input: textarea, mic, sendBtn, attach, file, composer, audio, position };

  launcher.addEventListener("click", () => {
    if (st.open) closePanel("launcher");
    else { st.userOpened = true; openPanel({ source: "launcher", focus: true }); }
  });
  closeBtn.addEventListener("click", () => closePanel("button"));
  panel.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ui.position !== "embedded") { e.stopPropagation(); closePanel("escape"); }
  });
  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = textarea.value;
    if (!v.trim()) return;
    textarea.value = "";
    autosize();
    send(v);
  });
  let shiftEnter = false;
  textarea.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.isComposing) return;
    shiftEnter = e.shiftKey;
    if (!e.shiftKey) { e.preventDefault(); composer.requestSubmit(); }
  });
  // Enter sends; Shift+Enter is a new line (some input paths insert the
  // line break even when keydown was cancelled).
  textarea.addEventListener("beforeinput", (e) => {
    if ((e.inputType === "insertLineBreak" || e.inputType === "insertParagraph") && !shiftEnter) e.preventDefault();
  });
  const autosize = () => { textarea.style.height = "auto"; textarea.style.height = Math.min(textarea.scrollHeight + 2, 120) + "px"; };
  textarea.addEventListener("input", autosize);
  attach.addEventListener("click", () => file.click());
  file.addEventListener("change", () => {
    const files = [...file.files];
    file.value = "";
    for (const f of files) sendFile(f);
  });
  mic.addEventListener("click", () => {
    if (mic.getAttribute("aria-disabled") === "true" && !st.call) {
      // Said on the button already; clicking says it in the log too.
      micFailed(micPrecheck(), null);
      return;
    }
    if (st.call) switchToText();
    else startCall().catch((e) => console.warn("[parley:voice]", e));
  });
  toText.addEventListener("click", switchToText);
  if (position === "embedded") {
    st.open = true;
    ensureSession().catch(showError);
  }
  updateControls();
}

// placeNear puts the panel next to the element that opened it.
function placeNear(anchor) {
  const p = ui.panel.style;
  if (!anchor || typeof anchor.getBoundingClientRect !== "function" || ui.position === "embedded") {
    ui.root.classList.remove("anchored");
    p.left = p.top = p.height = "";
    return;
  }
  // Below or above the anchor, whichever has more room (the panel made
  // shorter to fit, down to 360 px); else beside it. Never over it.
  const r = anchor.getBoundingClientRect();
  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), Math.max(lo, hi));
  const pw = Math.min(380, innerWidth - 24), full = Math.min(600, innerHeight - 24);
  const below = innerHeight - r.bottom - 20, above = r.top - 20;
  let top, left, height = full;
  if (Math.max(below, above) >= Math.min(full, 360)) {
    height = Math.min(full, Math.max(below, above));
    top = below >= above ? r.bottom + 8 : r.top - 8 - height;
    left = clamp(r.left, 12, innerWidth - pw - 12);
  } else {
    top = clamp(r.top + r.height / 2 - height / 2, 12, innerHeight - height - 12);
    left = r.right + 8 + pw <= innerWidth - 12 ? r.right + 8 : Math.max(12, r.left - 8 - pw);
  }
  ui.root.classList.add("anchored");
  p.top = top + "px";
  p.left = left + "px";
  p.height = height + "px";
}
function openPanel(opts) {
  if (!ui) { st.openWhenReady = opts; return; }
  const wasOpen = st.open;
  if (ui.position !== "embedded") {
    placeNear(opts.anchor);
    ui.panel.hidden = false;
    ui.launcher.setAttribute("aria-expanded", "true");
  }
  st.open = true;
  saveState({ open: true });
  if (opts.focus !== false) {
    const f = ui.composer.hidden ? ui.mic : ui.input;
    f.focus();
  }
  scrollLog();
  ensureSession().catch(showError);
  if (!wasOpen) emit("open", { source: opts.source, trigger: opts.trigger });
}
function closePanel(source) {
  if (!ui || !st.open || ui.position === "embedded") return;
  const hadFocus = ui.shadow.activeElement !== null;
  ui.panel.hidden = true;
  ui.launcher.setAttribute("aria-expanded", "false");
  st.open = false;
  saveState({ open: false });
  if (hadFocus || source === "escape") ui.launcher.focus();
  emit("close", { source });
}

function scrollLog() {
  if (!ui) return;
  ui.log.scrollTop = ui.log.scrollHeight;
}
function addLine(cls, text, opts) {
  const el = h("div", { class: "msg " + cls });
  if (opts && opts.id) el.dataset.id = opts.id;
  if (opts && opts.voice) {
    el.classList.add("voice");
    el.append(icon("mic", T.saidInCall, "via"));
  }
  el.append(h("span", { class: "body", text }));
  const typing = st.typingEl;
  if (typing && typing.parentNode) ui.log.insertBefore(el, typing);
  else ui.log.append(el);
  scrollLog();
  return el;
}
// agentLine is the agent's reply line with message id id, if shown.
function agentLine(id) {
  if (!ui) return null;
  for (const el of ui.log.querySelectorAll(".msg.agent")) if (el.dataset.id === id) return el;
  return null;
}
// markInterrupted shows that the visitor cut a reply short. heard, when
// Parley spoke the reply, is the words of it they heard: the line shows
// those, trailing off where they cut in, and "(interrupted)" is left to
// screen readers. Otherwise the text is what was written before they
// spoke over it, marked "(interrupted)".
function markInterrupted(el, heard) {
  if (!el) return;
  const spoken = typeof heard === "string";
  if (spoken) bodyOf(el).textContent = cutOff(heard);
  let cut = el.querySelector(".cut");
  if (!cut) {
    cut = h("span", { class: "cut", text: T.interrupted });
    el.append(cut);
  }
  el.classList.add("interrupted");
  cut.classList.toggle("sr", spoken && bodyOf(el).textContent !== "");
}
// cutOff is the words heard of a reply, trailing off ("…").
function cutOff(heard) {
  const t = heard.replace(/[\s,;:]+$/, "");
  if (!t) return "";
  return t + (/[.!?…]$/.test(t) ? " …" : "…");
}
// showVoiceTurn shows a visitor turn of a voice call that Parley heard
// (body, marked as spoken), or a note of why it heard nothing (reason, a
// speech_* code), once per message id: a frame and the history may both
// bring it. It reports whether it showed it.
function showVoiceTurn(id, body, reason) {
  if (id && st.voiceTurns.has(id)) return false;
  if (id) st.voiceTurns.add(id);
  if (body) {
    addLine("visitor", body, { voice: true, id });
    return true;
  }
  const el = addNote(T.unheard[reason] || T.unheard.speech_failed, "unheard");
  if (el && id) el.dataset.id = id;
  return true;
}
function addNote(text, cls) {
  if (!ui) return null;
  const el = h("p", { class: "note " + (cls || ""), text });
  ui.log.append(el);
  scrollLog();
  return el;
}
function showTyping(on) {
  if (!ui) return;
  if (on && !st.typingEl) {
    st.typingEl = h("div", { class: "typing", role: "status", "aria-label": T.typing }, h("i"), h("i"), h("i"));
    ui.log.append(st.typingEl);
    scrollLog();
  } else if (!on && st.typingEl) {
    st.typingEl.remove();
    st.typingEl = null;
  }
}
function setStatus(text) { if (ui) ui.status.textContent = text; }
function caption(who, text) {
  if (!ui) return;
  (who === "you" ? ui.capYou : ui.capAgent).textContent = (who === "you" ? T.you + ": " : "") + text;
}
function setCall(state, detail) {
  st.callState = state;
  if (ui) ui.callbar.dataset.detail = detail || "";
  renderCall();
}
function renderCall() {
  if (!ui) return;
  const on = callActive();
  ui.callbar.hidden = !on;
  ui.callbar.dataset.state = st.callState;
  let text = T.call[st.callState] || "";
  const agent = T.agent[st.agentState];
  const hearing = on && st.hearing;
  const waiting = st.callState === "connected" && st.unavailable;
  if (waiting) text = T.nobody; // not a green "On a call"
  else if (st.callState === "connected" && hearing) text += " · " + T.hearing;
  else if (st.callState === "connected" && agent) text += " · " + agent;
  if (waiting) ui.callbar.dataset.state = "waiting";
  ui.callState.textContent = text;
  ui.capHint.textContent = waiting ? T.nobodyCall : "";
  ui.live.style.background = waiting ? "#d97706" : ""; // the launcher's dot: amber, not green
  ui.callbar.dataset.hearing = String(hearing);
  if (!on) { st.hearing = false; ui.capYou.textContent = ""; ui.capAgent.textContent = ""; }
  ui.mic.setAttribute("aria-pressed", String(on));
  ui.mic.setAttribute("aria-label", on ? T.endCall : T.startCall);
  ui.mic.title = on ? T.endCall : T.startCall;
  // Why voice can't work on this page, said on the button before anyone
  // clicks it (an http page, a Permissions-Policy without microphone).
  const why = !on && st.widget && (st.widget.modes || []).includes("voice") ? micPrecheck() : "";
  if (why) {
    const said = why === "insecure" ? T.micInsecure : T.micPolicy;
    ui.mic.setAttribute("aria-disabled", "true");
    ui.mic.setAttribute("aria-label", T.startCall + " — " + said);
    ui.mic.title = said;
    if (!st.micWarned) {
      st.micWarned = true;
      console.warn("[parley:mic] Voice is unavailable on this page: " + MIC[why][0]);
    }
  } else {
    ui.mic.removeAttribute("aria-disabled");
  }
  ui.live.hidden = !on;
  ui.root.dataset.mode = on ? "voice" : "chat";
}
function updateControls() {
  if (!ui) return;
  const w = st.widget;
  const chat = (w.modes || []).includes("chat");
  ui.composer.hidden = false;
  ui.input.hidden = ui.sendBtn.hidden = !chat;
  ui.mic.hidden = !voiceOffered();
  ui.mic.disabled = !st.call && !(st.ws && st.ws.readyState === WebSocket.OPEN);
  ui.attach.hidden = !chat || !(w.uploads && w.uploads.max_bytes > 0);
  ui.attach.disabled = !st.session;
  renderCall();
}

