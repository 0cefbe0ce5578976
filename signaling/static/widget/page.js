// page.js owns what the widget does with the host page. Guided navigation
// moves the page for the agent or the site, on the same origin only (a
// scroll, the site's router, an SPA popstate, or a full page load after
// which the conversation resumes). Triggers watch the visitor's activity
// (dwell, scroll depth, exit intent, idle, repeat visits, the URL) and open
// the panel once per page view, as the widget's rules say.

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
