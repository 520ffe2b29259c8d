// @ts-check
// Read mode without the DOM: the core classifies the message's internet headers, and
// a De-Mail, receipt or notification gets the Outlook category "De-Mail".

import { officeAsync } from "./office-async.js";

export const CATEGORY = "De-Mail";
/** Fixed colour of the category in the master list (Preset7 = blue in every Outlook). */
export const CATEGORY_COLOR = "Preset7";
/** Kinds that are De-Mail traffic and get the category. */
export const MARKED_KINDS = ["demail", "receipt", "notification", "malware"];

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

/** Create "De-Mail" in the master list if missing, then put it on the item. */
export async function applyCategory(office, item) {
  const mailbox = office.context.mailbox;
  const master = (await officeAsync(mailbox.masterCategories, "getAsync")) || [];
  if (!master.some((c) => c.displayName === CATEGORY)) {
    const color = office.MailboxEnums.CategoryColor[CATEGORY_COLOR];
    try {
      await officeAsync(mailbox.masterCategories, "addAsync", [{ displayName: CATEGORY, color }]);
    } catch (e) {
      // Another pane may have created it meanwhile; only a real failure matters below.
      if (e.code !== "DuplicateCategory") throw e;
    }
  }
  const current = (await officeAsync(item.categories, "getAsync")) || [];
  if (!current.some((c) => c.displayName === CATEGORY)) {
    await officeAsync(item.categories, "addAsync", [CATEGORY]);
  }
}

/** Classify and mark; returns {classification, category: "applied"|"not-demail"|"failed", error}. */
export async function processItem(core, office) {
  const item = office.context.mailbox.item;
  const classification = await classifyItem(core, item);
  if (!MARKED_KINDS.includes(classification.kind)) return { classification, category: "not-demail" };
  try {
    await applyCategory(office, item);
    return { classification, category: "applied" };
  } catch (e) {
    return { classification, category: "failed", error: e };
  }
}
