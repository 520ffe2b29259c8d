// @ts-check
// Receiving: new mail and the first sync of existing folders are classified by the core
// and tagged (lib/receive.js); receipts are reported to the helper's journal; the banner
// gets its data, for a sent De-Mail with the receipt timeline from that journal.

import { RECEIPT_FOR_OPTION } from "./constants.js";
import * as receive from "./receive.js";
import { HelperError } from "./helper.js";

/** @param {object} ctx the add-in's shared context (lib/addin.js) */
export function createInbox(ctx) {
  const { messenger, log, now } = ctx;
  let syncChain = Promise.resolve();
  const syncTimers = new Map();
  let flushing = null;

  /**
   * Classify a folder's messages once (serialised). A folder still empty stays pending;
   * a folder whose headers are still arriving (its count grew during the scan) is
   * scanned again once they have.
   */
  function syncFolder(folder) {
    syncChain = syncChain.then(async () => {
      const done = (await messenger.storage.local.get("scannedFolders")).scannedFolders || {};
      // Scanned already, unless the folder has grown since (its headers were still
      // arriving over IMAP then): scan again; tagged messages are skipped, and the rest
      // costs only the core's pre-selection, no download.
      const prev = done[folder.id];
      if (prev) {
        const info = await messenger.folders?.getFolderInfo?.(folder.id).catch(() => null);
        if (!(typeof prev === "object" && info && info.totalMessageCount > prev.total)) return null;
      }
      const t0 = now();
      const r = await receive.scanFolder(messenger, ctx.core, folder, {
        onError: (m, e) => log.warn?.("demail: classify", m.id, e?.message),
        onResult: (m, x) => { if (x.kind === "receipt") reportReceipt(x.classification).catch(() => {}); },
      });
      const info = await messenger.folders?.getFolderInfo?.(folder.id).catch(() => null);
      if (info && info.totalMessageCount > r.total) {
        scheduleSync(folder);
        return r;
      }
      if (r.total > 0) {
        done[folder.id] = { at: Date.now(), total: r.total };
        await messenger.storage.local.set({ scannedFolders: done });
        log.info?.(`demail: first sync ${folder.id}: ${r.total} messages, ${r.skipped} skipped by the core's pre-selection, ${r.classified} classified, ${r.tagged} tagged in ${Math.round(now() - t0)} ms`);
      }
      return r;
    }).catch((e) => log.warn?.("demail: first sync", folder.id, e?.message));
    return syncChain;
  }

  /** Debounced sync: wait until a folder's headers stop arriving (2 s of quiet). */
  function scheduleSync(folder, delay = 2000) {
    clearTimeout(syncTimers.get(folder.id));
    syncTimers.set(folder.id, setTimeout(() => { syncTimers.delete(folder.id); syncFolder(folder); }, delay));
  }

  /** First sync of existing folders (setting scan_existing). */
  async function firstSync() {
    await ctx.ready;
    const accounts = await messenger.accounts.list(true);
    for (const folder of receive.scanFolders(accounts)) await syncFolder(folder);
  }

  /** A folder's message count changed (e.g. its headers arrived for the first time). */
  async function onFolderInfoChanged(folder) {
    await ctx.ready;
    if (!ctx.settings.values.scan_existing || !folder?.id) return;
    const accounts = await messenger.accounts.list(true);
    if (receive.scanFolders(accounts).some((f) => f.id === folder.id)) scheduleSync(folder);
  }

  async function onNewMail(folder, list) {
    await ctx.ready;
    // New mail is classified in full (no pre-selection): a De-Mail from a provider's own
    // domain that IT has not listed in the policy is still recognised by its headers.
    for await (const m of receive.pages(messenger, list)) {
      try {
        const r = await receive.classifyAndTag(messenger, ctx.core, m);
        if (r.tag) log.info?.(`demail: tagged ${m.id} ${r.kind}`);
        if (r.kind === "receipt") reportReceipt(r.classification).catch(() => {});
      } catch (e) {
        log.warn?.("demail: classify new mail", m.id, e?.message);
      }
    }
  }

  /**
   * Tell the helper about a received receipt (protocol.md journal.receipt), so the
   * sent De-Mail's timeline in its journal is complete. Reports wait in storage.local
   * while the helper is not reachable and are sent with the next one or at start.
   */
  async function reportReceipt(c) {
    const report = receive.receiptReport(c);
    if (!report) return;
    // Receipts often arrive together: the list in storage.local is read and written in
    // turn with the flushes, or one report would overwrite another.
    await inTurn(async () => {
      const { pendingReceipts = [] } = await messenger.storage.local.get("pendingReceipts");
      pendingReceipts.push(report);
      await messenger.storage.local.set({ pendingReceipts: pendingReceipts.slice(-500) });
    });
    await flushReceipts();
  }

  /** Run `f` after everything queued before it (appends and flushes of pendingReceipts). */
  function inTurn(f) {
    const p = (flushing || Promise.resolve()).then(f);
    flushing = p.catch(() => {});
    return p;
  }

  function flushReceipts() {
    return inTurn(async () => {
      const { pendingReceipts = [] } = await messenger.storage.local.get("pendingReceipts");
      if (!pendingReceipts.length) return;
      let sent = 0;
      try {
        const c = await ctx.helper();
        if (!(await c.token())) return;
        for (const r of pendingReceipts) {
          try {
            await c.request("POST", "/v1/journal/receipts", r);
          } catch (e) {
            if (e instanceof HelperError && e.unavailable) throw e;
            log.warn?.("demail: receipt refused by the helper", e?.code); // not retried
          }
          sent++;
        }
      } catch (e) {
        ctx.forgetHelper();
        log.debug?.("demail: receipts wait for the helper", e?.code || e);
      }
      const { pendingReceipts: now = [] } = await messenger.storage.local.get("pendingReceipts");
      await messenger.storage.local.set({ pendingReceipts: now.slice(sent) });
    });
  }

  /**
   * Receipt timeline of a sent De-Mail from the helper's journal: handed to the
   * gateway, then each receipt; receipts the options asked for and not yet there are
   * listed as pending. A step is done only by a receipt that counts (the helper checked
   * its signature and that it certifies the message handed over); every receipt carries
   * its check, so one that does not count is shown with its warning. An older helper
   * checks nothing: its receipts are `unchecked`. Null when the helper does not know
   * the De-Mail.
   */
  async function timelineOf(c) {
    if (!c.private_id) return null;
    let entry = null;
    try {
      const j = await (await ctx.helper()).journal(c.private_id);
      entry = j?.messages?.[0] || null;
    } catch (e) {
      ctx.forgetHelper();
      return { status: "unknown", steps: [], error: e?.code || "helper.unreachable" };
    }
    if (!entry) return { status: "queued", steps: [] };
    const counts = (r) => r.counts === true && r.check === "matches";
    const at = (r) => r.time || (r.reported_at ? new Date(r.reported_at).toISOString() : null);
    const steps = [{ type: "sent", time: entry.sent_at ? new Date(entry.sent_at).toISOString() : null, done: true, checks: [] }];
    for (const [option, type] of Object.entries(RECEIPT_FOR_OPTION)) {
      const rs = (entry.receipts || []).filter((r) => r.type === type);
      const ok = rs.find(counts);
      if (rs.length || (entry.options || c.options || []).includes(option)) {
        steps.push({
          type,
          time: ok ? at(ok) : null,
          done: Boolean(ok),
          checks: rs.map((r) => ({ check: r.check || "unchecked", counts: counts(r), reason: (r.reasons || [])[0] || null })),
        });
      }
    }
    // The furthest step a receipt that counts reached (the helper's receipt_status, here
    // also for older helpers that counted unchecked receipts).
    const done = new Set(steps.filter((st) => st.done).map((st) => st.type));
    const status = done.has("retrieve") ? "retrieved" : done.has("receipt") ? "received" : done.has("dispatch") ? "dispatched" : "sent";
    return { status, steps };
  }

  /** One receipt's check in words: "geprüft" only for one that counts, else why not. */
  function checkText(x) {
    const { i18n, text } = ctx;
    if (x.counts) return i18n("receiptCheck_matches");
    const key = { mismatch: "receiptCheck_mismatch", "invalid-signature": "receiptCheck_invalid_signature", unsigned: "receiptCheck_unsigned", untrusted: "receiptCheck_untrusted", "unknown-sent": "receiptCheck_unknown_sent" }[x.check] || "receiptCheck_unchecked";
    return i18n(key, [x.reason ? text(x.reason) : ""]).trim();
  }

  async function isSent(msg) {
    if ((msg.folder?.specialUse || []).includes("sent")) return true;
    try {
      const accounts = await messenger.accounts.list(false);
      const mine = new Set(accounts.flatMap((a) => (a.identities || []).map((i) => String(i.email || "").toLowerCase())));
      const m = /<([^>]+)>/.exec(msg.author || "");
      return mine.has(String(m ? m[1] : msg.author || "").trim().toLowerCase());
    } catch {
      return false;
    }
  }

  /** The banner's data for the message shown in a tab; null for none. */
  async function displayInfo(tabId) {
    await ctx.ready;
    const { i18n, text } = ctx;
    const shown = await messenger.messageDisplay.getDisplayedMessages(tabId);
    const msg = shown?.messages?.[0];
    if (!msg || !ctx.settings.values.show_banner) return null;
    const c = await receive.classifyMessage(messenger, ctx.core, msg);
    // Tag while we have it (covers folders the first sync skipped).
    const tag = receive.tagFor(c);
    if (tag && !(msg.tags || []).includes(tag)) messenger.messages.update(msg.id, { tags: [...(msg.tags || []), tag] }).catch(() => {});
    const b = receive.bannerData(c);
    if (!b) return null;
    const labels = {
      title: i18n({ demail: "bannerDemail", receipt: "bannerReceipt", notification: "bannerNotification", malware: "bannerMalware", untrusted: "bannerUntrusted" }[b.kind] || "bannerDemail"),
      // Not confirmed by the gateway: say why, in words a caseworker understands.
      sealWarning: b.kind === "untrusted" ? i18n(b.seal?.state === "missing" ? "sealMissing" : "sealBroken") : null,
      options: b.options.map(ctx.optionLabel),
      authLevel: b.authLevel ? i18n(b.authLevel === "high" ? "authHigh" : "authNormal") : null,
      receiptType: b.receipt ? i18n({ dispatch: "receiptDispatch", receipt: "receiptReceipt", retrieve: "receiptRetrieve" }[b.receipt.type] || "receiptDispatch") : null,
      notificationType: b.notificationType ? i18n(`notif_${b.notificationType.replace(/-/g, "_")}`) : null,
      warnings: b.warnings.map(text),
    };
    // The provider's signature, checked here on the whole message (not on our own sent copy,
    // which never had one).
    if (!(await isSent(msg))) {
      const v = await receive.integrityOf(messenger, ctx.core, msg);
      const state = receive.integrityState(v);
      const detail = state === "valid" && v.signer ? i18n("integritySigner", [v.signer]) : state === "warning" && v.reasons?.[0] ? text(v.reasons[0]) : "";
      labels.integrity = { state, text: i18n(`integrity_${state.replace("-", "_")}`), detail };
    }
    let original = null;
    if (b.receipt && b.kind === "receipt") {
      const o = await receive.findOriginal(messenger, ctx.core, b).catch(() => null);
      if (o) original = { id: o.id, subject: o.subject };
      reportReceipt(c).catch(() => {});
    }
    let timeline = null;
    if (b.kind === "demail" && (await isSent(msg))) {
      timeline = await timelineOf(c);
      if (timeline) {
        labels.timeline = timeline.steps.map((st) => ({
          type: st.type,
          done: st.done,
          label: i18n({ sent: "timelineSent", dispatch: "receiptDispatch", receipt: "receiptReceipt", retrieve: "receiptRetrieve" }[st.type]),
          time: st.time,
          checks: (st.checks || []).map((x) => ({ check: x.check, counts: x.counts, text: checkText(x) })),
        }));
        labels.timelineStatus = i18n(`timeline_${timeline.status}`) || timeline.status;
        // Our own copy lacks what only the provider adds (message type, auth level):
        // no warnings about that on a sent De-Mail.
        labels.warnings = [];
      }
    }
    return { ...b, labels, original, timeline, messageId: msg.id };
  }

  return { firstSync, onFolderInfoChanged, onNewMail, flushReceipts, displayInfo };
}
