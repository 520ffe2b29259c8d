// The settings window. Everything goes through the tray's commands (src/lib.rs).
"use strict";
const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const LABELS = {
  "gateway.host": ["Gateway (Host-Name)", "Gateway host name"],
  "gateway.port": ["Port", "Port"],
  "gateway.tls": ["TLS-Modus", "TLS mode"],
  "gateway.ca_file": ["CA-Datei (intern)", "Internal CA file"],
  "gateway.username": ["Benutzername", "User name"],
  "gateway.dialect": ["Gateway-Dialekt", "Gateway dialect"],
  "gateway.ca_only": ["Nur dieser CA vertrauen", "Trust only this CA"],
};
const CHOICES = {
  "gateway.tls": [["starttls", "STARTTLS"], ["implicit", "TLS (implizit / implicit)"]],
  "gateway.dialect": [["headers", "X-de-mail-Kopfzeilen / headers"], ["subject-tags", "Betreff-Kennzeichen / subject tags"]],
  "gateway.ca_only": [["false", "nein / no"], ["true", "ja / yes"]],
};
const STATUS = {
  queued: ["wartet", "queued"], sending: ["wird gesendet", "sending"], sent: ["gesendet", "sent"],
  failed: ["fehlgeschlagen", "failed"], cancelled: ["zurückgehalten", "cancelled"],
};
const RECEIPT = { dispatch: "Versand", receipt: "Eingang", retrieve: "Abholung" };
const COLOUR_TEXT = {
  grey: "Bereit / Ready", green: "Verbunden / Connected", blue: "De-Mails warten / De-Mails waiting",
  orange: "Gateway nicht erreichbar / Gateway unreachable", red: "Fehler / Error",
};

let tab = "settings";
let last = { settings: null, outbox: null, pairings: null };

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const k of kids) e.append(k);
  return e;
};
const bi = (de, en) => { const s = el("span", {}, de + " "); s.append(el("small", { lang: "en" }, en)); return s; };
function say(id, r, okText) {
  const m = $(id);
  if (r.ok) { m.className = "msg ok"; m.textContent = okText || "OK"; }
  else { m.className = "msg error"; m.textContent = `${r.error.message} / ${r.error.message_en}`; }
}

// "Angemeldet als Peter Meier (Kerberos)", or why signing in did not work.
function renderSignin(s) {
  last.signin = s || {};
  const p = $("signin-state");
  if (s?.signed_in) {
    // The helper names the method in words (relay.rs, SignedIn).
    const [de, en] = [s.signed_in.method_label || s.signed_in.method, s.signed_in.method_label_en || s.signed_in.method];
    p.className = "ok";
    p.textContent = `Angemeldet als ${s.signed_in.person} (${de}) / Signed in as ${s.signed_in.person} (${en})`;
  } else if (s?.problem) {
    p.className = "error";
    p.textContent = `${s.problem.message} / ${s.problem.message_en}`;
  } else {
    p.className = "";
    p.textContent = "Noch nicht angemeldet: die Anmeldung geschieht beim ersten Senden oder mit „Verbindung testen“. / Not signed in yet: that happens with the first send or with \"Test connection\".";
  }
}

async function refreshSignin() {
  const o = await invoke("overview");
  if (o.ok) renderSignin(o.result.signin);
}

async function report() {
  const main = document.querySelector("main");
  await invoke("ui_report", { report: {
    tab,
    title: document.title,
    signin: $("signin-state").textContent,
    status: $("dot").className.replace("dot ", ""),
    fields: [...document.querySelectorAll("#fields [data-key]")].map((i) => ({ key: i.dataset.key, value: i.value, disabled: i.disabled, locked: i.dataset.locked === "true" })),
    outbox: (last.outbox?.messages || []).map((m) => ({ id: m.id, status: m.status, subject: m.subject, error: m.error?.code || null, receipts: (m.receipts || []).map((r) => r.type) })),
    pairings: (last.pairings?.pairings || []).map((p) => ({ id: p.id, client: p.client, status: p.status, origin: p.origin || null, addon_id: p.addon_id || null,
      allow_disabled: document.querySelector(`form.request[data-id="${p.id}"] [data-action=allow]`)?.disabled ?? null })),
    focused: document.activeElement?.dataset?.action || null,
    message: [...document.querySelectorAll("#pairing .msg")].map((m) => m.textContent).join(" "),
    text: main.innerText.slice(0, 2000),
  } });
}

