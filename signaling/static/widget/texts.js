// texts.js owns every text a visitor reads, and picks the language. T is
// the widget's own words in the visitor's language (English where that
// language has no text), ERRORS the API's error codes in plain words
// (human), MIC the microphone diagnoses (a line for the site's developer in
// the console, a text for the visitor), and texts() the site's own texts
// (title, launcher label, welcome) from the widget's translations.

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
    hearing: "Hearing you…", interrupted: "(interrupted)",
    closed: "This conversation was closed.", newConversation: "Start a new conversation",
    // A turn of the visitor's that Parley's speech recognition could not
    // hear, by the speech_* code of why (speech_failed for any other).
    unheard: {
      speech_down: "Sorry — we couldn't make out what you said (speech recognition is unavailable). You can type instead.",
      speech_unavailable: "Sorry — we couldn't make out what you said (speech recognition isn't set up here). You can type instead.",
      speech_timeout: "Sorry — we couldn't make out what you said in time. Please say it again.",
      speech_busy: "Sorry — we couldn't keep up with what you said. Please say it again, a little slower.",
      speech_failed: "Sorry — we couldn't make out what you said. Please say it again.",
    },
    navigating: "Taking you to {label}…", navRefused: "That page can't be opened from here.",
    captureAsked: "The assistant asked for your details:", capShare: "Share", capSave: "Save", capNo: "No thanks",
    capDismiss: "Dismiss", capSaved: "Thanks! Saved your {kind}: {value}",
    volunteer: { email: "Save {value} as your email so we can follow up?", phone: "Save {value} as your phone number so we can follow up?" },
    kinds: { email: "email", phone: "phone number", name: "name" },
    labels: { email: "Your email", phone: "Your phone number", name: "Your name" },
    bad: { email: "That doesn't look like an email address.", phone: "That doesn't look like a phone number (6 to 15 digits).",
      name: "Please enter a name of at most 100 characters." },
    ended: "The assistant ended the conversation.", handoff: "Connecting you to a person…",
    keepTyping: "You can keep typing.", callLost: "The voice call was lost. You can keep typing, or start the call again.",
    nobody: "Nobody is available right now", nobodyCall: "Stay on the call or type: we'll answer as soon as someone is.",
    callStarted: "Call started {time}", callEnded: "Call ended ({duration})", callEndedAt: "Call ended",
    minutes: "{n} min", seconds: "{n} s",
    micInsecure: "Voice calls need a secure (https) page. You can type instead.",
    micPolicy: "This page does not allow the microphone. You can type instead.",
    attach: "Attach a file", uploading: "Uploading… {pct}%", attached: "Attachment",
    tooBig: "{name} is too large to send (the limit is {max}).",
    badType: "{name} can't be sent: only images, PDF and plain text files are accepted.",
    uploadFailed: "{name} could not be sent: {why}",
  },
  fr: {
    open: "Ouvrir la discussion", close: "Fermer la discussion", send: "Envoyer", placeholder: "Écrivez un message…",
    message: "Message", conversation: "Conversation", startCall: "Démarrer un appel vocal", toText: "Passer au texte",
    endCall: "Terminer l'appel et écrire", typing: "L'assistant écrit", you: "Vous", poweredBy: "Propulsé par",
    reconnecting: "Reconnexion…", connecting: "Connexion…", navigating: "Je vous emmène vers {label}…",
    call: { connecting: "Connexion de l'appel…", connected: "En appel", reconnecting: "Reconnexion de l'appel…",
      failed: "L'appel a échoué", ended: "Appel terminé" },
    agent: { listening: "À l'écoute", thinking: "Réflexion…", speaking: "Parle", idle: "" },
    hearing: "Je vous entends…", interrupted: "(interrompu)",
    closed: "Cette conversation a été close.", newConversation: "Commencer une nouvelle conversation",
    unheard: {
      speech_down: "Désolé — nous n'avons pas pu comprendre ce que vous avez dit (la reconnaissance vocale est indisponible). Vous pouvez écrire à la place.",
      speech_unavailable: "Désolé — nous n'avons pas pu comprendre ce que vous avez dit (la reconnaissance vocale n'est pas disponible ici). Vous pouvez écrire à la place.",
      speech_timeout: "Désolé — nous n'avons pas pu comprendre ce que vous avez dit à temps. Pouvez-vous le répéter ?",
      speech_busy: "Désolé — nous n'avons pas pu suivre ce que vous avez dit. Pouvez-vous le répéter, un peu plus lentement ?",
      speech_failed: "Désolé — nous n'avons pas pu comprendre ce que vous avez dit. Pouvez-vous le répéter ?",
    },
    capShare: "Partager", capSave: "Enregistrer", capNo: "Non merci",
    nobody: "Personne n'est disponible pour le moment", nobodyCall: "Restez en ligne ou écrivez : nous répondrons dès que quelqu'un le pourra.",
    callStarted: "Appel commencé à {time}", callEnded: "Appel terminé ({duration})", callEndedAt: "Appel terminé",
    micInsecure: "Les appels vocaux nécessitent une page sécurisée (https). Vous pouvez écrire à la place.",
    micPolicy: "Cette page n'autorise pas le microphone. Vous pouvez écrire à la place.",
    attach: "Joindre un fichier", uploading: "Envoi… {pct} %", attached: "Pièce jointe",
    tooBig: "{name} est trop volumineux (la limite est de {max}).",
    badType: "{name} ne peut pas être envoyé : seuls les images, les PDF et les fichiers texte sont acceptés.",
    uploadFailed: "{name} n'a pas pu être envoyé : {why}",
  },
  es: {
    open: "Abrir el chat", close: "Cerrar el chat", send: "Enviar", placeholder: "Escribe un mensaje…", message: "Mensaje",
    conversation: "Conversación", startCall: "Iniciar una llamada de voz", toText: "Cambiar a texto",
    endCall: "Terminar la llamada y escribir", typing: "El asistente está escribiendo", you: "Tú", poweredBy: "Con la tecnología de",
    reconnecting: "Reconectando…", connecting: "Conectando…", navigating: "Te llevo a {label}…",
    call: { connecting: "Conectando la llamada…", connected: "En llamada", reconnecting: "Reconectando la llamada…",
      failed: "La llamada falló", ended: "Llamada terminada" },
    agent: { listening: "Escuchando", thinking: "Pensando…", speaking: "Hablando", idle: "" },
    hearing: "Te escucho…", interrupted: "(interrumpido)",
    closed: "Esta conversación se ha cerrado.", newConversation: "Empezar una conversación nueva",
    unheard: {
      speech_down: "Lo sentimos — no pudimos entender lo que dijiste (el reconocimiento de voz no está disponible). Puedes escribir en su lugar.",
      speech_unavailable: "Lo sentimos — no pudimos entender lo que dijiste (el reconocimiento de voz no está configurado aquí). Puedes escribir en su lugar.",
      speech_timeout: "Lo sentimos — no pudimos entender a tiempo lo que dijiste. ¿Puedes repetirlo?",
      speech_busy: "Lo sentimos — no pudimos seguir lo que dijiste. ¿Puedes repetirlo un poco más despacio?",
      speech_failed: "Lo sentimos — no pudimos entender lo que dijiste. ¿Puedes repetirlo?",
    },
    capShare: "Compartir", capSave: "Guardar", capNo: "No, gracias",
    nobody: "No hay nadie disponible en este momento", nobodyCall: "Sigue en la llamada o escribe: responderemos en cuanto alguien pueda.",
    callStarted: "Llamada iniciada a las {time}", callEnded: "Llamada terminada ({duration})", callEndedAt: "Llamada terminada",
    micInsecure: "Las llamadas de voz necesitan una página segura (https). Puedes escribir en su lugar.",
    micPolicy: "Esta página no permite el micrófono. Puedes escribir en su lugar.",
    attach: "Adjuntar un archivo", uploading: "Enviando… {pct} %", attached: "Archivo adjunto",
    tooBig: "{name} es demasiado grande (el límite es {max}).",
    badType: "{name} no se puede enviar: solo se aceptan imágenes, PDF y archivos de texto.",
    uploadFailed: "{name} no se pudo enviar: {why}",
  },
  de: {
    open: "Chat öffnen", close: "Chat schließen", send: "Senden", placeholder: "Nachricht eingeben…", message: "Nachricht",
    conversation: "Unterhaltung", startCall: "Sprachanruf starten", toText: "Zu Text wechseln",
    endCall: "Anruf beenden und schreiben", typing: "Der Assistent schreibt", you: "Sie", poweredBy: "Bereitgestellt von",
    reconnecting: "Verbindung wird wiederhergestellt…", connecting: "Verbinden…", navigating: "Ich bringe Sie zu {label}…",
    call: { connecting: "Anruf wird verbunden…", connected: "Im Gespräch", reconnecting: "Anruf wird wiederhergestellt…",
      failed: "Der Anruf ist fehlgeschlagen", ended: "Anruf beendet" },
    agent: { listening: "Hört zu", thinking: "Denkt nach…", speaking: "Spricht", idle: "" },
    hearing: "Ich höre Sie…", interrupted: "(unterbrochen)",
    closed: "Dieses Gespräch wurde beendet.", newConversation: "Ein neues Gespräch beginnen",
    unheard: {
      speech_down: "Entschuldigung — wir konnten nicht verstehen, was Sie gesagt haben (die Spracherkennung ist nicht erreichbar). Sie können stattdessen schreiben.",
      speech_unavailable: "Entschuldigung — wir konnten nicht verstehen, was Sie gesagt haben (die Spracherkennung ist hier nicht eingerichtet). Sie können stattdessen schreiben.",
      speech_timeout: "Entschuldigung — wir konnten nicht rechtzeitig verstehen, was Sie gesagt haben. Bitte sagen Sie es noch einmal.",
      speech_busy: "Entschuldigung — wir kamen nicht mit. Bitte sagen Sie es noch einmal, etwas langsamer.",
      speech_failed: "Entschuldigung — wir konnten nicht verstehen, was Sie gesagt haben. Bitte sagen Sie es noch einmal.",
    },
    capShare: "Teilen", capSave: "Speichern", capNo: "Nein, danke",
    nobody: "Gerade ist niemand erreichbar", nobodyCall: "Bleiben Sie dran oder schreiben Sie: wir antworten, sobald jemand da ist.",
    callStarted: "Anruf begonnen um {time}", callEnded: "Anruf beendet ({duration})", callEndedAt: "Anruf beendet",
    micInsecure: "Sprachanrufe brauchen eine sichere (https) Seite. Sie können stattdessen schreiben.",
    micPolicy: "Diese Seite erlaubt das Mikrofon nicht. Sie können stattdessen schreiben.",
    attach: "Datei anhängen", uploading: "Wird gesendet… {pct} %", attached: "Anhang",
    tooBig: "{name} ist zu groß (höchstens {max}).",
    badType: "{name} kann nicht gesendet werden: nur Bilder, PDF und Textdateien sind erlaubt.",
    uploadFailed: "{name} konnte nicht gesendet werden: {why}",
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
  CONVERSATION_LIMIT: "The assistant is busy with other visitors right now. Your message is saved and will be answered as soon as it's free.",
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
  CONVERSATION_CLOSED: "This conversation was closed.",
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

// Why the microphone could not be used (micPrecheck, micReason in voice.js):
// [a line for the console, a text for the visitor].
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
