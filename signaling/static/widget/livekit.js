// livekit.js owns the voice call of a widget whose voice goes over LiveKit
// (voice_transport: livekit, docs/API.md "LiveKit transport"): loading the
// vendored livekit-client SDK on demand, the participant token, joining
// the conversation's LiveKit room, publishing the microphone, playing the
// bridge's audio, and LiveKit's reconnects and disconnects.

// ---- LiveKit transport ------------------------------------------------
// startCall (voice.js) hands over to startLiveKitCall once the mic
// precheck passed. The call object has the direct path's shape (voice.js,
// conversation.js and ui.js read it), with pc null, the LiveKit Room in
// room, linked true while the browser's own media link to LiveKit is up,
// and teardown, which endCall runs: leave the room, detach the audio.
// Hanging up DELETEs the leg at location (the token's Location header);
// switching to text sends the mode frame, as on the direct path. Either
// way Parley's bridge leaves and deletes the room.
const liveKitTransport = () => !!(st.widget && st.widget.voice_transport === "livekit");

// loadLiveKitClient injects the vendored SDK (served by Parley next to
// widget.js, with Subresource Integrity) the first time a call needs it;
// pages whose widget uses Parley's own WebRTC never fetch it. The served
// file hands its exports over with an event on document instead of a
// global (vendorjs.go).
function loadLiveKitClient() {
  if (st.livekitClient) return st.livekitClient;
  const src = backend + LIVEKIT_CLIENT.path;
  st.livekitClient = new Promise((resolve, reject) => {
    let sdk = null;
    const onSDK = (e) => { sdk = e.detail; };
    document.addEventListener(LIVEKIT_CLIENT.event, onSDK, { once: true });
    const s = document.createElement("script");
    s.src = src;
    s.async = true;
    s.crossOrigin = "anonymous";
    s.integrity = LIVEKIT_CLIENT.integrity;
    s.onload = () => {
      document.removeEventListener(LIVEKIT_CLIENT.event, onSDK);
      if (sdk && sdk.Room) {
        // The SDK's own info lines (signalling, track stats) stay out of the
        // site's console; its warnings and errors stay in.
        if (typeof sdk.setLogLevel === "function") sdk.setLogLevel("warn");
        resolve(sdk);
      }
      else reject(apiError("LIVEKIT_CLIENT_UNAVAILABLE", src + " loaded but did not hand over the LiveKit SDK"));
    };
    s.onerror = () => {
      document.removeEventListener(LIVEKIT_CLIENT.event, onSDK);
      reject(apiError("LIVEKIT_CLIENT_UNAVAILABLE", "could not load " + src +
        " (blocked by the page's Content-Security-Policy script-src, a network error, or an integrity mismatch)"));
    };
    (document.head || document.documentElement).appendChild(s);
  });
  // A failed load may be tried again at the next call.
  st.livekitClient.catch(() => { st.livekitClient = null; });
  return st.livekitClient;
}

async function startLiveKitCall() {
  st.trickle = { patches: 0, candidates: 0, end: false }; // the direct path's: none on this call
  const c = st.call = { pc: null, stream: null, location: "", legId: "", sawVoice: false, ended: false, restarts: 0,
    t0: performance.now(), marks: [], spoken: false, captionTimers: new Set(),
    transport: "livekit", room: null, joined: false, linked: false, reconnecting: false, teardown: null };
  const mark = (what) => c.marks.push(what + " " + Math.round(performance.now() - c.t0) + " ms");
  setCall("connecting");
  // The SDK and the session load while the visitor answers the mic prompt.
  const sdkP = loadLiveKitClient();
  sdkP.catch(() => {}); // awaited below
  const stream = await openMic(c);
  if (!stream) return;
  mark("mic");
  try {
    const LK = await sdkP;
    if (c.ended) return;
    mark("sdk");
    await ensureSession();
    if (!st.session.voice_path) throw apiError("VOICE_UNAVAILABLE", "no voice_path");
    const res = await fetch(backend + st.session.voice_path, { method: "POST", credentials: "omit", headers: auth() });
    if (!res.ok) throw await readError(res);
    const grant = await res.json();
    c.location = new URL(res.headers.get("Location") || st.session.voice_path.replace(/livekit-token$/, "livekit/" + grant.leg_id),
      backend + "/").href;
    c.legId = grant.leg_id || c.location.slice(c.location.lastIndexOf("/") + 1);
    if (c.ended) { deleteLeg(c.location); return; } // hung up while we waited
    mark("token");
    const room = c.room = new LK.Room({ adaptiveStream: false, dynacast: false, disconnectOnPageLeave: true });
    c.teardown = (state, reason) => leaveRoom(c, state, reason);
    watchRoom(c, LK, room);
    try {
      await room.connect(grant.livekit_url, grant.token, { autoSubscribe: true });
    } catch (e) {
      throw apiError("LIVEKIT_UNAVAILABLE", "could not join the LiveKit room at " + grant.livekit_url + ": " + e.message +
        " (is " + grant.livekit_url + " reachable, and allowed by the page's Content-Security-Policy connect-src?)");
    }
    if (c.ended) return;
    c.joined = true;
    mark("joined");
    const [track] = stream.getAudioTracks();
    // Plain Opus, no DTX nor RED: the bridge hears what the direct path hears.
    await room.localParticipant.publishTrack(track, { source: LK.Track.Source.Microphone, name: "microphone",
      dtx: false, red: false, stopMicTrackOnMute: false });
    if (c.ended) return;
    mark("published");
    c.linked = true;
    liveKitConnected(c);
  } catch (e) {
    if (c.ended) return;
    // LiveKit's own failures (LIVEKIT_*) read as voice being unavailable.
    setupFailed(c, e, "LiveKit call setup", e.code && ERRORS[e.code] ? human(e) + " " + T.keepTyping : ERRORS.VOICE_UNAVAILABLE);
  }
}

