// voice.js owns the voice call: the microphone (and why it failed),
// WebRTC to Parley with WHIP and trickle ICE, ICE restarts, and hanging up.

// ---- Voice --------------------------------------------------------------
// One call at a time: getUserMedia → RTCPeerConnection → the offer POSTed
// as soon as it exists to the session's voice_path (WHIP, RFC 9725), then
// our ICE candidates PATCHed as they come (trickle ICE, RFC 8838, as
// application/trickle-ice-sdpfrag of RFC 8840) with a=end-of-candidates
// last. The 201's Location is the leg: PATCH, and DELETE to hang up. Its
// ETag names the leg's ICE session: trickle PATCHes carry it in If-Match,
// so a candidate of a session a restart replaced gets 412, not applied;
// a restart sends If-Match: * and takes the new ETag from its 200.
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

// openMic asks for the microphone for call c (either transport) and
// keeps the stream on it; null when the visitor refused (reported) or the
// call ended meanwhile (the stream is stopped).
async function openMic(c) {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: dbg.audioConstraints ||
      { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
  } catch (e) {
    if (c.ended) return null;
    c.ended = true;
    st.call = null;
    micFailed(micReason(e), e);
    return null;
  }
  if (c.ended) { stream.getTracks().forEach((t) => t.stop()); return null; }
  c.stream = stream;
  return stream;
}
async function startCall() {
  if (st.call) return;
  reopen(); // calling after a close starts a new conversation
  st.micError = "";
  const pre = micPrecheck();
  if (pre) return micFailed(pre, null);
  if (liveKitTransport()) return startLiveKitCall(); // livekit.js
  st.trickle = { patches: 0, candidates: 0, end: false };
  const c = st.call = { pc: null, stream: null, location: "", legId: "", etag: "", sawVoice: false, ended: false,
    cands: [], endOfCandidates: false, endSent: false, canTrickle: false, trickling: false,
    restartTimer: 0, restarting: false, restarts: 0, t0: performance.now(), marks: [],
    spoken: false, captionTimers: new Set() }; // captions of the sentences Parley speaks
  const mark = (what) => c.marks.push(what + " " + Math.round(performance.now() - c.t0) + " ms");
  setCall("connecting");
  const stream = await openMic(c);
  if (!stream) return;
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
    c.etag = res.headers.get("ETag") || "*"; // "*": a proxy hid it; trickle anyway
    const answer = await res.text();
    if (c.ended) { deleteLeg(c.location); return; } // hung up while we waited
    mark("answer");
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    c.canTrickle = true;
    flushCandidates(c);
  } catch (e) {
    if (c.ended) return;
    setupFailed(c, e, "call setup", human(e.code ? e : apiError("", e.message)) + " " + T.keepTyping);
  }
}

// setupFailed ends call c, whose setup (what, for the console) threw e:
// the console and the error report get e, the visitor gets note.
function setupFailed(c, e, what, note) {
  console.warn("[parley:voice] " + what + " failed:", e.code || e.name, e.message);
  reportError(e.code || "VOICE_FAILED", e.message);
  addNote(note, "error");
  endCall(c, "failed", true, e.code || "");
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
    headers: { ...auth(), "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": c.etag }, body: frag })
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
    addNote(T.callLost, "error");
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
      headers: { ...auth(), "Content-Type": "application/sdp", "If-Match": "*" }, body: c.pc.localDescription.sdp });
    if (!res.ok) throw await readError(res);
    c.etag = res.headers.get("ETag") || c.etag;
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
// clearCaptions drops the captions of sentences not yet heard.
function clearCaptions(c) {
  for (const t of c.captionTimers) clearTimeout(t);
  c.captionTimers.clear();
}
function endCall(c, state, hangUp, reason) {
  if (c.ended) return;
  c.ended = true;
  clearCaptions(c);
  clearTimeout(c.restartTimer);
  if (c.teardown) c.teardown(state, reason); // a LiveKit call leaves its room (livekit.js)
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
