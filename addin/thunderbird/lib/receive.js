// @ts-check
// Receiving: classify messages with the core and tag them; build the banner's data.
// The core decides what a message is (`classify`); this module reads messages through
// the messenger API and writes tags (IMAP keywords).

import { TAGS, TAG_FOR_KIND } from "./constants.js";
import { fromB64 } from "../../shared/demail-core.js";

/** Messages above this size are classified from their headers only (no download of the body). */
export const RAW_LIMIT = 2 * 1024 * 1024;

/** Folder kinds (MailFolder.specialUse) never scanned on first sync. */
const SKIP_FOLDERS = new Set(["trash", "junk", "drafts", "templates", "outbox"]);

export function unwrap(res) {
  if (!res || !res.ok) throw new Error(res?.error?.message_en || "core error");
  return res.result;
}

/** Make sure our tags exist: keeps what IT's policy defined and a colour the user changed. */
export async function ensureTags(messenger, i18n) {
  const existing = await messenger.messages.tags.list();
  const keys = new Set(existing.map((t) => t.key));
  for (const t of Object.values(TAGS)) {
    if (!keys.has(t.key)) await messenger.messages.tags.create(t.key, i18n(t.labelKey), t.color);
  }
}

/** Does the policy demand the gateway seal (policy `[seal] required`)? */
export function sealRequired(core) {
  const r = core.call("seal.canonical", "");
  return Boolean(r.ok && r.result.required);
}

/**
 * Classify one message (MessageHeader) with the core, and check the gateway seal of
 * anything that claims to be De-Mail. `c.untrusted` is set when the seal is broken
 * (forged or altered), or missing while the policy requires it: such a message is not
 * marked as De-Mail and its banner warns. Our own Sent folder is exempt: a sent De-Mail
 * never passes the inbound gateway.
 */
export async function classifyMessage(messenger, core, header) {
  const own = (header.folder?.specialUse || []).includes("sent");
  let c;
  let bytes = null;
  if ((header.size || 0) <= RAW_LIMIT || (!own && sealRequired(core))) {
    bytes = await messageBytes(messenger, header.id);
    c = unwrap((header.size || 0) <= RAW_LIMIT ? core.classifyRaw(bytes) : core.classifyRaw(bytes.subarray(0, headerEnd(bytes))));
  } else {
    const headers = await messenger.messages.getHeaders(header.id);
    c = unwrap(core.classifyHeaders(headers));
  }
  if (c.kind !== "email" && !own && bytes) {
    c.seal = await verifySeal(core, bytes);
    c.untrusted = c.seal.state === "invalid" || (c.seal.required && c.seal.state !== "valid");
  }
  // The helper checks a receipt's signature and what it certifies from the message itself
  // (receiptReport). Not enumerable: the classification travels as data elsewhere.
  if (c.kind === "receipt" && bytes) Object.defineProperty(c, "raw", { value: bytes, enumerable: false });
  return c;
}

/** A message's raw bytes (a File in current Thunderbird, a binary string in older ones). */
async function messageBytes(messenger, id) {
  const raw = await messenger.messages.getRaw(id, { data_format: "File" });
  return typeof raw === "string" ? binaryStringToBytes(raw) : new Uint8Array(await raw.arrayBuffer());
}

/** Offset just past the blank line that ends the header block. */
export function headerEnd(bytes) {
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== 10) continue;
    if (bytes[i + 1] === 10) return i + 2;
    if (bytes[i + 1] === 13 && bytes[i + 2] === 10) return i + 3;
  }
  return bytes.length;
}


/**
 * Verify the gateway seal (`X-Demail-Gateway-Seal`): the core gives the canonical
 * text, the seal and the policy's key for its kid (`seal.canonical`); the Ed25519
 * signature is checked with WebCrypto (the wasm build leaves Ed25519 out, for size).
 * @returns {Promise<{state: "valid"|"missing"|"invalid", required: boolean, code: string}>}
 */
