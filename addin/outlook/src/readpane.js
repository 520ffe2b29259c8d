// @ts-check
// Read pane: the core's classification of the open message, the provider's signature
// checked, and the categories by kind (with a warning where the signature does not pass).
import { boot, fatal, el } from "./boot.js";
import { processItem } from "./read.js";
import { coreText } from "./strings.js";

const $ = (id) => document.getElementById(id);

function render(res, t, lang, labels) {
  const c = res.classification;
  $("kind").textContent = t[`readKind.${c.kind}`] || c.kind;
  $("kind").dataset.kind = c.kind;
  const facts = $("facts");
  facts.replaceChildren();
  const fact = (label, value) => facts.append(el("dt", { text: label }), el("dd", { text: value }));
  if (c.kind !== "email") {
    const opts = (c.options || []).map((o) => labels.get(o) || o);
    fact(t.readOptions, opts.length ? opts.join(", ") : t.readNoOptions);
    fact(t.readAuthLevel, t[`auth.${c.auth_level || "unknown"}`] || c.auth_level);
    if (c.private_id) fact(t.readPrivateId, c.private_id);
    if (c.sender) fact(t.readSender, c.sender);
  }
  const rc = $("receipt");
  rc.hidden = !(c.kind === "receipt" && c.receipt);
  if (!rc.hidden) {
    const parts = [t[`receipt.${c.receipt.type}`] || c.receipt.type];
    if (c.receipt.original_subject) parts.push(`${t.readReceiptFor}: „${c.receipt.original_subject}“`);
    if (c.receipt.time) parts.push(`${t.readReceiptTime}: ${c.receipt.time}`);
    $("receipt-text").textContent = parts.join(" — ");
  }
  const ig = $("integrity");
  ig.hidden = c.kind === "email";
  if (!ig.hidden) {
    const v = res.integrity;
    const state = !v ? "unavailable" : v.status === "valid" || v.status === "hash-only" ? v.status : "warning";
    $("integrity-text").textContent = t[`integrity.${state}`];
    ig.dataset.status = v ? v.status : "unavailable";
    ig.className = state === "warning" ? "reason block" : state === "valid" ? "reason ok" : "reason info";
    const detail = [];
    if (v && v.signer) detail.push(`${t.readSigner}: ${v.signer}`);
    if (v && state === "warning" && v.reasons && v.reasons[0]) detail.push(coreText(v.reasons[0], lang));
    $("integrity-detail").textContent = detail.join(" — ");
  }
  const w = $("warnings");
  w.replaceChildren(...(c.warnings || []).map((x) => el("p", { class: "hint", "data-code": x.code, text: coreText(x, lang) })));
  const cs = $("category-status");
  cs.dataset.category = res.category;
  cs.textContent = res.category === "applied" ? `${t.categoryApplied} ${res.categories.join(", ")}` : res.category === "failed" ? `${t.categoryFailed} (${res.error.message})` : "";
  cs.className = res.category === "failed" ? "status error" : "status";
  $("loading").hidden = true;
  $("details").hidden = false;
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
  if (!office.context.requirements.isSetSupported("Mailbox", "1.8")) {
    fatal(t.tooOld);
    return;
  }
  const show = () =>
    processItem(core, office).then(
      (res) => render(res, t, lang, labels),
      (e) => fatal(`${t.readFailed} ${coreText(e.reason, lang) || e.message}`),
    );
  await show();
  // A pinned pane follows the selection (Mailbox 1.5).
  if (office.EventType && office.EventType.ItemChanged) {
    office.context.mailbox.addHandlerAsync(office.EventType.ItemChanged, () => show());
  }
}

main();