async function renderSettings() {
  const r = await invoke("settings_get");
  if (!r.ok) return say("settings-msg", r);
  last.settings = r.result;
  const box = $("fields");
  box.textContent = "";
  for (const f of r.result.fields) {
    const [de, en] = LABELS[f.key];
    const id = "f-" + f.key.replace(".", "-");
    let input;
    if (CHOICES[f.key]) {
      input = el("select", { id });
      for (const [v, t] of CHOICES[f.key]) input.append(el("option", { value: v }, t));
    } else {
      input = el("input", { id, type: f.key === "gateway.port" ? "number" : "text" });
    }
    input.value = f.value === null || f.value === undefined ? "" : String(f.value);
    input.dataset.key = f.key;
    input.dataset.original = input.value;
    input.dataset.locked = f.locked;
    input.disabled = f.locked;
    const lock = f.locked ? el("span", { class: "lock", title: "Von der IT festgelegt / Set by IT" }, "gesperrt: von der IT festgelegt / locked by IT") : el("span");
    box.append(el("div", { class: "field" }, el("label", { htmlFor: id }, bi(de, en)), input, lock));
  }
  const pw = { stored: ["Ein Kennwort ist im Schlüsselbund gespeichert.", "A password is stored in the keyring."],
    missing: ["Es ist noch kein Kennwort gespeichert (oder kein Schlüsselbund erreichbar).", "No password stored yet (or no keyring reachable)."],
    "not-needed": ["Anmeldung mit Kerberos; kein Kennwort nötig.", "Sign-in with Kerberos; no password needed."] }[r.result.password];
  $("password-state").textContent = `${pw[0]} / ${pw[1]}`;
}

async function saveSettings(ev) {
  ev.preventDefault();
  const changed = [...document.querySelectorAll("#fields [data-key]")].filter((i) => !i.disabled && i.value !== i.dataset.original);
  for (const i of changed) {
    const r = await invoke("settings_set", { key: i.dataset.key, value: i.value });
    if (!r.ok) { say("settings-msg", r); return; }
  }
  say("settings-msg", { ok: true }, changed.length ? "Gespeichert. / Saved." : "Keine Änderungen. / No changes.");
  await renderSettings();
  await report();
}

function receiptText(m) {
  if (m.status !== "sent") return "";
  // Only a checked receipt that matches the message sent counts (protocol.md journal.receipt).
  const types = (m.receipts || []).map((r) => `${RECEIPT[r.type] || r.type} ${r.counts ? "✓" : "⚠ zählt nicht / does not count"}`);
  return types.length ? types.join(" → ") : "—";
}

async function renderOutbox() {
  const r = await invoke("outbox_list");
  if (!r.ok) return say("outbox-msg", r);
  last.outbox = r.result;
  const c = r.result.counts;
  $("outbox-counts").textContent = `Wartend ${(c.queued || 0) + (c.sending || 0)} · gesendet ${c.sent || 0} · fehlgeschlagen ${c.failed || 0}  /  waiting, sent, failed`;
  const body = $("outbox-rows");
  body.textContent = "";
  for (const m of r.result.messages) {
    const [de, en] = STATUS[m.status] || [m.status, m.status];
    const actions = el("td");
    if (m.status === "failed" || m.status === "queued") {
      actions.append(el("button", { type: "button", class: "secondary", "data-action": "retry", onclick: () => act(m.id, "retry") }, "Erneut senden"));
      actions.append(el("button", { type: "button", class: "secondary", "data-action": "cancel", onclick: () => act(m.id, "cancel") }, "Zurückhalten"));
    }
    const reason = m.error ? `${m.error.message}` : (m.gateway_reply || "");
    body.append(el("tr", {},
      el("td", {}, el("span", { class: "st " + m.status }, de), el("br"), el("small", { lang: "en" }, en)),
      el("td", {}, m.subject), el("td", {}, m.recipients.join(", ")), el("td", {}, receiptText(m)),
      el("td", {}, reason), actions));
  }
}

