// @ts-check
// Compose task pane: renders the ComposeSession's view; every change goes through it.
import { boot, fatal, el } from "./boot.js";
import { ComposeSession } from "./compose.js";
import { coreText } from "./strings.js";

const $ = (id) => document.getElementById(id);
/** The form's input fields (checkboxes, the private-id box). */
const field = (id) => /** @type {HTMLInputElement} */ ($(id));
/** @param {Event} e */
const target = (e) => /** @type {HTMLInputElement} */ (e.target);

function render(v, t, lang, labels) {
  field("marked").checked = v.marked;
  const box = $("options");
  // The options are drawn anew: a keyboard user keeps the focus on the option (WCAG 2.4.3).
  const focused = box.contains(document.activeElement) ? document.activeElement?.id : null;
  box.replaceChildren();
  for (const o of v.options) {
    const input = el("input", { type: "checkbox", id: `opt-${o.id}`, "data-option": o.id });
    input.checked = o.checked;
    input.disabled = o.disabled || o.locked;
    const why = o.reason ? coreText(o.reason, lang) : t[`optHint.${o.id}`];
    const row = el(
      "div",
      { class: `opt${input.disabled ? " disabled" : ""}` },
      input,
      el("label", { for: `opt-${o.id}`, text: labels.get(o.id) }),
      el("span", { class: "why", text: why }),
    );
    box.append(row);
  }
  if (focused) $(focused)?.focus();
  const pid = field("private-id");
  if (document.activeElement !== pid) pid.value = v.privateId;
  pid.placeholder = v.generatedId || "";

  const reasons = $("reasons");
  reasons.replaceChildren(
    ...v.check.reasons.map((r) =>
      el("p", { class: `reason ${r.severity}`, "data-code": r.code, text: coreText(r, lang) }),
    ),
  );
  const list = $("recipients");
  list.replaceChildren();
  if (!v.check.recipients.length) list.append(el("li", { class: "empty", text: t.noRecipients }));
  for (const r of v.check.recipients) {
    list.append(
      el(
        "li",
        { "data-kind": r.kind },
        el("span", { class: `badge ${r.kind}`, text: t[`kind.${r.kind}`] || r.kind }),
        r.address,
      ),
    );
  }
  const hl = $("headers");
  hl.replaceChildren();
  if (!v.written.length) hl.append(el("li", { class: "empty", text: t.noHeaders }));
  for (const h of v.written) hl.append(el("li", {}, el("code", { text: `${h.name}: ${h.value}` })));
  const ws = $("write-status");
  ws.textContent = v.writeError ? `${t.writeFailed} ${coreText(v.writeError, lang)}`.trim() : "";
  ws.className = v.writeError ? "status error" : "status";
  document.body.dataset.ready = "1";
}

async function main() {
  let ctx;
  try {
    ctx = await boot();
  } catch (e) {
    fatal(`Das De-Mail-Modul konnte nicht geladen werden. / The De-Mail module could not be loaded. (${e.message})`);
    return;
  }
  const { office, core, lang, t, labels } = ctx;
  const item = office.context.mailbox.item;
  if (!office.context.requirements.isSetSupported("Mailbox", "1.8")) {
    fatal(t.tooOld);
    return;
  }
  if (!item || !item.internetHeaders || typeof item.to?.getAsync !== "function") {
    fatal(t.notCompose);
    return;
  }
  const session = new ComposeSession({ core, office });
  const show = (v) => render(v, t, lang, labels);
  const guard = (p) => p.then(show, (e) => fatal(coreText(e.reason, lang) || e.message));
  await guard(session.load().then((v) => session.recipientsChanged().then(() => session.view(), () => v)));
  $("loading").hidden = true;
  $("form").hidden = false;

  $("marked").addEventListener("change", (e) => guard(session.setMarked(target(e).checked)));
  $("options").addEventListener("change", (e) => {
    const id = target(e).dataset.option;
    if (id) guard(session.setOption(id, target(e).checked));
  });
  $("private-id").addEventListener("change", (e) => guard(session.setPrivateId(target(e).value)));
  $("form").addEventListener("submit", (e) => e.preventDefault());
  // Live recipient classification (Mailbox 1.7).
  if (office.EventType && office.EventType.RecipientsChanged) {
    item.addHandlerAsync(office.EventType.RecipientsChanged, () => guard(session.recipientsChanged()));
  }
}

main();
