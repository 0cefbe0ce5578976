// main.js runs last, once every part's functions and constants exist. boot
// resolves the widget (retrying a few times when Parley can't be reached),
// builds the UI, resumes the conversation this tab had, and starts the
// triggers. window.Parley is the page's API (docs/WIDGET.md); _debug is for
// tests and the console. The last lines start the widget.

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
        if (e.code === "ORIGIN_NOT_ALLOWED") {
          // The most common first-deploy mistake: said at once, never retried.
          console.error("[parley] ORIGIN_NOT_ALLOWED: the widget with key " + widgetKey + " does not allow this page's origin " +
            location.origin + ". Add " + location.origin + " to the widget's allowed_origins (admin API: PUT /v1/admin/widgets/{id}); " +
            "until then the widget is not shown on this page.");
          reportError(e.code, e.message, { origin: location.origin, widget_key: widgetKey });
          return;
        }
        const why = {
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
  room: () => (st.call && st.call.room) || null, // a LiveKit call's Room (livekit.js)
  session: () => st.session,
  shadow: () => ui && ui.shadow,
  restartIce: () => (st.call ? restartIce(st.call) : Promise.resolve()),
  state: () => ({ ready: st.ready, open: st.open, chat: st.chat, mode: st.mode, call: st.callState,
    legId: (st.call && st.call.legId) || "", agentState: st.agentState, micError: st.micError, hearing: st.hearing,
    interrupted: [...st.cutIds],
    lastSeq: st.lastSeq, errors: st.errors.slice(), navigations: st.navigations.slice(),
    triggers: st.triggersFired.slice(), outbox: st.outbox.length, resends: st.resends, trickle: { ...st.trickle } }),
};
window.Parley = {
  _loaded: true,
  _debug: dbg,
  /** open(anchor?) opens the panel; only from a real user gesture. */
  open(anchor) {
    if (st.failed) {
      console.warn("[parley] Parley.open() ignored: the widget is not shown (" + st.failed.code + "; see the error above).");
      return false;
    }
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
