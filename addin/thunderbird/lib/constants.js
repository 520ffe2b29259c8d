// @ts-check
// Vocabulary shared by the add-in's pages. No De-Mail rule lives here: these are the
// core's API ids (docs/core-api.md) and the add-in's own UI constants. The option list
// (ids, order, labels) is not here either: it comes from the core (`version` op).

export const ADDON_ID = "demail-addin@open-demail.de";

/**
 * Message tags, stored by Thunderbird as IMAP keywords (so they survive across clients).
 * Keys are lower case (Thunderbird lowers them anyway). The colours are unlike
 * Thunderbird's five default tags so a De-Mail stands out in the list. The desktop
 * policy (installer/linux/desktop/files/policies.json, `Preferences`) defines the same
 * keys, names and colours for Thunderbird without the add-in; ensureTags then finds
 * them and creates nothing. `warning` is set only by the gateway's keyword script
 * (Dovecot); the add-in defines it so the keyword is shown, but never sets it.
 */
export const TAGS = {
  demail: { key: "$demail", labelKey: "tagDemail", color: "#C2185B" },
  receipt: { key: "$demail-receipt", labelKey: "tagReceipt", color: "#00796B" },
  notification: { key: "$demail-notification", labelKey: "tagNotification", color: "#5D4037" },
  warning: { key: "$demail-warning", labelKey: "tagWarning", color: "#BF360C" },
};

/** Which tag a classification `kind` (core `classify`) gets; e-mail gets none. */
export const TAG_FOR_KIND = {
  demail: "demail",
  receipt: "receipt",
  notification: "notification",
  malware: "notification",
};

/**
 * Which receipt each ordered option brings (for the sent De-Mail's timeline); the
 * receipt types are the core's `receipt.type` values and the helper's journal types.
 */
export const RECEIPT_FOR_OPTION = {
  "confirmation-of-dispatch": "dispatch",
  "confirmation-of-receipt": "receipt",
  "confirmation-of-retrieve": "retrieve",
};

/** Message types between the add-in's pages and its background (one dispatcher). */
export const MSG = {
  composeState: "compose.state",
  composeSet: "compose.set",
  composeFix: "compose.fix",
  dialogGet: "dialog.get",
  dialogAnswer: "dialog.answer",
  displayInfo: "display.info",
  displayOpen: "display.open",
  settingsGet: "settings.get",
  settingsSet: "settings.set",
  helperStatus: "helper.status",
  helperPair: "helper.pair",
  helperPairStatus: "helper.pairStatus",
  ping: "ping",
};
