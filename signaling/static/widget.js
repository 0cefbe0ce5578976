/*!
 * Parley widget, served by Parley at /widget.js. Install with one tag:
 *
 *   <script src="https://parley.example.com/widget.js" data-widget-key="pk_…" defer></script>
 *
 * Plain JavaScript without dependencies or a build step. The UI lives in a
 * shadow DOM, so it neither inherits the page's CSS nor leaks its own.
 * Attributes, window.Parley and its events: docs/WIDGET.md.
 */
(() => {
  "use strict";

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

  // ---- Texts ------------------------------------------------------------
  const STRINGS = {
    en: {
      open: "Open the chat", close: "Close the chat", send: "Send", placeholder: "Type a message…", message: "Message",
      conversation: "Conversation", startCall: "Start a voice call", endCall: "End the voice call and type instead",
      toText: "Switch to text", typing: "The assistant is typing", you: "You", saidInCall: "said in the voice call",
      poweredBy: "Powered by", reconnecting: "Reconnecting…", agentReconnecting: "Reconnecting to the assistant…",
      connecting: "Connecting…",
      call: { connecting: "Connecting the call…", connected: "On a call", reconnecting: "Reconnecting the call…",
        failed: "The call failed", ended: "Call ended" },
      agent: { listening: "Listening", thinking: "Thinking…", speaking: "Speaking", idle: "" },
      navigating: "Taking you to {label}…", navRefused: "That page can't be opened from here.",
      captureAsked: "The assistant asked for your details:", capShare: "Share", capSave: "Save", capNo: "No thanks",
      capDismiss: "Dismiss", capSaved: "Thanks! Saved your {kind}: {value}",
      volunteer: { email: "Save {value} as your email so we can follow up?", phone: "Save {value} as your phone number so we can follow up?" },
      kinds: { email: "email", phone: "phone number", name: "name" },
      labels: { email: "Your email", phone: "Your phone number", name: "Your name" },
      bad: { email: "That doesn't look like an email address.", phone: "That doesn't look like a phone number (6 to 15 digits).",
        name: "Please enter a name of at most 100 characters." },
      ended: "The assistant ended the conversation.", handoff: "Connecting you to a person…",
    },
    fr: {
      open: "Ouvrir la discussion", close: "Fermer la discussion", send: "Envoyer", placeholder: "Écrivez un message…",
      message: "Message", conversation: "Conversation", startCall: "Démarrer un appel vocal", toText: "Passer au texte",
      endCall: "Terminer l'appel et écrire", typing: "L'assistant écrit", you: "Vous", poweredBy: "Propulsé par",
      reconnecting: "Reconnexion…", connecting: "Connexion…", navigating: "Je vous emmène vers {label}…",
      call: { connecting: "Connexion de l'appel…", connected: "En appel", reconnecting: "Reconnexion de l'appel…",
        failed: "L'appel a échoué", ended: "Appel terminé" },
      agent: { listening: "À l'écoute", thinking: "Réflexion…", speaking: "Parle", idle: "" },
      capShare: "Partager", capSave: "Enregistrer", capNo: "Non merci",
    },
    es: {
      open: "Abrir el chat", close: "Cerrar el chat", send: "Enviar", placeholder: "Escribe un mensaje…", message: "Mensaje",
      conversation: "Conversación", startCall: "Iniciar una llamada de voz", toText: "Cambiar a texto",
      endCall: "Terminar la llamada y escribir", typing: "El asistente está escribiendo", you: "Tú", poweredBy: "Con la tecnología de",
      reconnecting: "Reconectando…", connecting: "Conectando…", navigating: "Te llevo a {label}…",
      call: { connecting: "Conectando la llamada…", connected: "En llamada", reconnecting: "Reconectando la llamada…",
        failed: "La llamada falló", ended: "Llamada terminada" },
      agent: { listening: "Escuchando", thinking: "Pensando…", speaking: "Hablando", idle: "" },
      capShare: "Compartir", capSave: "Guardar", capNo: "No, gracias",
    },
    de: {
      open: "Chat öffnen", close: "Chat schließen", send: "Senden", placeholder: "Nachricht eingeben…", message: "Nachricht",
      conversation: "Unterhaltung", startCall: "Sprachanruf starten", toText: "Zu Text wechseln",
      endCall: "Anruf beenden und schreiben", typing: "Der Assistent schreibt", you: "Sie", poweredBy: "Bereitgestellt von",
      reconnecting: "Verbindung wird wiederhergestellt…", connecting: "Verbinden…", navigating: "Ich bringe Sie zu {label}…",
      call: { connecting: "Anruf wird verbunden…", connected: "Im Gespräch", reconnecting: "Anruf wird wiederhergestellt…",
        failed: "Der Anruf ist fehlgeschlagen", ended: "Anruf beendet" },
      agent: { listening: "Hört zu", thinking: "Denkt nach…", speaking: "Spricht", idle: "" },
      capShare: "Teilen", capSave: "Speichern", capNo: "Nein, danke",
    },
  };
  const base = language.toLowerCase().split("-")[0];
  const T = deepMerge(STRINGS.en, STRINGS[base] || {});
  function deepMerge(a, b) {
    const out = { ...a };
    for (const [k, v] of Object.entries(b)) out[k] = v && typeof v === "object" ? deepMerge(a[k] || {}, v) : v;
    return out;
  }
  function fmt(s, vars) { return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] !== undefined ? vars[k] : "")); }

  // Error codes of docs/API.md in words a visitor understands.
  const ERRORS = {
    NETWORK: "We can't reach the assistant right now. Check your connection; we'll keep trying.",
    ORIGIN_NOT_ALLOWED: "This assistant isn't available on this website.",
    ORIGIN_REQUIRED: "This assistant isn't available on this website.",
    UNKNOWN_WIDGET_KEY: "This assistant isn't set up correctly.",
    WIDGET_NOT_LIVE: "The assistant is offline right now. Please come back later.",
    RATE_LIMITED: "That was a lot of messages at once. Please wait a moment and try again.",
    AGENT_UNAVAILABLE: "Nobody is available to answer right now. Your message is saved and will be answered as soon as someone is.",
    REPLY_TIMEOUT: "The assistant is taking too long to answer. Your message is saved.",
    GUEST_NOT_ALLOWED: "Please sign in to chat with us.",
    INVALID_VISITOR_TOKEN: "We couldn't confirm who you are. Please reload the page.",
    TOKEN_EXPIRED: "Your sign-in has expired. Please reload the page.",
    PAYLOAD_TOO_LARGE: "That message is too long.",
    MODE_NOT_ALLOWED: "Voice isn't available here; you can type instead.",
    VOICE_UNAVAILABLE: "Voice isn't available right now; you can type instead.",
    SDP_INVALID: "Your browser and the assistant couldn't agree on how to talk. You can type instead.",
    SDP_NO_AUDIO: "Your browser offered no usable audio for the call. You can type instead.",
    SESSION_ENDED: "This conversation has ended.",
    SESSION_EXPIRED: "This conversation has expired.",
    CHALLENGE_INVALID: "We couldn't start the conversation. Please reload the page.",
    STORE_UNAVAILABLE: "The assistant is having trouble right now. Please try again in a moment.",
    NOT_READY: "The assistant is starting up. Please try again in a moment.",
    SHUTTING_DOWN: "The assistant is restarting. Please try again in a moment.",
    INTERNAL: "Something went wrong on our side. Please try again.",
  };
  function human(err) {
    if (err && err.code === "VALIDATION_FAILED") return "That message couldn't be sent: " + err.message + ".";
    return (err && ERRORS[err.code]) || "Something went wrong" + (err && err.message ? " (" + err.message + ")" : "") + ". Please try again.";
  }

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

  // ---- HTTP -------------------------------------------------------------
  function apiError(code, message, status) {
    const e = new Error(message || code);
    e.code = code;
    e.status = status || 0;
    return e;
  }
  async function readError(res) {
    let body = {};
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    const err = body && body.error;
    return apiError((err && err.code) || (res.status >= 500 ? "INTERNAL" : "HTTP_" + res.status),
      (err && err.message) || res.statusText, res.status);
  }
  function auth() { return { Authorization: "Bearer " + st.session.session_token }; }
  async function api(path, opts = {}) {
    const headers = { ...(opts.headers || {}) };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.auth) Object.assign(headers, auth());
    let res;
    try {
      res = await fetch(backend + path, { method: opts.method || "GET", headers, credentials: "omit",
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
    } catch (e) {
      throw apiError("NETWORK", e.message);
    }
    if (!res.ok) throw await readError(res);
    return res.status === 204 ? {} : res.json();
  }

  // ---- Resolve and sessions ---------------------------------------------
  async function resolve() {
    const r = await api("/v1/widget/resolve", { method: "POST", body: { widget_key: widgetKey } });
    st.widget = r.widget;
    st.challenge = r.challenge;
    st.challengeAt = Date.now();
    return r;
  }
  // takeChallenge returns a fresh challenge (single use, valid 2 minutes).
  async function takeChallenge() {
    if (!st.challenge || Date.now() - st.challengeAt > 60000) await resolve();
    const c = st.challenge;
    st.challenge = "";
    return c;
  }
  function ensureSession() {
    if (st.session) return Promise.resolve(st.session);
    if (!st.sessionP) {
      st.sessionP = createSession(true).finally(() => { st.sessionP = null; });
    }
    return st.sessionP;
  }
  const langTag = /^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{1,8})*$/;
  async function createSession(mayResume, retried) {
    const req = { widget_key: widgetKey, challenge: await takeChallenge(), mode: "chat" };
    if (langTag.test(language) && language.length <= 35) req.language = language;
    const sentIdentity = !!(identity.visitorToken || (identity.userId && identity.userHash));
    if (identity.visitorToken) req.visitor_token = identity.visitorToken;
    else if (identity.userId && identity.userHash) { req.user_id = identity.userId; req.user_hash = identity.userHash; }
    const resume = mayResume ? sget("sessionStorage", K.resume) : null;
    if (resume) req.resume_token = resume;
    let s;
    try {
      s = await api("/v1/sessions", { method: "POST", body: req });
    } catch (e) {
      if (resume && ["RESUME_TOKEN_INVALID", "SESSION_EXPIRED", "CONVERSATION_NOT_FOUND"].includes(e.code)) {
        // A stale token (another day, another server): start afresh.
        sdel("sessionStorage", K.resume);
        sdel("sessionStorage", K.state);
        return createSession(false);
      }
      if (sentIdentity && (e.code === "INVALID_VISITOR_TOKEN" || e.code === "TOKEN_EXPIRED") &&
          st.widget && st.widget.identity_policy !== "identified") {
        console.warn("[parley:identity] The visitor identity was refused (" + e.code + ": " + e.message +
          "); continuing as a guest. Mint a fresh token on your server.");
        identity = { visitorToken: "", userId: "", userHash: "" };
        return createSession(mayResume, retried);
      }
      if (e.code === "CHALLENGE_INVALID" && !retried) {
        // Expired on a slow start, or the visitor's address changed
        // (Wi-Fi to mobile): resolve again, once.
        st.challenge = "";
        return createSession(mayResume, true);
      }
      throw e;
    }
    st.session = s;
    st.claims = s.visitor_claims || null;
    sset("sessionStorage", K.resume, s.resume_token);
    const saved = loadState();
    if (saved.conv === s.conversation_id) st.lastSeq = Math.max(st.lastSeq, saved.seq || 0);
    else if (!s.resumed) st.lastSeq = 0;
    saveState({ conv: s.conversation_id, seq: st.lastSeq });
    if (s.resumed && !st.rendered) {
      await renderHistory();
    } else if (!st.rendered && st.widget.welcome_text && !ui.log.querySelector(".proactive")) {
      addLine("agent welcome", texts().welcome_text); // a trigger's message stands in for it
    }
    st.rendered = true;
    updateControls();
    connect();
    return s;
  }
  async function renderHistory() {
    const h = await api("/v1/sessions/" + st.session.session_id + "/history?message_limit=200", { auth: true });
    const welcome = texts().welcome_text;
    if (welcome && h.messages.length === 0) addLine("agent welcome", welcome);
    for (const m of h.messages) {
      addLine(m.role, m.body, { voice: m.via === "voice" && m.role === "visitor" });
      if (m.role === "agent") st.doneIds.add(m.id);
      if (m.seq) st.lastSeq = Math.max(st.lastSeq, m.seq);
    }
    saveState({ seq: st.lastSeq });
  }

  // ---- The chat WebSocket -----------------------------------------------
  function connect() {
    if (!st.session || st.ws) return;
    clearTimeout(st.retryTimer);
    const u = new URL(backend + st.session.websocket_path);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    u.searchParams.set("token", st.session.session_token);
    if (st.lastSeq > 0) u.searchParams.set("since_seq", String(st.lastSeq));
    const ws = st.ws = new WebSocket(u.href);
    st.chat = "connecting";
    ws.onopen = () => {
      if (st.ws !== ws) return;
      st.retry = 0;
      st.chat = "connected";
      setStatus("");
      for (const m of st.outbox) ws.send(JSON.stringify(wire(m))); // unacked: resent, de-duplicated by id
      updateControls();
    };
    ws.onmessage = (e) => {
      let f;
      try { f = JSON.parse(e.data); } catch (_) { return; }
      onFrame(f);
    };
    ws.onclose = (e) => {
      if (st.ws !== ws) return;
      st.ws = null;
      st.chat = "closed";
      updateControls();
      const reason = e.reason || "";
      if (["SESSION_ENDED", "SESSION_EXPIRED", "SESSION_TOKEN_INVALID", "SESSION_NOT_FOUND"].includes(reason)) {
        // The session is over; the conversation goes on in a new session
        // (resume) as soon as the visitor writes or the panel is open.
        st.session = null;
        if (st.call) endCall(st.call, "ended", false, reason);
        if (st.open || st.outbox.length) ensureSession().catch(showError);
        return;
      }
      if (reason === "ORIGIN_NOT_ALLOWED" || reason === "ORIGIN_REQUIRED") {
        showError(apiError(reason, reason));
        return;
      }
      if (e.code === 1009) addNote(ERRORS.PAYLOAD_TOO_LARGE, "error");
      setStatus(T.reconnecting);
      const delay = Math.min(500 * 2 ** st.retry++, 10000) * (0.75 + Math.random() * 0.5);
      st.retryTimer = setTimeout(connect, delay);
    };
  }
  function wire(m) { return { type: "message", body: m.body, client_message_id: m.client_message_id }; }
  // A message refused with one of these codes was not stored but may be
  // the next time (the store was busy, the broker starting or stopping,
  // the network gone): the widget sends it again itself, with the same
  // client_message_id so Parley stores it once, a few times with backoff,
  // before asking the visitor.
  const RESEND_CODES = ["STORE_UNAVAILABLE", "NOT_READY", "SHUTTING_DOWN", "NETWORK"];
  const RESEND_MAX = 4;
  function resendLater(m) {
    m.tries = (m.tries || 0) + 1;
    st.resends++;
    const delay = Math.min(500 * 2 ** (m.tries - 1), 4000) * (0.75 + Math.random() * 0.5);
    clearTimeout(m.resendTimer);
    m.resendTimer = setTimeout(() => {
      if (!st.outbox.includes(m)) return;
      if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(wire(m)));
      else ensureSession().then(connect).catch(showError); // the socket resends the outbox when it opens
    }, delay);
  }
  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }
  function send(body) {
    body = body.trim();
    if (!body) return;
    st.freshCard = null;
    const m = { body, client_message_id: uuid() };
    m.el = addLine("visitor pending", body);
    st.outbox.push(m);
    emit("message", { role: "visitor", body, via: "chat" });
    offerVolunteered(body);
    if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(wire(m)));
    else ensureSession().catch(showError);
  }

  function noteSeq(f) {
    if (f.seq && f.seq > st.lastSeq) {
      st.lastSeq = f.seq;
      saveState({ seq: st.lastSeq });
    }
  }
  function onFrame(f) {
    switch (f.type) {
      case "session":
        st.mode = f.mode || "chat";
        if (st.call && f.mode === "voice") st.call.sawVoice = true;
        break;
      case "ack": {
        const i = st.outbox.findIndex((m) => m.client_message_id === f.client_message_id);
        if (i >= 0) {
          clearTimeout(st.outbox[i].resendTimer);
          st.outbox[i].el.classList.remove("pending");
          st.outbox.splice(i, 1);
        }
        break;
      }
      case "typing": showTyping(true); break;
      case "chunk": {
        if (st.doneIds.has(f.message_id)) break; // a reply re-sent for a duplicate
        showTyping(false);
        let el = st.replies.get(f.message_id);
        if (!el) {
          el = addLine("agent streaming", "");
          st.replies.set(f.message_id, el);
          // A pill the agent just asked for goes below its question.
          const card = st.freshCard;
          if (card && card.isConnected && el.previousElementSibling === card) ui.log.insertBefore(el, card);
        }
        bodyOf(el).textContent += f.chunk;
        if (st.call) caption("agent", bodyOf(el).textContent);
        scrollLog();
        break;
      }
      case "done": {
        showTyping(false);
        if (st.doneIds.has(f.message_id)) break;
        st.doneIds.add(f.message_id);
        const el = st.replies.get(f.message_id) || addLine("agent", "");
        el.classList.remove("streaming");
        bodyOf(el).textContent = f.body;
        st.replies.delete(f.message_id);
        if (st.call) caption("agent", f.body);
        emit("message", { role: "agent", body: f.body, via: st.call ? "voice" : "chat", id: f.message_id });
        break;
      }
      case "message":
        addLine("visitor", f.body);
        break;
      case "error": onErrorFrame(f); break;
      case "agent_state":
        st.agentState = f.state === "connected" ? "" : f.state;
        if (f.state === "reconnecting") setStatus(T.agentReconnecting);
        else if (f.state === "connected") setStatus("");
        if (f.state === "thinking" && !st.call) showTyping(true);
        else if (f.state === "idle" || f.state === "listening") showTyping(false);
        renderCall();
        break;
      case "action": onAction(f); break;
      case "transcript": {
        let el = f.message_id && st.heard.get(f.message_id);
        if (!el) {
          el = addLine("visitor", "", { voice: true });
          if (f.message_id) st.heard.set(f.message_id, el);
        }
        bodyOf(el).textContent = f.text;
        el.classList.toggle("interim", !f.final);
        caption("you", f.text);
        if (f.final) {
          st.heard.delete(f.message_id);
          emit("message", { role: "visitor", body: f.text, via: "voice", id: f.message_id });
          offerVolunteered(f.text);
        }
        scrollLog();
        break;
      }
      case "mode": {
        const prev = st.mode;
        st.mode = f.mode || prev;
        if (st.mode !== prev) emit("mode", { mode: st.mode, previous_mode: prev, reason: f.reason || "" });
        if (st.call) {
          if (f.mode === "voice") st.call.sawVoice = true;
          // A "chat" left over from an earlier call comes before this call's
          // "voice" (the log is in order): only a later one ends the call.
          else if (f.mode === "chat" && st.call.sawVoice) endCall(st.call, "ended", false, f.reason);
        }
        break;
      }
      case "media_state": {
        const c = st.call;
        if (!c || !c.legId || f.leg_id !== c.legId) break;
        if (f.state === "closed") endCall(c, "ended", false, f.reason);
        else if (f.state === "disconnected" || f.state === "failed") setCall("reconnecting");
        else if (f.state === "connected" && c.pc.connectionState === "connected") setCall("connected");
        break;
      }
    }
    noteSeq(f);
  }
  function onErrorFrame(f) {
    const err = apiError(f.code, f.message);
    if (f.client_message_id) {
      const i = st.outbox.findIndex((m) => m.client_message_id === f.client_message_id);
      if (i >= 0 && RESEND_CODES.includes(f.code) && (st.outbox[i].tries || 0) < RESEND_MAX) {
        // Not stored this time; sent again shortly, the line stays pending.
        console.info("[parley] message not stored (" + f.code + "); sending it again");
        resendLater(st.outbox[i]);
        return;
      }
      if (i >= 0 && f.code !== "AGENT_UNAVAILABLE") {
        // Refused, nothing stored: mark the line, let the visitor retry.
        const m = st.outbox.splice(i, 1)[0];
        m.el.classList.remove("pending");
        m.el.classList.add("failed");
        m.el.title = human(err);
      }
    }
    if (f.code === "NAV_TARGET_UNKNOWN") {
      // The agent named a place the site didn't list; Parley refused it.
      console.warn("[parley:nav] The server refused a navigation the agent asked for (" + f.message + ").");
      reportError(f.code, f.message);
      return;
    }
    reportError(f.code, f.message);
    showTyping(false);
    addNote(human(err), "error");
  }
  function showError(e) {
    console.warn("[parley]", e.code || e.name, e.message);
    reportError(e.code || "ERROR", e.message);
    addNote(human(e), "error");
  }

  // ---- Agent actions ----------------------------------------------------
  function onAction(f) {
    const data = f.data || {};
    switch (f.action) {
      case "navigate":
        if (!data.path) break; // Parley fills it from the nav map
        addNote(fmt(T.navigating, { label: data.label || data.path }), "directions");
        navigateTo(data.path, data.selector, { target: data.target, label: data.label, source: "agent" });
        break;
      case "capture_request":
        askCapture((data.fields || []).filter((x) => x && ["email", "phone", "name"].includes(x.name)));
        break;
      case "handoff": addNote(T.handoff, "info"); break;
      case "end":
        if (st.call) switchToText();
        addNote(T.ended, "info");
        break;
    }
  }

  // ---- Guided navigation (same origin only) ---------------------------------
  function findSelector(sel) {
    if (!sel) return null;
    try { return document.querySelector(sel); } catch (_) { return null; }
  }
  function scrollTo(sel) {
    const el = findSelector(sel);
    if (el) el.scrollIntoView({ behavior: reduceMotion() ? "auto" : "smooth", block: "start" });
    return !!el;
  }
  // afterRoute scrolls to sel once the new route has rendered it (up to 3 s).
  function afterRoute(sel, warnSPA) {
    const until = Date.now() + 3000;
    const poll = () => {
      if (!sel || scrollTo(sel)) return;
      if (Date.now() < until) { setTimeout(poll, 100); return; }
      if (warnSPA) {
        console.warn("[parley:nav] " + sel + " did not appear within 3 s of a history.pushState + popstate navigation. " +
          "If your router ignores popstate, register it: Parley.onNavigate((path) => router.push(path)).");
      }
    };
    poll();
  }
  function navigateTo(path, selector, info) {
    let url;
    try { url = new URL(path, location.href); } catch (_) { url = null; }
    if (!url || url.origin !== location.origin) {
      console.warn("[parley:nav] Refused to navigate to " + path + ": guided navigation stays on " + location.origin + ".");
      addNote(T.navRefused, "error");
      return false;
    }
    const detail = { path: url.pathname + url.search + url.hash, selector: selector || null, ...(info || {}) };
    let via;
    if (url.pathname === location.pathname && url.search === location.search) {
      via = "scroll";
      afterRoute(selector || (url.hash.length > 1 ? url.hash : ""), false);
    } else if (st.navHandler) {
      via = "router";
      try { st.navHandler(detail.path, detail.selector); } catch (e) { console.error("[parley:nav] the onNavigate handler threw:", e); }
      afterRoute(selector, false);
    } else if (spaOptIn) {
      via = "spa";
      history.pushState(history.state, "", url.href);
      window.dispatchEvent(new PopStateEvent("popstate", { state: history.state }));
      afterRoute(selector, true);
    } else {
      // A full page load: the conversation resumes there (sessionStorage),
      // and the widget scrolls to the selector once the page is up.
      via = "page";
      saveState({ open: st.open, nav: selector || "" });
      detail.via = via;
      st.navigations.push(detail);
      emit("navigate", detail);
      location.assign(url.href);
      return true;
    }
    detail.via = via;
    st.navigations.push(detail);
    emit("navigate", detail);
    return true;
  }

  // ---- Lead capture -----------------------------------------------------
  const emailRe = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/;
  const phoneRe = /\+?\d[\d ().-]{4,}\d/g;
  function findPhone(text) {
    for (const m of text.match(phoneRe) || []) {
      const digits = m.replace(/\D/g, "").length;
      if (digits >= 7 && digits <= 15 && !/^\d{4}-\d{2}-\d{2}$/.test(m)) return m.trim();
    }
    return "";
  }
  // offerVolunteered: the visitor wrote or said an email or phone number:
  // offer to save it (never a name: too ambiguous in free text).
  function offerVolunteered(text) {
    const email = (text.match(emailRe) || [""])[0];
    const phone = email ? "" : findPhone(text);
    const kind = email ? "email" : phone ? "phone" : "";
    const value = email || phone;
    if (!kind || st.captured.has(kind) || st.offered.has(kind + ":" + value)) return;
    st.offered.add(kind + ":" + value);
    captureCard([{ name: kind, value }], "volunteered", fmt(T.volunteer[kind], { value }));
  }
  function askCapture(fields) {
    if (!fields.length) return;
    const claims = st.claims || {};
    captureCard(fields.map((x) => ({ name: x.name, label: x.label, value: claims[x.name] || "" })), "agent_asked", T.captureAsked);
  }
  function captureCard(fields, source, intro) {
    const card = h("form", { class: "capture", "aria-label": intro, novalidate: true });
    card.append(h("p", { class: "capture-intro", text: intro }));
    const inputs = [];
    for (const f of fields) {
      const id = "cap-" + uuid();
      const input = h("input", { id, name: f.name, type: f.name === "email" ? "email" : f.name === "phone" ? "tel" : "text",
        autocomplete: f.name === "email" ? "email" : f.name === "phone" ? "tel" : "name", maxlength: f.name === "email" ? 254 : 100 });
      input.value = f.value || "";
      const label = h("label", { for: id, text: f.label || T.labels[f.name] });
      card.append(h("div", { class: "capture-field" }, label, input));
      inputs.push(input);
    }
    const msg = h("p", { class: "capture-msg", role: "status" });
    const ok = h("button", { type: "submit", class: "capture-ok", text: source === "volunteered" ? T.capSave : T.capShare });
    const no = h("button", { type: "button", class: "capture-no", text: T.capNo, "aria-label": T.capDismiss });
    card.append(h("div", { class: "capture-actions" }, ok, no), msg);
    no.addEventListener("click", () => { card.remove(); input().focus(); });
    card.addEventListener("submit", async (e) => {
      e.preventDefault();
      ok.disabled = true;
      msg.textContent = "";
      const done = [];
      try {
        await ensureSession();
        for (const inp of inputs) {
          const value = inp.value.trim();
          if (!value) continue;
          let lead;
          try {
            lead = await api("/v1/sessions/" + st.session.session_id + "/captures",
              { method: "POST", auth: true, body: { kind: inp.name, value, source } });
          } catch (err) {
            if (err.code === "VALIDATION_FAILED") {
              msg.textContent = T.bad[inp.name];
              inp.setAttribute("aria-invalid", "true");
              inp.focus();
              ok.disabled = false;
              return;
            }
            throw err;
          }
          st.captured.add(inp.name);
          done.push(lead);
          emit("capture", { kind: lead.kind, value: lead.value, source, lead_id: lead.id });
        }
      } catch (err) {
        msg.textContent = human(err);
        ok.disabled = false;
        return;
      }
      const saved = h("div", { class: "capture saved", role: "status" });
      for (const lead of done) saved.append(h("p", { text: "✓ " + fmt(T.capSaved, { kind: T.kinds[lead.kind], value: lead.value }) }));
      card.replaceWith(saved);
      input().focus();
    });
    logEl().append(card);
    st.freshCard = card;
    scrollLog();
    if (source === "agent_asked" && st.open) inputs[0].focus();
    return card;
  }

  // ---- Voice --------------------------------------------------------------
  // One call at a time: getUserMedia → RTCPeerConnection → the offer POSTed
  // as soon as it exists to the session's voice_path (WHIP, RFC 9725), then
  // our ICE candidates PATCHed as they come (trickle ICE, RFC 8838, as
  // application/trickle-ice-sdpfrag of RFC 8840) with a=end-of-candidates
  // last. The 201's Location is the leg: PATCH, and DELETE to hang up.
  const MIC = {
    insecure: ["Microphone API is not available on this page. Most common cause: the page is served over plain HTTP " +
      "(isSecureContext=false). Fix: serve the page over HTTPS.", "Voice needs a secure (https) page. You can still ask questions by typing below."],
    policy: ["Microphone blocked by this page's Permissions-Policy header. Fix: allow it, e.g. Permissions-Policy: microphone=(self).",
      "Mic access is blocked. You can still ask questions by typing below."],
    denied: ["getUserMedia denied (NotAllowedError): microphone permission was refused. The visitor can allow it in the browser's site settings.",
      "Microphone access was denied. Allow it in your browser's site settings, or keep typing below."],
    "no-device": ["No microphone hardware available (NotFoundError).", "No microphone was found. You can still ask questions by typing below."],
    busy: ["Microphone exists but is in use by another application (NotReadableError).",
      "Your microphone is in use by another app. Close it and try again, or keep typing below."],
    other: ["The microphone could not be started.", "The microphone could not be started. You can still ask questions by typing below."],
  };
  function micPrecheck() {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return "insecure";
    const pp = document.permissionsPolicy || document.featurePolicy;
    try {
      if (pp && typeof pp.allowsFeature === "function" && !pp.allowsFeature("microphone")) return "policy";
    } catch (_) { /* no answer: try */ }
    return "";
  }
  function micReason(e) {
    switch (e && e.name) {
      case "NotAllowedError": case "SecurityError": return "denied";
      case "NotFoundError": case "OverconstrainedError": return "no-device";
      case "NotReadableError": case "AbortError": return "busy";
      default: return "other";
    }
  }
  function micFailed(reason, err) {
    const [line, text] = MIC[reason];
    console.warn("[parley:mic] " + line + (err ? " (" + err.name + ": " + err.message + ")" : ""));
    st.micError = reason;
    addNote(text, "error mic-error");
    reportError("MIC_" + reason.toUpperCase().replace("-", "_"), line);
    setCall("failed", "");
    if (st.mode === "voice" && st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify({ type: "mode", mode: "chat" }));
    input().focus();
  }
  function voiceOffered() {
    return !!(st.widget && (st.widget.modes || []).includes("voice") && (!st.session || st.session.voice_path) &&
      window.RTCPeerConnection);
  }
  const callActive = () => ["connecting", "connected", "reconnecting"].includes(st.callState);

  async function startCall() {
    if (st.call) return;
    st.micError = "";
    const pre = micPrecheck();
    if (pre) return micFailed(pre, null);
    st.trickle = { patches: 0, candidates: 0, end: false };
    const c = st.call = { pc: null, stream: null, location: "", legId: "", sawVoice: false, ended: false,
      cands: [], endOfCandidates: false, endSent: false, canTrickle: false, trickling: false,
      restartTimer: 0, restarting: false, restarts: 0, t0: performance.now(), marks: [] };
    const mark = (what) => c.marks.push(what + " " + Math.round(performance.now() - c.t0) + " ms");
    setCall("connecting");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: dbg.audioConstraints ||
        { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    } catch (e) {
      if (c.ended) return;
      c.ended = true;
      st.call = null;
      return micFailed(micReason(e), e);
    }
    if (c.ended) { stream.getTracks().forEach((t) => t.stop()); return; }
    c.stream = stream;
    mark("mic");
    try {
      await ensureSession();
      if (!st.session.voice_path) throw apiError("VOICE_UNAVAILABLE", "no voice_path");
      const pc = c.pc = new RTCPeerConnection({ iceServers: st.session.ice_servers || [] });
      for (const track of stream.getAudioTracks()) pc.addTransceiver(track, { direction: "sendrecv", streams: [stream] });
      pc.ontrack = (e) => {
        const audio = audioEl();
        audio.srcObject = e.streams[0] || new MediaStream([e.track]);
        audio.play().catch((err) => console.warn("[parley:voice] playback:", err.name, err.message));
      };
      pc.onicecandidate = (e) => onCandidate(c, e.candidate);
      pc.onconnectionstatechange = () => onConnectionState(c);
      pc.oniceconnectionstatechange = () => onIceState(c);
      await pc.setLocalDescription(await pc.createOffer());
      if (c.ended) return;
      mark("offer");
      const res = await fetch(backend + st.session.voice_path, { method: "POST", credentials: "omit",
        headers: { ...auth(), "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
      if (res.status !== 201) throw await readError(res);
      c.location = new URL(res.headers.get("Location"), backend + "/").href;
      c.legId = c.location.slice(c.location.lastIndexOf("/") + 1);
      const answer = await res.text();
      if (c.ended) { deleteLeg(c.location); return; } // hung up while we waited
      mark("answer");
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      c.canTrickle = true;
      flushCandidates(c);
    } catch (e) {
      if (c.ended) return;
      console.warn("[parley:voice] call setup failed:", e.code || e.name, e.message);
      reportError(e.code || "VOICE_FAILED", e.message);
      addNote(human(e.code ? e : apiError("", e.message)) + " You can keep typing.", "error");
      endCall(c, "failed", true, e.code || "");
    }
  }

  function onCandidate(c, cand) {
    if (c.ended) return;
    if (!cand) c.endOfCandidates = true;
    else if (cand.candidate) c.cands.push(cand);
    else return; // an empty candidate: end of one generation; null follows
    flushCandidates(c);
  }
  // flushCandidates PATCHes the candidates gathered so far, one request at
  // a time, so the server sees them in order and end-of-candidates last.
  function flushCandidates(c) {
    if (!c.canTrickle || c.trickling || c.ended) return;
    const end = c.endOfCandidates && !c.endSent;
    if (!c.cands.length && !end) return;
    const frag = sdpFragment(c.pc.localDescription.sdp, c.cands.splice(0), end);
    if (!frag) return;
    c.trickling = true;
    if (end) c.endSent = true;
    st.trickle.patches++;
    st.trickle.candidates += (frag.match(/^a=candidate:/gm) || []).length;
    fetch(c.location, { method: "PATCH", credentials: "omit",
      headers: { ...auth(), "Content-Type": "application/trickle-ice-sdpfrag" }, body: frag })
      .then(async (res) => {
        if (res.ok) { if (end) st.trickle.end = true; return; }
        const e = await readError(res);
        console.warn("[parley:voice] trickle:", e.code, e.message);
      })
      .catch((e) => console.warn("[parley:voice] trickle:", e.message))
      .finally(() => { c.trickling = false; flushCandidates(c); });
  }
  // sdpFragment builds an RFC 8840 fragment of the current ICE generation.
  function sdpFragment(localSDP, cands, end) {
    const ufrag = (/a=ice-ufrag:(\S+)/.exec(localSDP) || [])[1];
    const pwd = (/a=ice-pwd:(\S+)/.exec(localSDP) || [])[1];
    if (!ufrag || !pwd) return "";
    const byMid = new Map();
    for (const cand of cands) {
      if (cand.usernameFragment && cand.usernameFragment !== ufrag) continue; // an earlier generation
      const mid = cand.sdpMid || "0";
      if (!byMid.has(mid)) byMid.set(mid, []);
      byMid.get(mid).push("a=" + cand.candidate);
    }
    if (!byMid.size) {
      if (!end) return "";
      byMid.set((/a=mid:(\S+)/.exec(localSDP) || [])[1] || "0", []);
    }
    const lines = ["a=ice-ufrag:" + ufrag, "a=ice-pwd:" + pwd];
    for (const [mid, cs] of byMid) {
      lines.push("m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:" + mid, ...cs);
      if (end) lines.push("a=end-of-candidates");
    }
    return lines.join("\r\n") + "\r\n";
  }

  function connectedOnce(c) {
    c.restarts = 0;
    if (c.marks.length) {
      c.marks.push("connected " + Math.round(performance.now() - c.t0) + " ms");
      console.info("[parley:voice] call set up: " + c.marks.join(", ") + " (leg " + c.legId + ")");
      c.marks = [];
    }
    setCall("connected");
  }
  function onConnectionState(c) {
    if (c !== st.call) return;
    switch (c.pc.connectionState) {
      case "connected": connectedOnce(c); break;
      case "disconnected": setCall("reconnecting"); break;
      case "failed": restartIce(c); break;
      case "closed": endCall(c, "ended", false); break;
    }
  }
  // onIceState: disconnected for more than 2 s, or failed, means an ICE
  // restart (RFC 8445 §9), re-offered over PATCH.
  function onIceState(c) {
    if (c !== st.call) return;
    const s = c.pc.iceConnectionState;
    if (s === "disconnected") {
      if (!c.restartTimer) {
        c.restartTimer = setTimeout(() => {
          c.restartTimer = 0;
          if (c === st.call && c.pc.iceConnectionState === "disconnected") restartIce(c);
        }, 2000);
      }
      return;
    }
    clearTimeout(c.restartTimer);
    c.restartTimer = 0;
    if (s === "failed") restartIce(c);
    else if ((s === "connected" || s === "completed") && c.pc.connectionState === "connected" && !c.restarting) connectedOnce(c);
  }
  async function restartIce(c) {
    if (c !== st.call || c.restarting || !c.location) return;
    if (c.restarts >= 3) {
      addNote("The voice call was lost. You can keep typing, or start the call again.", "error");
      endCall(c, "failed", true, "connection lost");
      return;
    }
    c.restarting = true;
    c.restarts++;
    setCall("reconnecting");
    console.info("[parley:voice] ICE restart", c.restarts);
    // Candidates of the new generation wait for the new answer.
    c.canTrickle = false;
    c.cands = [];
    c.endOfCandidates = false;
    c.endSent = false;
    try {
      c.pc.restartIce();
      await c.pc.setLocalDescription(await c.pc.createOffer({ iceRestart: true }));
      if (c.ended) return;
      const res = await fetch(c.location, { method: "PATCH", credentials: "omit",
        headers: { ...auth(), "Content-Type": "application/sdp" }, body: c.pc.localDescription.sdp });
      if (!res.ok) throw await readError(res);
      const answer = await res.text();
      if (c.ended) return;
      await c.pc.setRemoteDescription({ type: "answer", sdp: answer });
      c.canTrickle = true;
      flushCandidates(c);
    } catch (e) {
      console.warn("[parley:voice] ICE restart failed:", e.code || e.name, e.message);
      if (e.code === "LEG_NOT_FOUND" || e.code === "SESSION_ENDED") { endCall(c, "ended", false, e.code); return; }
    } finally {
      c.restarting = false;
    }
    if (c === st.call && c.pc.signalingState === "stable") onIceState(c);
  }
  function deleteLeg(location, keepalive) {
    return fetch(location, { method: "DELETE", headers: auth(), credentials: "omit", keepalive: !!keepalive })
      .then((res) => { if (!res.ok && res.status !== 404) console.warn("[parley:voice] hang-up:", res.status); })
      .catch((e) => console.warn("[parley:voice] hang-up:", e.message));
  }
  // endCall tears the call down here; hangUp also DELETEs the leg.
  function endCall(c, state, hangUp, reason) {
    if (c.ended) return;
    c.ended = true;
    clearTimeout(c.restartTimer);
    if (hangUp && c.location) deleteLeg(c.location);
    if (c.stream) c.stream.getTracks().forEach((t) => t.stop());
    if (c.pc) {
      c.pc.ontrack = c.pc.onicecandidate = c.pc.onconnectionstatechange = c.pc.oniceconnectionstatechange = null;
      c.pc.close();
    }
    if (ui) audioEl().srcObject = null;
    if (st.call !== c) return;
    st.call = null;
    st.agentState = "";
    setCall(state, reason && reason !== "visitor_hangup" && reason !== "visitor" ? reason : "");
  }
  // switchToText ends the call and goes on typing in the same conversation:
  // the mode frame makes the server hang up the leg.
  function switchToText() {
    const c = st.call;
    if (!c) return;
    if (st.ws && st.ws.readyState === WebSocket.OPEN && c.location) {
      st.ws.send(JSON.stringify({ type: "mode", mode: "chat" }));
      endCall(c, "ended", false);
    } else {
      endCall(c, "ended", true);
    }
    input().focus();
  }
  window.addEventListener("pagehide", () => {
    if (st.call && st.call.location) deleteLeg(st.call.location, true);
  });

  // ---- Triggers (evaluated here, configured in the widget) ----------------
  const trig = { visibleMs: 0, lastTick: performance.now(), maxScroll: 0, exit: false, lastActivity: 0, visits: 0, done: false, timer: 0 };
  function wildcard(pattern) {
    const re = pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*");
    return new RegExp("^" + re + "$", "i");
  }
  function cooling(r) {
    if (r.cooldown === "days") {
      const at = Number(sget("localStorage", K.trigger(r.id)) || 0);
      return at > 0 && Date.now() < at + (r.cooldown_days || 1) * 864e5;
    }
    return !!sget("sessionStorage", K.trigger(r.id));
  }
  function satisfied(r) {
    switch (r.type) {
      case "url_matches":
        try { return !!r.pattern && wildcard(r.pattern).test(location.pathname); } catch (_) { return false; }
      case "dwell_seconds": return trig.visibleMs >= r.value * 1000;
      case "scroll_depth": return trig.maxScroll >= r.value;
      case "exit_intent": return trig.exit;
      case "idle_seconds": return trig.lastActivity > 0 && performance.now() - trig.lastActivity >= r.value * 1000;
      case "repeat_visitor": return trig.visits >= (r.value || 2);
      default: return false;
    }
  }
  function evaluateTriggers() {
    const rules = (st.widget && st.widget.triggers) || [];
    if (trig.done || !rules.length || st.open || st.userOpened) return;
    const ready = rules.filter((r) => !cooling(r) && satisfied(r));
    if (!ready.length) return;
    ready.sort((a, b) => (b.priority || 0) - (a.priority || 0));
    const r = ready[0];
    trig.done = true; // one proactive open per page view
    clearInterval(trig.timer);
    if (r.cooldown === "days") sset("localStorage", K.trigger(r.id), String(Date.now()));
    else sset("sessionStorage", K.trigger(r.id), "1");
    st.triggersFired.push(r.id);
    openPanel({ source: "trigger", trigger: r.id, focus: false });
    if (r.message) addLine("agent proactive", r.message);
  }
  function scrollDepth() {
    const doc = document.documentElement;
    const room = Math.max(doc.scrollHeight, document.body ? document.body.scrollHeight : 0) - window.innerHeight;
    return room > 0 ? Math.min(100, (window.scrollY / room) * 100) : 0;
  }
  function startTriggers() {
    const rules = (st.widget && st.widget.triggers) || [];
    if (!rules.length) return;
    if (!sget("sessionStorage", K.visit)) {
      sset("sessionStorage", K.visit, "1");
      sset("localStorage", K.visits, String(Number(sget("localStorage", K.visits) || 0) + 1));
    }
    trig.visits = Number(sget("localStorage", K.visits) || 1);
    const activity = () => { trig.lastActivity = performance.now(); };
    for (const ev of ["mousemove", "keydown", "pointerdown", "touchstart", "wheel"]) {
      document.addEventListener(ev, activity, { passive: true, capture: true });
    }
    window.addEventListener("scroll", () => {
      activity();
      trig.maxScroll = Math.max(trig.maxScroll, scrollDepth());
      evaluateTriggers();
    }, { passive: true });
    document.addEventListener("mouseout", (e) => {
      if (!e.relatedTarget && e.clientY <= 0) { trig.exit = true; evaluateTriggers(); }
    });
    trig.timer = setInterval(() => {
      const now = performance.now();
      if (document.visibilityState === "visible") trig.visibleMs += now - trig.lastTick;
      trig.lastTick = now;
      evaluateTriggers();
    }, 500);
    evaluateTriggers();
  }

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
  // texts are the widget's texts in the visitor's language.
  function texts() {
    const w = st.widget;
    const tr = w.translations || {};
    const lang = language.toLowerCase();
    const keys = Object.keys(tr);
    const k = keys.find((x) => x.toLowerCase() === lang) || keys.find((x) => x.toLowerCase() === base) ||
      keys.find((x) => x.toLowerCase().split("-")[0] === base);
    const t = (k && tr[k]) || {};
    return { display_title: t.display_title || w.display_title, launcher_label: t.launcher_label || w.launcher_label,
      welcome_text: t.welcome_text || w.welcome_text || "" };
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
    const callbar = h("div", { class: "callbar", role: "status", "aria-live": "polite", hidden: true },
      h("span", { class: "dot", "aria-hidden": "true" }), callState, toText, h("div", { class: "captions" }, capYou, capAgent));

    const log = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": T.conversation, tabindex: "0" });
    const textarea = h("textarea", { rows: "1", "aria-label": T.message, placeholder: T.placeholder,
      maxlength: String(w.max_message_chars || 4000), enterkeyhint: "send" });
    const mic = h("button", { class: "iconbtn mic", type: "button", "aria-pressed": "false", "aria-label": T.startCall, title: T.startCall, hidden: true });
    mic.append(icon("mic"));
    const sendBtn = h("button", { class: "iconbtn send", type: "submit", "aria-label": T.send, title: T.send });
    sendBtn.append(icon("send"));
    const composer = h("form", { class: "composer" }, textarea, mic, sendBtn);
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

    ui = { host, shadow, root, launcher, live, panel, status, closeBtn, callbar, callState, capYou, capAgent, toText,
      log, input: textarea, mic, sendBtn, composer, audio, position };

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
    mic.addEventListener("click", () => {
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
    if (st.callState === "connected" && agent) text += " · " + agent;
    ui.callState.textContent = text;
    if (!on) { ui.capYou.textContent = ""; ui.capAgent.textContent = ""; }
    ui.mic.setAttribute("aria-pressed", String(on));
    ui.mic.setAttribute("aria-label", on ? T.endCall : T.startCall);
    ui.mic.title = on ? T.endCall : T.startCall;
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
    renderCall();
  }

  // ---- Boot -----------------------------------------------------------------
  async function boot() {
    let tries = 0;
    for (;;) {
      try {
        await resolve();
        break;
      } catch (e) {
        const retriable = e.code === "NETWORK" || e.status >= 500 || e.code === "RATE_LIMITED";
        if (!retriable || ++tries >= 4) {
          st.failed = e;
          const why = {
            ORIGIN_NOT_ALLOWED: "this page's origin (" + location.origin + ") is not in the widget's allowed_origins",
            UNKNOWN_WIDGET_KEY: "no widget has the key " + widgetKey,
            WIDGET_NOT_LIVE: "the widget is not live",
            NETWORK: "Parley at " + backend + " could not be reached (is data-backend-url right? does the page's Content-Security-Policy allow it in connect-src?)",
          }[e.code] || e.message;
          console.error("[parley] The widget is not shown: " + why + " (" + e.code + ").");
          reportError(e.code, e.message);
          return;
        }
        await new Promise((r) => setTimeout(r, 1000 * 2 ** tries));
      }
    }
    build();
    st.ready = true;
    const detail = { widget_id: st.widget.id, modes: st.widget.modes };
    for (const fn of [...(events.ready || [])]) { try { fn(detail); } catch (e) { console.error(e); } }
    window.dispatchEvent(new CustomEvent("parley:ready", { detail }));
    const saved = loadState();
    if (sget("sessionStorage", K.resume)) {
      // Back after a reload or a navigation: the same conversation.
      ensureSession().then(() => {
        if (saved.nav) { saveState({ nav: "" }); afterRoute(saved.nav, false); }
      }).catch(showError);
      if (saved.open) openPanel({ source: "resume", focus: false });
    }
    if (st.openWhenReady) openPanel(st.openWhenReady);
    startTriggers();
  }

  // ---- window.Parley --------------------------------------------------------
  const dbg = {
    // Test and console hooks; not an API.
    audioConstraints: null,
    pc: () => (st.call && st.call.pc) || null,
    session: () => st.session,
    shadow: () => ui && ui.shadow,
    restartIce: () => (st.call ? restartIce(st.call) : Promise.resolve()),
    state: () => ({ ready: st.ready, open: st.open, chat: st.chat, mode: st.mode, call: st.callState,
      legId: (st.call && st.call.legId) || "", agentState: st.agentState, micError: st.micError,
      lastSeq: st.lastSeq, errors: st.errors.slice(), navigations: st.navigations.slice(),
      triggers: st.triggersFired.slice(), outbox: st.outbox.length, resends: st.resends, trickle: { ...st.trickle } }),
  };
  window.Parley = {
    _loaded: true,
    _debug: dbg,
    /** open(anchor?) opens the panel; only from a real user gesture. */
    open(anchor) {
      const ua = navigator.userActivation;
      if (ua && !ua.isActive) {
        console.warn("[parley] Parley.open() rejected — must be called synchronously from a real user gesture " +
          "(a click or key handler; not after an await, in a timer or from the console). Call Parley.open() first, then do async work.");
        return false;
      }
      st.userOpened = true;
      openPanel({ source: "api", anchor: anchor || null, focus: true });
      return true;
    },
    /** close() closes the panel (a call goes on). */
    close() { closePanel("api"); return true; },
    /** identify(token) sets the visitor JWT for the next session. */
    identify(token) {
      identity = { visitorToken: typeof token === "string" ? token : "", userId: "", userHash: "" };
      return true;
    },
    /** onNavigate(handler) routes guided navigation through an SPA router; null clears it. */
    onNavigate(handler) { st.navHandler = typeof handler === "function" ? handler : null; return true; },
    /** navigate(path, selector?) navigates on this origin as the agent would. */
    navigate(path, selector) { return navigateTo(String(path), selector, { source: "page" }); },
    /** on(event, handler) subscribes; returns an unsubscribe function. */
    on(name, fn) {
      if (typeof fn !== "function") return () => {};
      (events[name] = events[name] || new Set()).add(fn);
      if (name === "ready" && st.ready) queueMicrotask(() => fn({ widget_id: st.widget.id, modes: st.widget.modes }));
      return () => events[name] && events[name].delete(fn);
    },
    off(name, fn) { return !!(events[name] && events[name].delete(fn)); },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => boot(), { once: true });
  else boot();
})();
