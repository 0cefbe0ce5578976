// attach.js owns attachments: a file the visitor picks with the composer's
// clip button is checked against what resolve said the server takes (size,
// type), uploaded to the session's uploads with its progress on its line,
// then sent as a message carrying it (upload_ids); a refusal, here or the
// server's (413, 415), is said on the line in the visitor's language.

// ---- Uploads ------------------------------------------------------------
// upload POSTs one file to the session's uploads (docs/API.md), reporting
// progress (0–100) as it goes; fetch cannot report an upload's progress,
// XMLHttpRequest can. It resolves to the upload, or rejects with the API
// error (413 PAYLOAD_TOO_LARGE, 415 UNSUPPORTED_MEDIA_TYPE, …).
function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("POST", backend + "/v1/sessions/" + st.session.session_id + "/uploads");
    x.setRequestHeader("Authorization", auth().Authorization);
    x.responseType = "text";
    x.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(Math.round((100 * e.loaded) / e.total)); };
    x.onerror = () => reject(apiError("NETWORK", "the upload could not be sent"));
    x.onload = () => {
      let body = {};
      try { body = JSON.parse(x.responseText || "{}"); } catch (_) { /* not JSON */ }
      if (x.status === 201) { resolve(body); return; }
      const err = body && body.error;
      reject(apiError((err && err.code) || "HTTP_" + x.status, (err && err.message) || x.statusText, x.status));
    };
    const form = new FormData();
    form.append("file", file, file.name);
    x.send(form);
  });
}

// sendFile sends a file the visitor picked: checked here first against
// what resolve said the server takes (size, type), then uploaded with its
// progress on its line, then sent as a message carrying it. A refusal
// (here or by the server: 413, 415) is said on the line, in the visitor's
// language.
async function sendFile(file) {
  const lim = st.widget.uploads || {};
  const el = addLine("visitor attachment pending", file.name);
  el.prepend(icon("clip", T.attached, "via"));
  const progress = h("span", { class: "progress", role: "status", text: fmt(T.uploading, { pct: 0 }) });
  el.append(progress);
  const fail = (text) => {
    el.classList.remove("pending");
    el.classList.add("failed");
    progress.textContent = text;
    emit("error", { code: "UPLOAD_REFUSED", message: text });
  };
  const max = lim.max_bytes || 0;
  if (max && file.size > max) return fail(fmt(T.tooBig, { name: file.name, max: sizeText(max) }));
  if (!typeAllowed(file.type, lim.types || [])) return fail(fmt(T.badType, { name: file.name }));
  st.uploading++;
  try {
    await ensureSession();
    const u = await upload(file, (pct) => { progress.textContent = fmt(T.uploading, { pct }); });
    progress.remove();
    el.dataset.upload = u.upload_id;
    send(file.name, el, [u.upload_id]);
  } catch (e) {
    if (e.code === "PAYLOAD_TOO_LARGE") fail(fmt(T.tooBig, { name: file.name, max: sizeText(max) }));
    else if (e.code === "UNSUPPORTED_MEDIA_TYPE") fail(fmt(T.badType, { name: file.name }));
    else fail(fmt(T.uploadFailed, { name: file.name, why: human(e) }));
  } finally {
    st.uploading--;
  }
}
// typeAllowed: a type of the browser's against accepted patterns
// ("image/*", "application/pdf"). An unknown type ("") is left to the
// server, which decides by the content.
function typeAllowed(type, patterns) {
  if (!type || !patterns.length) return true;
  return patterns.some((p) => (p.endsWith("/*") ? type.startsWith(p.slice(0, -1)) : type === p));
}
function sizeText(n) {
  return n >= 1 << 20 ? Math.round(n / (1 << 20)) + " MB" : n >= 1024 ? Math.round(n / 1024) + " KB" : n + " B";
}