// liveKitConnected: the call is up (again); the first time, the console
// gets how long each step took.
function liveKitConnected(c) {
  if (c !== st.call || !c.linked) return;
  if (c.marks.length) {
    c.marks.push("connected " + Math.round(performance.now() - c.t0) + " ms");
    console.info("[parley:voice] LiveKit call set up: " + c.marks.join(", ") + " (leg " + c.legId + ", livekit-client " +
      LIVEKIT_CLIENT.version + ")");
    c.marks = [];
  }
  setCall("connected");
}

// watchRoom maps the Room's events onto the call bar, as the direct path
// maps its RTCPeerConnection's.
function watchRoom(c, LK, room) {
  const E = LK.RoomEvent;
  room.on(E.TrackSubscribed, (track) => {
    if (c !== st.call || track.kind !== "audio") return;
    const audio = audioEl();
    track.attach(audio);
    audio.play().catch((err) => console.warn("[parley:voice] playback:", err.name, err.message));
  });
  room.on(E.TrackUnsubscribed, (track) => { if (track.kind === "audio" && ui) track.detach(audioEl()); });
  room.on(E.AudioPlaybackStatusChanged, () => {
    if (c === st.call && !room.canPlaybackAudio) {
      console.warn("[parley:voice] the browser blocked the agent's audio (autoplay); it starts at the next click in the widget");
      const resume = () => room.startAudio().catch(() => {});
      ui.root.addEventListener("click", resume, { once: true });
    }
  });
  room.on(E.Reconnecting, () => {
    if (c !== st.call) return;
    c.linked = false;
    c.reconnecting = true;
    c.restarts++;
    console.info("[parley:voice] LiveKit reconnecting", c.restarts);
    setCall("reconnecting");
  });
  room.on(E.Reconnected, () => {
    if (c !== st.call) return;
    c.linked = true;
    c.reconnecting = false;
    liveKitConnected(c);
  });
  room.on(E.Disconnected, (reason) => {
    if (c.ended || !c.joined) return; // a failed join: room.connect throws
    c.linked = false;
    const R = LK.DisconnectReason || {};
    const name = (R[reason] !== undefined && typeof R[reason] === "string") ? R[reason] : String(reason);
    if (reason === R.ROOM_DELETED || reason === R.PARTICIPANT_REMOVED || reason === R.CLIENT_INITIATED) {
      // Parley ended the leg (its media_state frame says why) or we did.
      endCall(c, "ended", false, "livekit_" + name.toLowerCase());
      return;
    }
    console.warn("[parley:voice] LiveKit disconnected:", name);
    reportError("LIVEKIT_DISCONNECTED", "disconnected from LiveKit: " + name);
    addNote(T.callLost, "error");
    endCall(c, "failed", true, "connection lost");
  });
  room.on(E.MediaDevicesError, (e) => console.warn("[parley:voice] LiveKit media devices:", e && e.message));
}

// leaveRoom is the call's teardown (endCall): leave the room without
// waiting, and let go of the audio element. A call Parley ended while
// LiveKit was reconnecting was lost, not hung up: when LiveKit cannot
// resume, it rejoins the room as a new participant, and Parley's bridge
// ends the leg when the visitor's first participant leaves
// (livekit_visitor_left).
function leaveRoom(c, state, reason) {
  const room = c.room;
  if (!room) return;
  if (c.reconnecting && state === "ended" && /^livekit_/.test(reason || "")) {
    console.warn("[parley:voice] the LiveKit call was lost while reconnecting (" + reason + ")");
    reportError("LIVEKIT_DISCONNECTED", "the call was lost while LiveKit reconnected (" + reason + ")");
    addNote(T.callLost, "error");
  }
  c.room = null;
  c.linked = false;
  room.removeAllListeners();
  for (const p of room.remoteParticipants.values()) {
    for (const pub of p.audioTrackPublications.values()) if (pub.track && ui) pub.track.detach(audioEl());
  }
  room.disconnect(true).catch((e) => console.warn("[parley:voice] leaving the LiveKit room:", e && e.message));
}
