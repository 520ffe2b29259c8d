// The add-in's background logic: one message dispatcher and the Thunderbird event
// handlers. background.js only wires this to the real `messenger` API; the unit tests
// wire it to a stub and the real wasm core.

import { MSG, OPTION_IDS, OPTION_LABEL_KEYS, RECEIPT_FOR_OPTION, TAGS } from "./constants.js";
import { loadSettings, saveUserSettings } from "./settings.js";
import * as compose from "./compose.js";
import * as receive from "./receive.js";
import { HelperClient, HelperError } from "./helper.js";

const POLL_MS = 1000;
const DIALOG_SIZE = { width: 560, height: 460 };

export function createAddin({ messenger, loadCore, fetch = globalThis.fetch?.bind(globalThis), log = console, now = () => performance.now() }) {
  let settings = null; // merged settings
  let core = null;
  let coreError = null; // policy problem shown to the user
  let policySource = "builtin"; // "managed" (IT, storage.managed) | "helper" (GET /v1/policy) | "builtin"
  let helperClient = null; // discovered once, dropped when unreachable
  let ready = null;
  let started = null; // ready + tags created
  const composeStates = new Map(); // tabId -> state
  const lastSeen = new Map(); // tabId -> fingerprint of recipients/subject/from
  const dialogs = new Map(); // dialogId -> {kind, tabId, view, resolve}
  let nextDialog = 1;
  let pollTimer = null;
  const metrics = { beforeSend: [] };

  const i18n = (key, subs) => messenger.i18n.getMessage(key, subs) || key;
  const german = () => !/^en/i.test(messenger.i18n.getUILanguage?.() || "de");
  const text = (reason) => (reason ? (german() ? reason.message || reason.message_en : reason.message_en || reason.message) : "");

  // ------------------------------------------------------------------ setup

  async function init() {
    settings = await loadSettings(messenger);
    // The rules: IT's policy from storage.managed wins; else the helper's
    // (GET /v1/policy, the same file the helper and gateway apply); else built-in.
    let policyText = settings.policyText;
    policySource = policyText ? "managed" : "builtin";
    if (!policyText) {
      const hp = await helperPolicy();
      if (hp) {
        policyText = hp;
        policySource = "helper";
      }
    }
    core = await loadCore(policyText);
    // Warm the module up (first calls compile code paths).
    core.check({ from: "a@example.org", to: ["b@example.org", "c@x.de-mail.de"], options: ["private"] });
    coreError = null;
    if (policyText) {
      const chk = core.call("policy.check", policyText);
      if (!chk.ok || !chk.result.valid) {
        // An invalid IT policy must not switch protection off: fall back to the
        // built-in defaults (strict) and say so in the popup and options page.
        coreError = chk.ok ? chk.result.errors[0] : chk.error;
        core = await loadCore("");
        log.warn?.(`demail: invalid policy (${policySource}); using built-in defaults`, coreError);
        policySource = "builtin";
      }
    }
  }

  /** A client of this user's helper; discovery runs once and again after a failure. */
  async function helper() {
    if (helperClient) return helperClient;
    const c = new HelperClient({ messenger, fetch, settings: settings.values, token: settings.helperToken });
    await c.discover();
    helperClient = c;
    return c;
  }

  /**
   * The helper's policy as JSON text, refreshed at each start and kept in
   * storage.local for when the helper is not running. Null without pairing.
   */
  async function helperPolicy() {
    const cached = (await messenger.storage.local.get("helperPolicy")).helperPolicy || null;
    try {
      const c = await helper();
      if (!(await c.token())) return cached;
      const r = await c.request("GET", "/v1/policy", undefined, { timeout: 2000 });
      if (r && r.policy) {
        const text = JSON.stringify(r.policy);
        if (text !== cached) await messenger.storage.local.set({ helperPolicy: text });
        return text;
      }
    } catch (e) {
      helperClient = null;
      log.debug?.("demail: helper policy", e?.code || e);
    }
    return cached;
  }

  function start() {
    ready = init();
    started = ready.then(() => afterStart());
    started.catch((e) => log.error?.("demail: start failed", e));
    return ready;
  }

  async function afterStart() {
    try {
      await receive.ensureTags(messenger, i18n);
    } catch (e) {
      log.error?.("demail: tags", e);
    }
    if (settings.values.scan_existing) firstSync().catch((e) => log.error?.("demail: first sync", e));
    autoPair()
      .catch((e) => log.debug?.("demail: auto pairing", e))
      .then(() => firstRunSetup())
      .catch((e) => log.debug?.("demail: first run", e));
    flushReceipts().catch(() => {});
    for (const tab of await messenger.tabs.query({ type: "messageCompose" }).catch(() => [])) track(tab.id);
  }

  /**
   * First run: when IT allows native auto-approval (helper.toml
   * pairing.native_auto_approve), pair without asking. Otherwise the user pairs from the
   * options page. Tried at most every 10 minutes while there is no token.
   */
  async function autoPair() {
    if (settings.helperToken) return;
    const s = await messenger.storage.local.get(["helperToken", "pairAttemptAt"]);
    if (s.helperToken || (s.pairAttemptAt && Date.now() - s.pairAttemptAt < 10 * 60 * 1000)) return;
    await messenger.storage.local.set({ pairAttemptAt: Date.now() });
    const r = await messenger.runtime.sendNativeMessage(settings.values.helper_native_host, { action: "pair", client: "Thunderbird De-Mail-Add-in" });
    if (r && r.ok && r.result?.token) {
      await messenger.storage.local.set({ helperToken: r.result.token });
      log.info?.("demail: paired with the helper (native, approved by IT)");
      helperClient = null;
      if (!settings.policyText) await reloadSettings(); // the helper's policy is readable now
    }
  }

  /**
   * First run without a token (IT did not pre-provision one): open the guided pairing
   * page once. It requests the pairing, shows the code and waits for the approval.
   */
  async function firstRunSetup() {
    if (settings.helperToken) return;
    const s = await messenger.storage.local.get(["helperToken", "firstRunShown"]);
    if (s.helperToken || s.firstRunShown) return;
    await (await helper()).health(); // a helper that is not running cannot pair yet
    await messenger.storage.local.set({ firstRunShown: Date.now() });
    await messenger.tabs.create({ url: "options/options.html?firstrun=1" });
  }

  async function reloadSettings() {
    await init();
    for (const tabId of composeStates.keys()) refresh(tabId).catch(() => {});
  }

  // ------------------------------------------------------------------ compose state

  async function restoreState(tabId) {
    if (composeStates.has(tabId)) return composeStates.get(tabId);
    let st = null;
    try {
      st = (await messenger.storage.session.get(`compose:${tabId}`))[`compose:${tabId}`] || null;
    } catch {
      st = null;
    }
    if (!st) st = await initialState(tabId);
    composeStates.set(tabId, st);
    return st;
  }

  async function saveState(tabId, st) {
    composeStates.set(tabId, st);
    try {
      await messenger.storage.session.set({ [`compose:${tabId}`]: st });
    } catch {
      // storage.session unavailable: memory only
    }
  }

  /** A new compose window: replying to or forwarding a De-Mail starts in De-Mail mode. */
  async function initialState(tabId) {
    const st = { options: [], marked: false, privateId: "", forwardedDemail: false, origin: null, touched: false };
    try {
      const d = await messenger.compose.getComposeDetails(tabId);
      if ((d.type === "reply" || d.type === "forward") && d.relatedMessageId) {
        const hdr = await messenger.messages.get(d.relatedMessageId);
        const c = await receive.classifyMessage(messenger, core, hdr);
        if (c.kind === "demail" && !c.untrusted) {
          st.forwardedDemail = true;
          st.origin = { kind: c.kind, privateId: c.private_id || null, type: d.type };
          if (d.type === "reply") {
            st.marked = true;
            // Carry Persönlich over from the original (the core classified it).
            if ((c.options || []).includes("private")) st.options = ["private"];
          }
        }
      }
    } catch (e) {
      log.debug?.("demail: initial state", e);
    }
    return st;
  }

  async function resolver(entry) {
    if (typeof entry === "string") {
      try {
        const list = await messenger.messengerUtilities.parseMailboxString(entry);
        return list.map((m) => (m.name ? `${m.name} <${m.email}>` : m.email)).filter(Boolean);
      } catch {
        return null;
      }
    }
    try {
      const node = entry.unresolved;
      if (node?.type === "contact") {
        const c = await messenger.addressBooks.contacts.get(node.nodeId || node.id);
        const email = c?.properties?.PrimaryEmail;
        return email ? [email] : null;
      }
    } catch {
      return null;
    }
    return null;
  }

  async function recipientsOf(details) {
    return {
      to: await compose.resolveRecipients(details.to, resolver),
      cc: await compose.resolveRecipients(details.cc, resolver),
      bcc: await compose.resolveRecipients(details.bcc, resolver),
    };
  }

  async function evaluateTab(tabId, details, { size, withOptionStates = true } = {}) {
    await ready;
    const st = await restoreState(tabId);
    details = details || (await messenger.compose.getComposeDetails(tabId));
    const recipients = await recipientsOf(details);
    const args = { from: compose.senderOf(details), recipients, state: st, subjectText: details.subject || "", size, forwardedDemail: st.forwardedDemail, withOptionStates };
    let ev = compose.evaluate(core, args);
    // Options IT pre-ticks for a new De-Mail, once, before the user touches anything.
    if (!st.touched && !st.defaultsApplied && ev.result.demail_recipients.length && settings.values.default_options.length) {
      st.defaultsApplied = true;
      const allowed = new Set((ev.options || []).filter((o) => !o.disabled).map((o) => o.id));
      st.options = [...new Set([...st.options, ...settings.values.default_options.filter((o) => allowed.has(o))])];
      await saveState(tabId, st);
      ev = compose.evaluate(core, { ...args, state: st });
    }
    return { st, details, ev };
  }

  function fingerprint(d) {
    return JSON.stringify([d.from, d.to, d.cc, d.bcc, d.subject, d.identityId]);
  }

  async function updateButton(tabId, ev) {
    const mode = ev.mode;
    const label = { none: i18n("actionLabelNone"), demail: i18n("actionLabelDemail"), conflict: i18n("actionLabelConflict") }[mode];
    const icon = { none: "icons/demail-off.svg", demail: "icons/demail.svg", conflict: "icons/demail-conflict.svg" }[mode];
    const title = mode === "none" ? i18n("actionTitle") : text(ev.blocking[0] || ev.confirming[0] || ev.info[0]) || i18n("actionTitle");
    const a = messenger.composeAction;
    await Promise.all([
      a.setLabel({ tabId, label }),
      a.setTitle({ tabId, title }),
      a.setIcon({ tabId, path: icon }),
      a.setBadgeText({ tabId, text: mode === "conflict" ? "!" : "" }),
      mode === "conflict" ? a.setBadgeBackgroundColor({ tabId, color: "#B00020" }) : Promise.resolve(),
    ]).catch((e) => log.debug?.("demail: button", e));
  }

  async function refresh(tabId, details) {
    const { ev, details: d } = await evaluateTab(tabId, details, { withOptionStates: false });
    lastSeen.set(tabId, fingerprint(d));
    await updateButton(tabId, ev);
    return ev;
  }

  function track(tabId) {
    if (!composeStates.has(tabId)) restoreState(tabId).then(() => refresh(tabId)).catch(() => {});
    if (!pollTimer) {
      pollTimer = setInterval(poll, POLL_MS);
      pollTimer?.unref?.(); // Node (tests): do not keep the process alive
    }
  }

  function untrack(tabId) {
    composeStates.delete(tabId);
    lastSeen.delete(tabId);
    messenger.storage.session?.remove?.(`compose:${tabId}`)?.catch?.(() => {});
    if (composeStates.size === 0 && pollTimer) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  /** Recipients have no change event: look at open compose windows every second. */
  async function poll() {
    for (const tabId of [...composeStates.keys()]) {
      try {
        const d = await messenger.compose.getComposeDetails(tabId);
        if (fingerprint(d) !== lastSeen.get(tabId)) await refresh(tabId, d);
      } catch {
        untrack(tabId);
      }
    }
  }

  // ------------------------------------------------------------------ views for pages

  function optionView(o) {
    // Disabled or locked: the core's own reason (e.g. options.private_implied).
    const reason = o.disabled || o.locked ? text(o.reason) : null;
    return { id: o.id, label: i18n(labelKey(o.id)), checked: o.checked, disabled: o.disabled, locked: o.locked, reason };
  }

  const labelKey = (id) => OPTION_LABEL_KEYS[id];

  function view(tabId, st, ev) {
    const reasonView = (r) => ({ code: r.code, severity: r.severity || "info", text: text(r) });
    return {
      tabId,
      mode: ev.mode,
      verdict: ev.result.verdict,
      marked: Boolean(st.marked),
      privateId: st.privateId || "",
      origin: st.origin,
      options: (ev.options || []).map(optionView),
      groups: {
        demail: ev.groups.demail.map((r) => ({ address: r.address, name: r.name || "", field: r.field })),
        internal: (ev.groups.internal || []).map((r) => ({ address: r.address, name: r.name || "", field: r.field })),
        external: (ev.groups.external || []).map((r) => ({ address: r.address, name: r.name || "", field: r.field })),
      },
      explanation: [...ev.blocking, ...ev.confirming, ...ev.info].map(reasonView),
      fixes: ev.fixes.map((id) => ({ id, label: i18n(fixLabel(id)) })),
      subjectTags: ev.subject ? { demail: ev.subject.demail, options: ev.subject.options } : null,
      policyProblem: coreError ? text(coreError) : null,
      unreachableHelper: settings.values.unreachable_helper,
    };
  }

  function fixLabel(id) {
    return { "remove-email": "fixRemoveEmail", "remove-external": "fixRemoveExternal", "remove-demail": "fixRemoveDemail", "clear-options": "fixClearOptions", unmark: "fixUnmark" }[id];
  }

  async function composeView(tabId) {
    const { st, ev } = await evaluateTab(tabId);
    await updateButton(tabId, ev);
    return view(tabId, st, ev);
  }

  async function composeSet(tabId, changes) {
    const st = await restoreState(tabId);
    if (Array.isArray(changes.options)) st.options = OPTION_IDS.filter((o) => changes.options.includes(o));
    if (typeof changes.marked === "boolean") st.marked = changes.marked;
    if (typeof changes.privateId === "string") st.privateId = changes.privateId;
    st.touched = true;
    await saveState(tabId, st);
    return composeView(tabId);
  }

  async function composeFix(tabId, fix) {
    const { st, ev } = await evaluateTab(tabId, null, { withOptionStates: false });
    const lists = compose.recipientsAfterFix(ev.result, fix);
    if (lists) await messenger.compose.setComposeDetails(tabId, lists);
    if (fix === "clear-options") {
      st.options = [];
      st.marked = false;
      st.touched = true;
      await saveState(tabId, st);
      // Tags the user typed into the subject are options too: the core strips them.
      if (ev.subject && (ev.subject.options.length || ev.subject.demail) && !ev.subject.errors?.length) {
        await messenger.compose.setComposeDetails(tabId, { subject: ev.subject.subject });
      }
    }
    if (fix === "unmark") {
      st.marked = false;
      st.touched = true;
      await saveState(tabId, st);
    }
    return composeView(tabId);
  }

  // ------------------------------------------------------------------ dialogs

  async function openDialog(kind, tabId, v, extra = {}) {
    const id = nextDialog++;
    let resolve;
    const answered = new Promise((r) => (resolve = r));
    dialogs.set(id, { kind, tabId, view: v, resolve, ...extra });
    try {
      const w = await messenger.windows.create({ type: "popup", url: `dialog/dialog.html?id=${id}`, ...DIALOG_SIZE });
      if (dialogs.has(id)) dialogs.get(id).windowId = w?.id;
    } catch (e) {
      log.error?.("demail: dialog", e);
      resolve(null);
    }
    return { id, answered };
  }

  function closeDialogsFor(tabId) {
    for (const [id, d] of dialogs) {
      if (d.tabId === tabId) {
        d.resolve(null);
        if (d.windowId) messenger.windows.remove(d.windowId).catch(() => {});
        dialogs.delete(id);
      }
    }
  }

  // ------------------------------------------------------------------ send

  async function attachmentsOf(tabId) {
    try {
      return await messenger.compose.listAttachments(tabId);
    } catch {
      return [];
    }
  }

  /**
   * compose.onBeforeSend. Ordinary e-mail passes untouched; blocked sends are cancelled
   * with the compose window intact and the explanation in a dialog; an allowed De-Mail
   * goes to the helper (or follows the unreachable-helper policy).
   */
  async function onBeforeSend(tab, details) {
    const t0 = now();
    const tabId = tab.id;
    let { st, ev } = await evaluateTab(tabId, details, { withOptionStates: false });
    // The size limit is a De-Mail limit: only when the core found De-Mail recipients is
    // the size worth an extra round trip for the attachment list.
    if (ev.result.demail_recipients.length > 0) {
      const size = compose.estimateSize(details, await attachmentsOf(tabId));
      ({ st, ev } = await evaluateTab(tabId, details, { size, withOptionStates: false }));
    }
    const decision = compose.decide(ev);
    let result;
    if (decision.action === "send") {
      result = {};
    } else if (decision.action === "block") {
      await updateButton(tabId, ev);
      closeDialogsFor(tabId);
      openDialog("blocked", tabId, view(tabId, st, ev));
      result = { cancel: true };
    } else {
      let go = true;
      if (decision.action === "confirm" || (ev.mode === "demail" && settings.values.confirm_demail)) {
        closeDialogsFor(tabId);
        const { answered } = await openDialog("confirm", tabId, view(tabId, st, ev));
        go = (await answered) === "send";
      }
      if (!go) result = { cancel: true };
      else if (ev.result.demail_recipients.length === 0) result = {};
      else result = await deliverDemail(tab, details, st, ev, { confirmed: decision.action === "confirm" });
    }
    metrics.beforeSend.push({ ms: now() - t0, action: decision.action });
    if (metrics.beforeSend.length > 100) metrics.beforeSend.shift();
    return result;
  }

  /** An allowed De-Mail: helper first, else the IT policy for an unreachable helper. */
  async function deliverDemail(tab, details, st, ev, { confirmed }) {
    const handed = await handOffToHelper(tab, details, st, ev, { confirmed });
    if (handed.ok) return { cancel: true };
    if (handed.rejected) {
      openDialog("blocked", tab.id, { ...view(tab.id, st, ev), explanation: [{ code: handed.error.code, severity: "block", text: handed.text }], fixes: [] });
      return { cancel: true };
    }
    if (settings.values.unreachable_helper === "subject-tags") {
      const subject = compose.fallbackSubject(core, ev);
      return { details: { subject } };
    }
    openDialog("helper", tab.id, {
      ...view(tab.id, st, ev),
      explanation: [{ code: "helper.unreachable", severity: "block", text: i18n("helperUnreachableBlock") }, ...(handed.text ? [{ code: handed.error?.code || "helper", severity: "info", text: handed.text }] : [])],
      fixes: [],
    });
    return { cancel: true };
  }

  /**
   * Hand a De-Mail to the helper (docs/protocol.md: POST /v1/messages). Resolves
   * {ok:true} once the helper accepted it durably; then the compose window closes.
   * {ok:false} when the helper is unreachable or not paired (the caller applies the
   * policy); {ok:false, rejected:true} when the helper refused the message itself.
   */
  async function handOffToHelper(tab, details, st, ev, { confirmed }) {
    const client = new HelperClient({ messenger, fetch, settings: settings.values, token: settings.helperToken });
    let accepted;
    try {
      // Finding the helper (a native-host round trip) and reading the attachments are
      // independent: do them together, the caseworker is waiting for the window to close.
      const [, message] = await Promise.all([client.discover(), submissionFor(tab.id, details, st, ev, { confirmed })]);
      accepted = await client.submit(message);
    } catch (e) {
      const err = e instanceof HelperError ? e : new HelperError("helper.unreachable", "", String(e?.message || e));
      log.warn?.("demail: helper hand-off failed", err.code, err.message);
      // A refusal by the core in the helper comes with its check: show its reasons.
      const reasons = err.details?.check?.reasons?.filter((r) => r.severity === "block" || r.severity === "confirm");
      const txt = reasons?.length ? reasons.map(text).join(" ") : german() ? err.message_de || err.message_en : err.message_en || err.message_de;
      return { ok: false, rejected: !err.unavailable, error: err, text: txt };
    }
    try {
      await messenger.compose.setComposeDetails(tab.id, { isModified: false });
    } catch {
      // older builds: the close may ask to save
    }
    untrack(tab.id);
    messenger.windows.remove(tab.windowId).catch(() => {});
    // Accepted means stored by the helper: the window may close now; the copy for the
    // Sent folder follows.
    fileSentCopy(client, details, accepted).catch((e) => log.warn?.("demail: sent copy", e?.message || e));
    return { ok: true, accepted };
  }

  /**
   * File the De-Mail as the helper stored it (with its X-de-mail-* headers) in the Sent
   * folder of the sending identity's account, tagged "De-Mail".
   */
  async function fileSentCopy(client, details, accepted) {
    if (!accepted?.id || !messenger.messages.import) return;
    const raw = await client.outboxRaw(accepted.id);
    const accounts = await messenger.accounts.list(false);
    const account = accounts.find((a) => (a.identities || []).some((i) => i.id === details.identityId)) || accounts[0];
    if (!account) return;
    const sent =
      (await messenger.folders.query({ accountId: account.id, specialUse: ["sent"] }))?.[0] ||
      (await messenger.folders.query({ specialUse: ["sent"] }))?.[0];
    if (!sent) {
      log.warn?.("demail: no Sent folder for the De-Mail copy");
      return;
    }
    const file = new File([raw], "demail.eml", { type: "message/rfc822" });
    await messenger.messages.import(file, sent.id, { read: true, tags: [TAGS.demail.key] });
  }

  async function submissionFor(tabId, details, st, ev, { confirmed }) {
    const attachments = [];
    for (const a of await attachmentsOf(tabId)) {
      const file = await messenger.compose.getAttachmentFile(a.id);
      const buf = new Uint8Array(await file.arrayBuffer());
      attachments.push({ filename: a.name, content_type: file.type || "application/octet-stream", data: base64(buf) });
    }
    const plain = details.isPlainText;
    return {
      from: compose.senderOf(details),
      to: ev.input.to,
      cc: ev.input.cc,
      bcc: ev.input.bcc,
      subject: ev.subject ? ev.subject.subject : details.subject || "",
      text: plain ? details.plainTextBody || "" : details.plainTextBody || undefined,
      html: plain ? undefined : details.body,
      attachments,
      options: ev.result.options,
      private_id: st.privateId && st.privateId.trim() ? st.privateId : undefined,
      forwarded_demail: Boolean(st.forwardedDemail),
      confirmed: Boolean(confirmed),
    };
  }

  // ------------------------------------------------------------------ receiving

  let syncChain = Promise.resolve();

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
      const r = await receive.scanFolder(messenger, core, folder, {
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

  const syncTimers = new Map();
  /** Debounced sync: wait until a folder's headers stop arriving (2 s of quiet). */
  function scheduleSync(folder, delay = 2000) {
    clearTimeout(syncTimers.get(folder.id));
    syncTimers.set(folder.id, setTimeout(() => { syncTimers.delete(folder.id); syncFolder(folder); }, delay));
  }

  /** First sync of existing folders (setting scan_existing). */
  async function firstSync() {
    await ready;
    const accounts = await messenger.accounts.list(true);
    for (const folder of receive.scanFolders(accounts)) await syncFolder(folder);
  }

  /** A folder's message count changed (e.g. its headers arrived for the first time). */
  async function onFolderInfoChanged(folder) {
    await ready;
    if (!settings.values.scan_existing || !folder?.id) return;
    const accounts = await messenger.accounts.list(true);
    if (receive.scanFolders(accounts).some((f) => f.id === folder.id)) scheduleSync(folder);
  }

  async function onNewMail(folder, list) {
    await ready;
    // New mail is classified in full (no pre-selection): a De-Mail from a provider's own
    // domain that IT has not listed in the policy is still recognised by its headers.
    for await (const m of receive.pages(messenger, list)) {
      try {
        const r = await receive.classifyAndTag(messenger, core, m);
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
    const { pendingReceipts = [] } = await messenger.storage.local.get("pendingReceipts");
    pendingReceipts.push(report);
    await messenger.storage.local.set({ pendingReceipts: pendingReceipts.slice(-500) });
    await flushReceipts();
  }

  let flushing = null;
  function flushReceipts() {
    flushing = (flushing || Promise.resolve()).then(async () => {
      const { pendingReceipts = [] } = await messenger.storage.local.get("pendingReceipts");
      if (!pendingReceipts.length) return;
      let sent = 0;
      try {
        const c = await helper();
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
        helperClient = null;
        log.debug?.("demail: receipts wait for the helper", e?.code || e);
      }
      const { pendingReceipts: now = [] } = await messenger.storage.local.get("pendingReceipts");
      await messenger.storage.local.set({ pendingReceipts: now.slice(sent) });
    });
    return flushing;
  }

  /**
   * Receipt timeline of a sent De-Mail from the helper's journal: handed to the
   * gateway, then each receipt; receipts the options asked for and not yet there are
   * listed as pending. Null when the helper does not know the De-Mail.
   */
  async function timelineOf(c) {
    if (!c.private_id) return null;
    let entry = null;
    try {
      const j = await (await helper()).journal(c.private_id);
      entry = j?.messages?.[0] || null;
    } catch (e) {
      helperClient = null;
      return { status: "unknown", steps: [], error: e?.code || "helper.unreachable" };
    }
    if (!entry) return { status: "queued", steps: [] };
    const got = new Map((entry.receipts || []).map((r) => [r.type, r]));
    const steps = [{ type: "sent", time: entry.sent_at ? new Date(entry.sent_at).toISOString() : null, done: true }];
    for (const [option, type] of Object.entries(RECEIPT_FOR_OPTION)) {
      const r = got.get(type);
      if (r || (entry.options || c.options || []).includes(option)) steps.push({ type, time: r ? r.time || (r.reported_at ? new Date(r.reported_at).toISOString() : null) : null, done: Boolean(r) });
    }
    return { status: entry.receipt_status, steps };
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

  async function displayInfo(tabId) {
    await ready;
    const shown = await messenger.messageDisplay.getDisplayedMessages(tabId);
    const msg = shown?.messages?.[0];
    if (!msg || !settings.values.show_banner) return null;
    const c = await receive.classifyMessage(messenger, core, msg);
    // Tag while we have it (covers folders the first sync skipped).
    const tag = receive.tagFor(c);
    if (tag && !(msg.tags || []).includes(tag)) messenger.messages.update(msg.id, { tags: [...(msg.tags || []), tag] }).catch(() => {});
    const b = receive.bannerData(c);
    if (!b) return null;
    const labels = {
      title: i18n({ demail: "bannerDemail", receipt: "bannerReceipt", notification: "bannerNotification", malware: "bannerMalware", untrusted: "bannerUntrusted" }[b.kind] || "bannerDemail"),
      // Not confirmed by the gateway: say why, in words a caseworker understands.
      sealWarning: b.kind === "untrusted" ? i18n(b.seal?.state === "missing" ? "sealMissing" : "sealBroken") : null,
      options: b.options.map((o) => i18n(labelKey(o))),
      authLevel: b.authLevel ? i18n(b.authLevel === "high" ? "authHigh" : "authNormal") : null,
      receiptType: b.receipt ? i18n({ dispatch: "receiptDispatch", receipt: "receiptReceipt", retrieve: "receiptRetrieve" }[b.receipt.type] || "receiptDispatch") : null,
      notificationType: b.notificationType ? i18n(`notif_${b.notificationType.replace(/-/g, "_")}`) : null,
      warnings: b.warnings.map(text),
    };
    let original = null;
    if (b.receipt && b.kind === "receipt") {
      const o = await receive.findOriginal(messenger, core, b).catch(() => null);
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
        }));
        labels.timelineStatus = i18n(`timeline_${timeline.status}`) || timeline.status;
        // Our own copy lacks what only the provider adds (message type, auth level):
        // no warnings about that on a sent De-Mail.
        labels.warnings = [];
      }
    }
    return { ...b, labels, original, timeline, messageId: msg.id };
  }

  // ------------------------------------------------------------------ dispatcher

  async function settingsView() {
    await ready;
    return { values: settings.values, locked: settings.locked, managed: settings.managed, problems: settings.problems, policyProblem: coreError ? text(coreError) : null, policySource };
  }

  /** The one message dispatcher for every page of the add-in. */
  async function handleMessage(msg, sender) {
    if (!msg || typeof msg !== "object") return { ok: false, error: "bad message" };
    try {
      switch (msg.type) {
        case MSG.ping:
          await ready;
          return { ok: true, result: { ready: true, beforeSend: metrics.beforeSend } };
        case MSG.composeState:
          return { ok: true, result: await composeView(msg.tabId) };
        case MSG.composeSet:
          return { ok: true, result: await composeSet(msg.tabId, msg.changes || {}) };
        case MSG.composeFix: {
          const r = await composeFix(msg.tabId, msg.fix);
          if (msg.dialogId && dialogs.has(msg.dialogId)) dialogs.get(msg.dialogId).view = r;
          return { ok: true, result: r };
        }
        case MSG.dialogGet: {
          const d = dialogs.get(Number(msg.id));
          return d ? { ok: true, result: { kind: d.kind, tabId: d.tabId, view: d.view } } : { ok: false, error: "no such dialog" };
        }
        case MSG.dialogAnswer: {
          const d = dialogs.get(Number(msg.id));
          if (d) {
            d.resolve(msg.answer);
            dialogs.delete(Number(msg.id));
          }
          return { ok: true, result: true };
        }
        case MSG.displayInfo:
          return { ok: true, result: await displayInfo(sender?.tab?.id ?? msg.tabId) };
        case MSG.displayOpen:
          await messenger.messageDisplay.open({ messageId: msg.messageId, location: "tab" });
          return { ok: true, result: true };
        case MSG.settingsGet:
          return { ok: true, result: await settingsView() };
        case MSG.settingsSet: {
          await ready;
          const refused = await saveUserSettings(messenger, settings, msg.changes);
          await reloadSettings();
          return { ok: true, result: { refused, ...(await settingsView()) } };
        }
        case MSG.helperStatus: {
          await ready;
          const c = new HelperClient({ messenger, fetch, settings: settings.values, token: settings.helperToken });
          try {
            await c.discover();
            const h = await c.health();
            // A stored token counts only once the user approved it (pending otherwise).
            let paired = false;
            if (await c.token()) paired = (await c.pairingStatus().catch(() => null))?.status === "approved";
            return { ok: true, result: { reachable: true, url: c.baseUrl, health: h, paired } };
          } catch (e) {
            return { ok: true, result: { reachable: false, url: c.baseUrl, error: e.code, paired: Boolean(await c.token().catch(() => null)) } };
          }
        }
        case MSG.helperPair: {
          await ready;
          const c = new HelperClient({ messenger, fetch, settings: settings.values, token: settings.helperToken });
          try {
            await c.discover();
            const r = await c.pair();
            helperClient = null;
            if (r.status === "approved") await reloadSettings();
            return { ok: true, result: r };
          } catch (e) {
            return { ok: false, error: e.code || "helper", text: german() ? e.message_de || e.message : e.message_en || e.message };
          }
        }
        case MSG.helperPairStatus: {
          // The guided pairing polls this until the user approved the code in the helper.
          await ready;
          const c = new HelperClient({ messenger, fetch, settings: settings.values, token: settings.helperToken });
          try {
            await c.discover();
            const r = await c.pairingStatus();
            if (r.status === "approved") {
              await messenger.storage.local.remove("helperPairing");
              helperClient = null;
              await reloadSettings(); // now the helper's policy can be read
            }
            return { ok: true, result: { status: r.status, policySource } };
          } catch (e) {
            if (e.code === "auth.invalid") {
              // Denied or expired: forget the token, a new request starts over.
              await messenger.storage.local.remove(["helperToken", "helperPairing"]);
              return { ok: true, result: { status: "denied" } };
            }
            return { ok: false, error: e.code || "helper", text: german() ? e.message_de || e.message : e.message_en || e.message };
          }
        }
        default:
          return { ok: false, error: `unknown message ${msg.type}` };
      }
    } catch (e) {
      log.error?.("demail: dispatch", msg.type, e);
      return { ok: false, error: String(e?.message || e) };
    }
  }

  /** Register every listener synchronously (MV3: the event page must wake for them). */
  function register() {
    messenger.runtime.onMessage.addListener((msg, sender) => handleMessage(msg, sender));
    messenger.compose.onBeforeSend.addListener((tab, details) => onBeforeSend(tab, details));
    messenger.compose.onComposeStateChanged.addListener((tab) => { track(tab.id); refresh(tab.id).catch(() => {}); });
    messenger.compose.onIdentityChanged?.addListener((tab) => refresh(tab.id).catch(() => {}));
    messenger.compose.onAttachmentAdded?.addListener((tab) => refresh(tab.id).catch(() => {}));
    messenger.tabs.onCreated.addListener((tab) => { if (tab.type === "messageCompose") track(tab.id); });
    messenger.tabs.onRemoved.addListener((tabId) => { if (composeStates.has(tabId)) { closeDialogsFor(tabId); untrack(tabId); } });
    messenger.messages.onNewMailReceived.addListener((folder, list) => onNewMail(folder, list));
    messenger.folders?.onFolderInfoChanged?.addListener((folder) => onFolderInfoChanged(folder));
    messenger.storage.onChanged?.addListener((changes, area) => { if (area === "managed") reloadSettings().catch(() => {}); });
  }

  function stop() {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
  }

  return {
    start, stop, register, handleMessage, onBeforeSend, onNewMail, firstSync, refresh, track,
    handOffToHelper, deliverDemail, displayInfo,
    get ready() { return ready; },
    get started() { return started; },
    get settings() { return settings; },
    get core() { return core; },
    dialogs, composeStates, metrics,
  };
}

function base64(bytes) {
  let s = "";
  const CH = 0x8000;
  for (let i = 0; i < bytes.length; i += CH) s += String.fromCharCode.apply(null, bytes.subarray(i, i + CH));
  return btoa(s);
}

export { TAGS };