export async function verifySeal(core, bytes, subtle = globalThis.crypto?.subtle) {
  const r = core.call("seal.canonical", new TextDecoder("utf-8").decode(bytes.subarray(0, headerEnd(bytes))));
  if (!r.ok) return { state: "invalid", required: true, code: r.error?.code || "seal.malformed" };
  const x = r.result;
  if (!x.seal) return { state: x.code === "seal.missing" ? "missing" : "invalid", required: x.required, code: x.code };
  if (!x.public_key) return { state: "invalid", required: x.required, code: "seal.unknown_key" };
  try {
    const key = await subtle.importKey("raw", fromB64(x.public_key.slice(x.public_key.indexOf(":") + 1)), { name: "Ed25519" }, false, ["verify"]);
    const ok = await subtle.verify({ name: "Ed25519" }, key, fromB64(x.seal.s), new TextEncoder().encode(x.canonical));
    return { state: ok ? "valid" : "invalid", required: x.required, code: ok ? "seal.valid" : "seal.bad_signature" };
  } catch {
    return { state: "invalid", required: x.required, code: "seal.bad_signature" };
  }
}

export function bytesToBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function binaryStringToBytes(s) {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
  return b;
}

/** The tag key a classification asks for, or null for plain e-mail. */
export function tagFor(classification) {
  if (classification.untrusted) return null; // claims De-Mail without the gateway's seal
  const t = TAG_FOR_KIND[classification.kind];
  return t ? TAGS[t].key : null;
}

/** Classify and tag one message; returns {id, kind, tag, changed, classification}. */
export async function classifyAndTag(messenger, core, header) {
  const c = await classifyMessage(messenger, core, header);
  const tag = tagFor(c);
  let changed = false;
  if (tag && !(header.tags || []).includes(tag)) {
    await messenger.messages.update(header.id, { tags: [...(header.tags || []), tag] });
    changed = true;
  }
  return { id: header.id, kind: c.kind, tag, changed, classification: c };
}

/**
 * The core's cheap pre-selection from the list entry (author, subject): only a
 * candidate is worth downloading and classifying. A core error counts as candidate,
 * so nothing is skipped by mistake.
 */
export function isCandidate(core, header) {
  const r = core.call("classify.candidate", { author: header.author || "", subject: header.subject || "" });
  return !r.ok || Boolean(r.result?.candidate);
}

/** Receipts larger than this go to the helper as fields only (base64 grows by a third; the helper takes 64 MiB). */
export const RECEIPT_RAW_LIMIT = 32 * 1024 * 1024;

/**
 * What the helper's journal needs from a received receipt (protocol.md journal.receipt):
 * the message itself, so the helper can check its signature and what it certifies; the
 * classified fields only when the add-in does not have its bytes (then it never counts).
 */
export function receiptReport(c) {
  if (!c || c.untrusted || c.kind !== "receipt" || !c.private_id || !c.receipt?.type) return null;
  if (c.raw && c.raw.length <= RECEIPT_RAW_LIMIT) return { raw: bytesToBase64(c.raw) };
  const r = { private_id: c.private_id, type: c.receipt.type };
  if (c.receipt.time) r.time = c.receipt.time;
  if (c.message_id) r.message_id = c.message_id;
  return r;
}

/** Iterate a MessageList (pages via continueList). */
export async function* pages(messenger, list) {
  let page = list;
  while (page) {
    for (const m of page.messages || []) yield m;
    page = page.id ? await messenger.messages.continueList(page.id) : null;
  }
}

/** Folders to scan on first sync: everything except trash, junk, drafts, templates, outbox. */
export function scanFolders(accounts) {
  const out = [];
  const walk = (folders) => {
    for (const f of folders || []) {
      const uses = f.specialUse || [];
      if (!uses.some((u) => SKIP_FOLDERS.has(u)) && !f.isVirtual) out.push(f);
      walk(f.subFolders);
    }
  };
  for (const a of accounts) walk(a.rootFolder ? [a.rootFolder] : a.folders);
  return out.filter((f) => !f.isRoot);
}

/** Messages classified at once during a first sync (IMAP fetches run in parallel). */
export const SCAN_CONCURRENCY = 8;

