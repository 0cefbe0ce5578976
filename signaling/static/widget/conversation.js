// conversation.js turns what arrives on the chat socket into the
// conversation on screen: onFrame handles each frame (acks, streamed
// replies, transcripts, mode and media state, the agent's state), error
// frames either send a message again or mark it failed, agent actions
// (navigate, capture_request, handoff, end) are carried out, and lead
// capture shows the form the agent asked for, or offers to save an email
// or phone number the visitor wrote or said.

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
    case "typing": agentBack(); showTyping(true); break;
    case "chunk": {
      agentBack();
      if (st.doneIds.has(f.message_id)) break; // a reply re-sent for a duplicate
      if (st.cutIds.has(f.message_id)) break; // the visitor cut in
      showTyping(false);
      let el = st.replies.get(f.message_id);
      if (!el) {
        el = addLine("agent streaming", "", { id: f.message_id });
        st.replies.set(f.message_id, el);
        // A pill the agent just asked for goes below its question.
        const card = st.freshCard;
        if (card && card.isConnected && el.previousElementSibling === card) ui.log.insertBefore(el, card);
      }
      bodyOf(el).textContent += f.chunk;
      if (st.call && !st.call.spoken) caption("agent", bodyOf(el).textContent);
      scrollLog();
      break;
    }
    case "done": {
      showTyping(false);
      if (st.doneIds.has(f.message_id)) break;
      st.doneIds.add(f.message_id);
      const el = st.replies.get(f.message_id) || addLine("agent", "", { id: f.message_id });
      el.classList.remove("streaming");
      bodyOf(el).textContent = f.body;
      // Cut while Parley spoke it: the reply is the words the visitor heard.
      const heard = st.heardText.get(f.message_id);
      if (f.interrupted || st.cutIds.has(f.message_id)) markInterrupted(el, heard);
      st.replies.delete(f.message_id);
      if (st.call && !st.call.spoken) caption("agent", bodyOf(el).textContent);
      emit("message", { role: "agent", body: heard === undefined ? f.body : heard, via: st.call ? "voice" : "chat", id: f.message_id });
      break;
    }
    case "message": onVisitorMessage(f); break;
    case "error": onErrorFrame(f); break;
    case "agent_state":
      if (f.state !== "reconnecting") agentBack();
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
      // A call's start or end (a stored change: it has a seq) leaves a
      // marker in the transcript.
      if (f.seq && f.mode === "voice" && f.previous_mode === "chat") callMark("call_started", f.seq, f.ts ? Date.parse(f.ts) : Date.now());
      else if (f.seq && f.mode === "chat" && f.previous_mode === "voice") callMark("call_ended", f.seq, f.ts ? Date.parse(f.ts) : Date.now());
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
    case "speech": {
      // The visitor's voice activity on this call's leg: the call bar
      // shows that Parley hears them.
      const c = st.call;
      if (!c || (c.legId && f.leg_id !== c.legId)) break;
      st.hearing = f.state === "started";
      renderCall();
      emit("speech", { state: f.state });
      break;
    }
    case "caption": {
      // Parley speaks the reply (its speech pipeline): the call bar shows
      // each sentence while it is heard, not the text as it streams.
      const c = st.call;
      if (!c || (c.legId && f.leg_id && f.leg_id !== c.legId)) break;
      c.spoken = true;
      const timer = setTimeout(() => {
        c.captionTimers.delete(timer);
        if (st.call === c) caption("agent", f.text || "");
      }, Math.max(0, f.starts_in_ms || 0));
      c.captionTimers.add(timer);
      break;
    }
    case "interrupt": {
      // Captions of sentences that will not be heard now.
      if (st.call) clearCaptions(st.call);
      // The visitor spoke over the agent (barge-in): its reply stops
      // where they cut in; chunks still on their way are not shown.
      // When Parley spoke the reply, heard_text is the words of it the
      // visitor heard: the line shows those, cut off.
      const heard = typeof f.heard_text === "string" ? f.heard_text : undefined;
      if (f.message_id) {
        st.cutIds.add(f.message_id);
        if (heard !== undefined) st.heardText.set(f.message_id, heard);
        const el = st.replies.get(f.message_id) || agentLine(f.message_id);
        if (el) {
          markInterrupted(el, heard);
          if (st.call && heard !== undefined) caption("agent", bodyOf(el).textContent);
        }
      }
      const detail = { message_id: f.message_id || "", heard_ms: f.heard_ms || 0 };
      if (heard !== undefined) detail.heard_text = heard;
      emit("interrupt", detail);
      break;
    }
    case "media_state": {
      const c = st.call;
      if (!c || !c.legId || f.leg_id !== c.legId) break;
      if (f.state === "closed") endCall(c, "ended", false, f.reason);
      else if (f.state === "disconnected" || f.state === "failed") setCall("reconnecting");
      else if (f.state === "connected" && (c.pc ? c.pc.connectionState === "connected" : c.linked)) setCall("connected");
      break;
    }
  }
  noteSeq(f);
}
// onVisitorMessage shows a visitor turn that this composer did not send:
// typed in another tab, or spoken on a call and heard by Parley's speech
// pipeline (via "voice"; this session's own turns too), which says what it
// heard, or why it heard nothing (reason, a speech_* code).
function onVisitorMessage(f) {
  if (f.via !== "voice") {
    addLine("visitor", f.body);
    return;
  }
  if (!showVoiceTurn(f.message_id, f.body, f.reason) || !f.body) return;
  if (st.call) caption("you", f.body);
  emit("message", { role: "visitor", body: f.body, via: "voice", id: f.message_id });
  offerVolunteered(f.body);
}
// Codes after which the message is kept and answered once an agent takes
// the conversation.
const WAITING_CODES = ["AGENT_UNAVAILABLE", "CONVERSATION_LIMIT"];
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
    if (i >= 0 && !WAITING_CODES.includes(f.code)) {
      // Refused, nothing stored: mark the line, let the visitor retry.
      const m = st.outbox.splice(i, 1)[0];
      m.el.classList.remove("pending");
      m.el.classList.add("failed");
      m.el.title = human(err);
    }
  }
  if (WAITING_CODES.includes(f.code)) {
    // Nobody holds the conversation (no agent, or the site is at its
    // conversation limit): one note (not one per message), and a call says
    // so on its bar; both go when an agent answers (agentBack).
    st.unavailable = true;
    reportError(f.code, f.message);
    showTyping(false);
    const old = ui && ui.log.querySelector(".note.unavailable");
    if (old) old.remove();
    addNote(human(err), "error unavailable");
    renderCall();
    return;
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
// agentBack: an agent holds the conversation again (it was assigned, or
// it answers): the "nobody is available" note and call bar state go.
function agentBack() {
  if (!st.unavailable) return;
  st.unavailable = false;
  if (ui) for (const el of ui.log.querySelectorAll(".note.unavailable")) el.remove();
  renderCall();
  emit("agent", { available: true });
}
// callMark puts a call's start or end in the transcript, once per log
// position (the live frame and the history may both bring it): "Call
// started 14:02", "Call ended (2 min)". at is when (ms since the epoch);
// durationMs, when known, the call's length (else from its start mark).
function callMark(type, seq, at, durationMs) {
  if (!ui) return;
  if (seq && st.marks.has(seq)) return;
  if (seq) st.marks.add(seq);
  const when = new Date(Number.isFinite(at) ? at : Date.now());
  let text;
  if (type === "call_started") {
    st.callStartedAt = when.getTime();
    text = fmt(T.callStarted, { time: localeTime(when, { hour: "2-digit", minute: "2-digit" }) });
  } else {
    const ms = durationMs !== undefined && durationMs !== null ? durationMs : st.callStartedAt ? when.getTime() - st.callStartedAt : -1;
    st.callStartedAt = 0;
    text = ms >= 0 ? fmt(T.callEnded, { duration: ms < 60000 ? fmt(T.seconds, { n: Math.max(1, Math.round(ms / 1000)) })
      : fmt(T.minutes, { n: Math.round(ms / 60000) }) }) : T.callEndedAt;
  }
  const el = addNote(text, "callmark " + type.replace("_", "-"));
  if (el) {
    el.dataset.seq = String(seq || "");
    el.setAttribute("role", "separator");
    el.title = localeTime(when);
  }
}
// localeTime is when in the visitor's language (the browser's when that
// tag is not one Intl knows); with no options, the date too.
function localeTime(when, opts) {
  const f = (loc) => (opts ? when.toLocaleTimeString(loc, opts) : when.toLocaleString(loc));
  try { return f(language); } catch (_) { return f(undefined); }
}
function showError(e) {
  if (e.code === "CONVERSATION_CLOSED") return; // its note says so already
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
