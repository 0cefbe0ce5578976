// protocol.js owns the wire to Parley (docs/API.md): the HTTP calls and
// their errors, resolve and its single-use challenge, the session (created,
// resumed after a reload or a navigation with the stored resume token, or
// started afresh when that token is stale), and the chat WebSocket: connect
// and reconnect with backoff (since_seq, so no event is missed), and the
// outbox of messages not yet acked, sent again when the socket opens or
// after a refusal that may pass. On screen it only puts a new session's
// history or welcome line; what frames mean is conversation.js's job, and
// the voice call's signalling is voice.js's.

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
  // Closed by an operator: a new conversation starts only when the
  // visitor writes or asks for one (newConversation).
  if (st.closed) return Promise.reject(apiError("CONVERSATION_CLOSED", "the conversation was closed"));
  if (!st.sessionP) {
    st.sessionP = createSession(true).finally(() => { st.sessionP = null; });
  }
  return st.sessionP;
}
const langTag = /^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{1,8})*$/;
// identityResumes reports whether the widget lets this visitor's identity
// continue their latest conversation without a resume token (the widget's
// identity_resume: a user_hash, which never expires, only under "any").
function identityResumes() {
  const policy = st.widget && st.widget.identity_resume;
  if (identity.visitorToken) return policy === "expiring" || policy === "any";
  return !!(identity.userId && identity.userHash) && policy === "any";
}
async function createSession(mayResume, retried, byIdentity) {
  const req = { widget_key: widgetKey, challenge: await takeChallenge(), mode: "chat" };
  if (langTag.test(language) && language.length <= 35) req.language = language;
  const sentIdentity = !!(identity.visitorToken || (identity.userId && identity.userHash));
  if (identity.visitorToken) req.visitor_token = identity.visitorToken;
  else if (identity.userId && identity.userHash) { req.user_id = identity.userId; req.user_hash = identity.userHash; }
  const resume = mayResume ? sget("sessionStorage", K.resume) : null;
  if (resume) req.resume_token = resume;
  else if (byIdentity) req.resume_identity = true;
  let s;
  try {
    s = await api("/v1/sessions", { method: "POST", body: req });
  } catch (e) {
    if (resume && e.code === "CONVERSATION_CLOSED") {
      conversationClosed();
      throw e;
    }
    if (resume && ["RESUME_TOKEN_INVALID", "SESSION_EXPIRED", "CONVERSATION_NOT_FOUND"].includes(e.code)) {
      // A stale token (another day, another server): start afresh, or
      // carry on where an identified visitor left off, if the widget lets
      // their identity resume.
      sdel("sessionStorage", K.resume);
      sdel("sessionStorage", K.state);
      return createSession(false, retried, identityResumes());
    }
    if (byIdentity && e.code === "IDENTITY_RESUME_NOT_ALLOWED") return createSession(false, retried, false);
    if (sentIdentity && (e.code === "INVALID_VISITOR_TOKEN" || e.code === "TOKEN_EXPIRED") &&
        st.widget && st.widget.identity_policy !== "identified") {
      console.warn("[parley:identity] The visitor identity was refused (" + e.code + ": " + e.message +
        "); continuing as a guest. Mint a fresh token on your server.");
      identity = { visitorToken: "", userId: "", userHash: "" };
      return createSession(mayResume, retried, false);
    }
    if (e.code === "CHALLENGE_INVALID" && !retried) {
      // Expired on a slow start, or the visitor's address changed
      // (Wi-Fi to mobile): resolve again, once.
      st.challenge = "";
      return createSession(mayResume, true, byIdentity);
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
  const calls = (h.calls || []).slice();
  const marksBefore = (seq) => {
    while (calls.length && (seq === undefined || calls[0].seq < seq)) {
      const c = calls.shift();
      callMark(c.type, c.seq, Date.parse(c.at), c.duration_ms);
    }
  };
  for (const m of h.messages) {
    marksBefore(m.seq);
    if (m.seq) st.lastSeq = Math.max(st.lastSeq, m.seq);
    if (m.role === "visitor" && m.via === "voice") {
      showVoiceTurn(m.id, m.body, m.unheard); // what Parley heard, or why it heard nothing
      continue;
    }
    const el = addLine(m.role + (m.attachments && m.attachments.length ? " attachment" : ""), m.body,
      { id: m.role === "agent" ? m.id : "" });
    if (m.attachments && m.attachments.length) el.prepend(icon("clip", T.attached, "via"));
    // A reply Parley spoke and the visitor cut keeps what was written
    // aside (written): its body is the words they heard.
    if (m.interrupted) markInterrupted(el, typeof m.written === "string" ? m.body : undefined);
    if (m.role === "agent") st.doneIds.add(m.id);
  }
  marksBefore(undefined); // a call after the last message (or still on)
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
    if (reason === "CONVERSATION_CLOSED") {
      conversationClosed();
      return;
    }
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
// conversationClosed: an operator closed the conversation. The widget
// says so and starts a new one only when the visitor writes, calls or
// presses the note's button (reopen). Until then its resume token stays:
// after a reload, the refused resume says closed again.
function conversationClosed() {
  st.session = null;
  if (st.call) endCall(st.call, "ended", false, "CONVERSATION_CLOSED");
  if (st.closed) return;
  st.closed = true;
  const note = addNote(T.closed, "closed");
  if (note) {
    const btn = h("button", { type: "button", class: "newconv", text: T.newConversation });
    btn.addEventListener("click", () => {
      btn.remove();
      reopen();
      ensureSession().catch(showError);
    });
    note.append(" ", btn);
  }
  updateControls();
  emit("closed", { reason: "CONVERSATION_CLOSED" });
}
// reopen: the visitor chose to go on after a close: the closed
// conversation is forgotten and the next session starts a new one.
function reopen() {
  if (!st.closed) return;
  st.closed = false;
  sdel("sessionStorage", K.resume);
  sdel("sessionStorage", K.state);
  st.lastSeq = 0;
}
function wire(m) {
  const f = { type: "message", body: m.body, client_message_id: m.client_message_id };
  if (m.uploadIds) f.upload_ids = m.uploadIds;
  return f;
}
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
// send sends a message; el, when given, is the line already showing it (an
// attachment's), and uploadIds the uploads it carries.
function send(body, el, uploadIds) {
  body = body.trim();
  if (!body) return;
  st.freshCard = null;
  const m = { body, client_message_id: uuid() };
  if (uploadIds) m.uploadIds = uploadIds;
  m.el = el || addLine("visitor pending", body);
  reopen(); // writing after a close starts a new conversation
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