async function act(id, action) {
  const r = await invoke("outbox_action", { id, action });
  say("outbox-msg", r, action === "retry" ? "Wird erneut gesendet. / Will be sent again." : "Zurückgehalten. / Cancelled.");
  await renderOutbox();
  await report();
}

// A request's "Zulassen" works only after this long on screen, so a key pressed while the
// window pops up cannot allow it.
const ALLOW_DELAY_MS = 1500;
const seen = new Map(); // request id → when the window first showed it
const typedCode = (s) => s.replace(/[^0-9a-z]/gi, "").toUpperCase();

function originText(p) {
  if (!p.origin) return "kein Browser-Ursprung: ein Programm auf diesem Rechner / no browser origin: a program on this computer";
  if (p.origin.startsWith("moz-extension://")) return `${p.origin} (Thunderbird-Add-in / Thunderbird add-in)`;
  return p.origin;
}

function requestBox(p) {
  const input = el("input", { type: "text", id: "code-" + p.id, autocomplete: "off", spellcheck: false, maxLength: 12, placeholder: "ABCD-EFGH", "data-action": "code" });
  input.setAttribute("aria-describedby", "code-hint-" + p.id);
  const allow = el("button", { type: "submit", "data-action": "allow", disabled: true }, "Zulassen / Allow");
  const deny = el("button", { type: "button", class: "secondary", "data-action": "deny", onclick: () => decide(p.id, "", false) }, "Ablehnen / Deny");
  const msg = el("p", { class: "msg", role: "alert" });
  const ready = () => Date.now() - seen.get(p.id) >= ALLOW_DELAY_MS && typedCode(input.value).length === 8;
  const update = () => { allow.disabled = !ready(); };
  input.addEventListener("input", update);
  setTimeout(update, ALLOW_DELAY_MS + 50);
  const form = el("form", { class: "request", "data-id": p.id },
    el("p", {}, bi(`„${p.client}“ möchte De-Mails über diesen Helfer senden.`, `"${p.client}" wants to send De-Mail through this helper.`)),
    el("dl", {},
      el("dt", {}, "Herkunft / Origin"), el("dd", { "data-field": "origin" }, originText(p)),
      el("dt", {}, "Add-in-ID / Add-in id"), el("dd", { "data-field": "addon-id" }, p.addon_id ? `${p.addon_id} (Angabe des Add-ins / stated by the add-in)` : "nicht angegeben / not stated"),
      el("dt", {}, "Angefragt / Requested"), el("dd", {}, new Date(p.created_at).toLocaleTimeString())),
    el("label", { htmlFor: input.id }, bi("Code aus dem Add-in eingeben:", "Type the code the add-in shows:")),
    input,
    el("small", { class: "hint", id: "code-hint-" + p.id }, "Nur zulassen, wenn Sie die Kopplung selbst im Add-in begonnen haben. / Allow only if you started the pairing in the add-in yourself."),
    el("div", { class: "row" }, allow, " ", deny),
    msg);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (ready()) decide(p.id, input.value, true, msg);
  });
  return form;
}

