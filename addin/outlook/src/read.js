// @ts-check
// Read mode without the DOM: the core classifies the message's internet headers, and
// a De-Mail, receipt or notification gets its category; the provider's signature is checked.

import { officeAsync } from "./office-async.js";
import { fromB64 } from "../../shared/demail-core.js";

/**
 * Outlook categories per kind, named as the gateway's `Keywords` field names them (which
 * Exchange turns into categories) and coloured like the Thunderbird tags (presets: the
 * same colour in every Outlook). A warning goes beside the kind: the provider's signature
 * did not pass here.
 */
export const CATEGORIES = {
  demail: { name: "De-Mail", color: "Preset9" },
  receipt: { name: "De-Mail-Bestätigung", color: "Preset5" },
  notification: { name: "De-Mail-Meldung", color: "Preset2" },
  malware: { name: "De-Mail-Meldung", color: "Preset2" },
  warning: { name: "De-Mail-Warnung", color: "Preset1" },
};
/** Kinds that are De-Mail traffic and get a category. */
export const MARKED_KINDS = ["demail", "receipt", "notification", "malware"];
/** Verdicts that need no warning: a valid signature, or the provider's hash-only form. */
const NO_WARNING = ["valid", "hash-only"];

/**
 * Classify the open message. getAllInternetHeadersAsync gives the header block as
 * text; the core parses it as a message without body (no header parsing in JS).
 */
export async function classifyItem(core, item) {
  const raw = await officeAsync(item, "getAllInternetHeadersAsync");
  const text = String(raw || "").replace(/(\r?\n)+$/, "");
  const res = core.classifyRaw(text + "\r\n\r\n");
  if (!res.ok) {
    throw Object.assign(new Error(res.error.message_en), { reason: res.error });
  }
  return res.result;
}

/** Create each category in the master list if missing, then put them on the item. */
export async function applyCategories(office, item, categories) {
  const mailbox = office.context.mailbox;
  const master = (await officeAsync(mailbox.masterCategories, "getAsync")) || [];
  for (const c of categories) {
    if (master.some((m) => m.displayName === c.name)) continue;
    try {
      await officeAsync(mailbox.masterCategories, "addAsync", [{ displayName: c.name, color: office.MailboxEnums.CategoryColor[c.color] }]);
    } catch (e) {
      // Another pane may have created it meanwhile; only a real failure matters below.
      if (e.code !== "DuplicateCategory") throw e;
    }
  }
  const current = (await officeAsync(item.categories, "getAsync")) || [];
  const missing = categories.map((c) => c.name).filter((n) => !current.some((c) => c.displayName === n));
  if (missing.length) await officeAsync(item.categories, "addAsync", missing);
}

/**
 * The provider's signature over the whole message (getAsFileAsync, Mailbox 1.14: the
 * message as .eml, base64): null where Outlook cannot give the message's bytes.
 */
export async function checkIntegrity(core, office, item) {
  const r = office.context.requirements;
  if (!r.isSetSupported("Mailbox", "1.14") || typeof item.getAsFileAsync !== "function") return null;
  const b64 = await officeAsync(item, "getAsFileAsync");
  const res = await core.verifyIntegrity(fromB64(String(b64 || "")));
  if (!res.ok) throw Object.assign(new Error(res.error.message_en), { reason: res.error });
  return res.result;
}

/**
 * Classify, check the signature, mark; returns {classification, integrity (verdict or
 * null), categories (names), category: "applied"|"not-demail"|"failed", error}.
 */
export async function processItem(core, office) {
  const item = office.context.mailbox.item;
  const classification = await classifyItem(core, item);
  if (!MARKED_KINDS.includes(classification.kind)) return { classification, integrity: null, categories: [], category: "not-demail" };
  let integrity = null;
  try {
    integrity = await checkIntegrity(core, office, item);
  } catch (e) {
    integrity = { status: "invalid", reasons: [e.reason || { code: "integrity.unreadable", message: e.message, message_en: e.message }] };
  }
  const cats = [CATEGORIES[classification.kind]];
  if (integrity && !NO_WARNING.includes(integrity.status)) cats.push(CATEGORIES.warning);
  const categories = cats.map((c) => c.name);
  try {
    await applyCategories(office, item, cats);
    return { classification, integrity, categories, category: "applied" };
  } catch (e) {
    return { classification, integrity, categories, category: "failed", error: e };
  }
}
