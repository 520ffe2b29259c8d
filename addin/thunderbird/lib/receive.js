// Receiving: classify messages with the core and tag them; build the banner's data.
// The core decides what a message is (`classify`); this module reads messages through
// the messenger API and writes tags (IMAP keywords).

import { TAGS, TAG_FOR_KIND } from "./constants.js";

/** Messages above this size are classified from their headers only (no download of the body). */
export const RAW_LIMIT = 2 * 1024 * 1024;

/** Folder kinds (MailFolder.specialUse) never scanned on first sync. */
const SKIP_FOLDERS = new Set(["trash", "junk", "drafts", "templates", "outbox"]);

export function unwrap(res) {
  if (!res || !res.ok) throw new Error(res?.error?.message_en || "core error");
  return res.result;
}

/** Make sure our three tags exist (keeps a colour the user changed). */
export async function ensureTags(messenger, i18n) {
  const existing = await messenger.messages.tags.list();
  const keys = new Set(existing.map((t) => t.key));
  for (const t of Object.values(TAGS)) {
    if (!keys.has(t.key)) await messenger.messages.tags.create(t.key, i18n(t.labelKey), t.color);
  }
}

/** Classify one message (MessageHeader) with the core. */
export async function classifyMessage(messenger, core, header) {
  if ((header.size || 0) <= RAW_LIMIT) {
    const raw = await messenger.messages.getRaw(header.id, { data_format: "File" });
    const bytes = typeof raw === "string" ? binaryStringToBytes(raw) : new Uint8Array(await raw.arrayBuffer());
    return unwrap(core.classifyRaw(bytes));
  }
  const headers = await messenger.messages.getHeaders(header.id);
  return unwrap(core.classifyHeaders(headers));
}

function binaryStringToBytes(s) {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
  return b;
}

/** The tag key a classification asks for, or null for plain e-mail. */
export function tagFor(classification) {
  const t = TAG_FOR_KIND[classification.kind];
  return t ? TAGS[t].key : null;
}

/** Classify and tag one message; returns {id, kind, tag, changed}. */
export async function classifyAndTag(messenger, core, header) {
  const c = await classifyMessage(messenger, core, header);
  const tag = tagFor(c);
  let changed = false;
  if (tag && !(header.tags || []).includes(tag)) {
    await messenger.messages.update(header.id, { tags: [...(header.tags || []), tag] });
    changed = true;
  }
  return { id: header.id, kind: c.kind, tag, changed };
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

/** Classify every message in a folder that has none of our tags yet. */
export async function scanFolder(messenger, core, folder, { onError, concurrency = SCAN_CONCURRENCY } = {}) {
  const ours = new Set(Object.values(TAGS).map((t) => t.key));
  let n = 0, tagged = 0, total = 0;
  const running = new Set();
  for await (const m of pages(messenger, await messenger.messages.list(folder.id))) {
    total++;
    if ((m.tags || []).some((t) => ours.has(t))) continue;
    n++;
    const job = classifyAndTag(messenger, core, m)
      .then((r) => { if (r.changed) tagged++; })
      .catch((e) => onError?.(m, e))
      .finally(() => running.delete(job));
    running.add(job);
    if (running.size >= concurrency) await Promise.race(running);
  }
  await Promise.all(running);
  return { folder: folder.id, total, classified: n, tagged };
}

/**
 * What the banner shows for a classification; labels are filled in by the page.
 * Returns null for plain e-mail (no banner).
 */
export function bannerData(c) {
  if (!c || c.kind === "email") return null;
  return {
    kind: c.kind,
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