async function renderPairings() {
  const r = await invoke("pairings_list");
  if (!r.ok) return say("pairing-msg", r);
  last.pairings = r.result;
  const pending = $("pending");
  const open = r.result.pairings.filter((p) => p.status === "pending");
  // Keep what is on screen (a half-typed code) and add or remove only what changed.
  for (const f of [...pending.querySelectorAll("form.request")]) if (!open.some((p) => p.id === f.dataset.id)) f.remove();
  pending.querySelector(".hint.none")?.remove();
  if (!open.length) pending.append(el("p", { class: "hint none" }, "Keine offenen Anfragen. / No open requests."));
  let added = null;
  for (const p of open) {
    if (pending.querySelector(`form.request[data-id="${p.id}"]`)) continue;
    if (!seen.has(p.id)) seen.set(p.id, Date.now());
    added = requestBox(p);
    pending.append(added);
  }
  const approved = $("approved");
  approved.textContent = "";
  for (const p of r.result.pairings.filter((p) => p.status === "approved")) {
    approved.append(el("li", {}, `${p.client} (${p.source}${p.addon_id ? ", " + p.addon_id : ""}) `,
      el("button", { type: "button", class: "secondary", "data-action": "revoke", onclick: () => revoke(p.id) }, "Widerrufen / Revoke")));
  }
  // The code field of a new request gets the focus: a key pressed now lands there, and
  // no button is focused that Enter could press.
  if (added && tab === "pairing") added.querySelector("input").focus();
}

async function decide(id, code, approve, msgEl) {
  const r = await invoke("pairing_decide", { id, code, approve });
  // A refusal belongs to its request; the general line says what happened.
  if (!r.ok && msgEl) say2(msgEl, r);
  say("pairing-msg", r.ok || !msgEl ? r : { ok: false, error: { message: "Nicht zugelassen.", message_en: "Not allowed." } }, approve ? "Zugelassen. / Allowed." : "Abgelehnt. / Denied.");
  await renderPairings();
  await report();
}

function say2(m, r) {
  m.className = "msg error";
  m.textContent = `${r.error.message} / ${r.error.message_en}`;
}

async function revoke(id) {
  const r = await invoke("pairing_revoke", { id });
  say("pairing-msg", r, "Widerrufen. / Revoked.");
  await renderPairings();
  await report();
}

async function showTab(t) {
  tab = t;
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== t;
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-selected", b.dataset.tab === t);
  if (t === "settings") await renderSettings();
  if (t === "outbox") await renderOutbox();
  if (t === "pairing") await renderPairings();
  await report();
}

function setStatus(c) {
  $("dot").className = "dot " + c;
  $("status-text").textContent = COLOUR_TEXT[c] || c;
}

window.addEventListener("DOMContentLoaded", async () => {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("settings-form").addEventListener("submit", saveSettings);
  $("password-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await invoke("password_set", { password: $("password").value });
    $("password").value = "";
    say("settings-msg", r, r.ok ? `Im Schlüsselbund gespeichert (${r.result.backend}). / Stored in the keyring.` : "");
    await renderSettings();
  });
  $("test").addEventListener("click", async () => {
    $("settings-msg").className = "msg"; $("settings-msg").textContent = "Teste … / Testing …";
    const r = await invoke("connection_test");
    say("settings-msg", r, r.ok ? `${r.result.message} / ${r.result.message_en}` : "");
    await refreshSignin();
    await report();
  });
  $("access-request").addEventListener("click", async () => {
    $("signin-msg").className = "msg"; $("signin-msg").textContent = "Sende Antrag … / Sending request …";
    const r = await invoke("access_request");
    say("signin-msg", r, r.ok ? `${r.result.message} / ${r.result.message_en}` : "");
    await refreshSignin();
    await report();
  });
  await listen("show-tab", (e) => showTab(e.payload));
  await listen("status", (e) => { setStatus(e.payload); refreshSignin().then(report); });
  await listen("pairing-request", () => { if (tab === "pairing") renderPairings().then(report); });
  await listen("outbox-changed", () => { if (tab === "outbox") renderOutbox().then(report); });
  const o = await invoke("overview");
  if (o.ok) {
    setStatus({ connected: "green", unreachable: "orange", error: "red" }[o.result.gateway] || "grey");
    renderSignin(o.result.signin);
  }
  await showTab("settings");
  setInterval(async () => {
    if (tab === "settings") await refreshSignin();
    if (tab === "outbox") { await renderOutbox(); await report(); }
    if (tab === "pairing") { await renderPairings(); await report(); }
  }, 2000);
});