/**
 * Classify every message in a folder that has none of our tags yet. Outside the Sent
 * folder only the core's candidates (classify.candidate on author and subject) are
 * downloaded; a sent De-Mail carries the organisation's own e-mail address as author,
 * so the Sent folder is classified in full.
 */
/**
 * @param {any} messenger
 * @param {any} core
 * @param {any} folder
 * @param {{onError?: Function, onResult?: Function, concurrency?: number}} [opts]
 */
export async function scanFolder(messenger, core, folder, { onError, onResult, concurrency = SCAN_CONCURRENCY } = {}) {
  // The tags a classification sets (not the server's warning: that alone is no verdict).
  const ours = new Set(Object.values(TAG_FOR_KIND).map((t) => TAGS[t].key));
  const prefilter = !(folder.specialUse || []).includes("sent");
  let n = 0, tagged = 0, total = 0, skipped = 0;
  const running = new Set();
  for await (const m of pages(messenger, await messenger.messages.list(folder.id))) {
    total++;
    if ((m.tags || []).some((t) => ours.has(t))) continue;
    if (prefilter && !isCandidate(core, m)) {
      skipped++;
      continue;
    }
    n++;
    const job = classifyAndTag(messenger, core, m)
      .then((r) => { if (r.changed) tagged++; onResult?.(m, r); })
      .catch((e) => onError?.(m, e))
      .finally(() => running.delete(job));
    running.add(job);
    if (running.size >= concurrency) await Promise.race(running);
  }
  await Promise.all(running);
  return { folder: folder.id, total, classified: n, skipped, tagged };
}

/**
 * What the banner shows for a classification; labels are filled in by the page.
 * Returns null for plain e-mail (no banner).
 */
export function bannerData(c) {
  if (!c || c.kind === "email") return null;
  return {
    kind: c.untrusted ? "untrusted" : c.kind,
    claimedKind: c.kind,
    seal: c.seal || null,
    messageType: c.message_type || null,
    options: c.options || [],
    authLevel: c.auth_level || null,
    privateId: c.private_id || null,
    sender: c.sender || null,
    receipt: c.receipt
      ? {
          type: c.receipt.type,
          originalSubject: c.receipt.original_subject || null,
          originalMessageId: c.receipt.original_message_id || null,
          time: c.receipt.time || null,
        }
      : null,
    notificationType: c.notification_type || null,
    warnings: (c.warnings || []).map((w) => ({ code: w.code, message: w.message, message_en: w.message_en })),
  };
}

/** Find the original De-Mail a receipt confirms: by Message-ID, else by private-id. */
export async function findOriginal(messenger, core, banner) {
  const r = banner?.receipt;
  if (r?.originalMessageId) {
    const mid = r.originalMessageId.replace(/^<|>$/g, "");
    const found = await messenger.messages.query({ headerMessageId: mid });
    const first = found?.messages?.[0];
    if (first) return first;
  }
  if (banner?.privateId) {
    const found = await messenger.messages.query({ tags: { mode: "any", tags: { [TAGS.demail.key]: true } } });
    for await (const m of pages(messenger, found)) {
      try {
        const c = await classifyMessage(messenger, core, m);
        if (c.kind === "demail" && c.private_id === banner.privateId) return m;
      } catch {
        // unreadable message: skip
      }
    }
  }
  return null;
}

/**
 * The provider's signature (X-de-mail-integrity) over the whole message, whatever its
 * size: the core prepares and decides, WebCrypto checks the signatures. A verdict as
 * `demail verify` gives it; a message that cannot be read is a verdict too (not valid).
 */
export async function integrityOf(messenger, core, header) {
  try {
    const r = await core.verifyIntegrity(await messageBytes(messenger, header.id));
    return r.ok ? r.result : { status: "invalid", reasons: [r.error] };
  } catch (e) {
    const why = String(e?.message || e);
    return { status: "invalid", reasons: [{ code: "integrity.unreadable", message: why, message_en: why }] };
  }
}

/** How the banner words a verdict: `valid`, `hash-only`, or a `warning`. */
export function integrityState(verdict) {
  return verdict.status === "valid" || verdict.status === "hash-only" ? verdict.status : "warning";
}
