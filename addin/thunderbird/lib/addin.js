// @ts-check
// The add-in's background logic: setup (settings, policy, core, helper, pairing) and the
// one message dispatcher with every Thunderbird event handler. The parts live in their
// own modules and share one context object (`ctx` below): tracker.js (compose state),
// views.js (what the popup and dialog show), dialogs.js, send.js, inbox.js (receiving).
// background.js only wires this to the real `messenger` API; the unit tests wire it to
// a stub and the real wasm core.

import { MSG, TAGS } from "./constants.js";
import { loadSettings, saveUserSettings } from "./settings.js";
import * as receive from "./receive.js";
import { HelperClient } from "./helper.js";
import { createTracker } from "./tracker.js";
import { createViews } from "./views.js";
import { createDialogs } from "./dialogs.js";
import { createSend } from "./send.js";
import { createInbox } from "./inbox.js";

export function createAddin({ messenger, loadCore, fetch = globalThis.fetch?.bind(globalThis), log = console, now = () => performance.now() }) {
  let helperClient = null; // discovered once, dropped when unreachable
  let started = null; // ready + tags created
  let startup = null; // {instantiate_ms, policy_ms} of this page's first init(), for the benchmark

  // State the parts share. init() replaces settings, core and policy on every reload;
  // the parts read them from here at each use.
  const ctx = {
    messenger, fetch, log, now,
    settings: null, // merged settings (lib/settings.js)
    core: null,
    coreError: null, // policy problem shown to the user
    policySource: "builtin", // "managed" (IT, storage.managed) | "helper" (GET /v1/policy) | "builtin"
    options: [], // the core's option table, [{id, header, label, label_en}] in UI order
    ready: null, // settled once init() has run
    i18n: (key, subs) => messenger.i18n.getMessage(key, subs) || key,
    german: () => !/^en/i.test(messenger.i18n.getUILanguage?.() || "de"),
    text: (reason) => (reason ? (ctx.german() ? reason.message || reason.message_en : reason.message_en || reason.message) : ""),
    optionIds: () => ctx.options.map((o) => o.id),
    optionLabel: (id) => {
      const o = ctx.options.find((x) => x.id === id);
      return o ? (ctx.german() ? o.label : o.label_en) : id;
    },
    helper,
    forgetHelper: () => { helperClient = null; },
    // The token is gone (expired, revoked): pair again as at the first start.
    repair: () => {
      helperClient = null;
      return autoPair().catch((e) => log.debug?.("demail: pairing again", e)).then(() => firstRunSetup()).catch((e) => log.debug?.("demail: first run", e));
    },
  };
  const { i18n, german } = ctx;

  const tracker = createTracker(ctx);
  const views = createViews(ctx, tracker);
  const dialogs = createDialogs(ctx);
  const send = createSend(ctx, { tracker, views, dialogs });
  const inbox = createInbox(ctx);

  // ------------------------------------------------------------------ setup

  async function init() {
    // The option table is the same under every policy, and the settings need it to check
    // default_options: read it first, from the built-in rules. The first load instantiates
    // the wasm module; its time and the policy's parse are kept for the benchmark.
    const t0 = now();
    if (!ctx.options.length) ctx.options = (await loadCore("")).optionList();
    const instantiateMs = now() - t0;
    const settings = (ctx.settings = await loadSettings(messenger, ctx.optionIds()));
    // The rules: IT's policy from storage.managed wins; else the helper's
    // (GET /v1/policy, the same file the helper and gateway apply); else built-in.
    let policyText = settings.policyText;
    ctx.policySource = policyText ? "managed" : "builtin";
    if (!policyText) {
      const hp = await helperPolicy();
      if (hp) {
        policyText = hp;
        ctx.policySource = "helper";
      }
    }
    ctx.core = await loadCore(policyText);
    // Warm the module up (first calls compile code paths); the first call parses the
    // policy, which the module then keeps.
    const t1 = now();
    ctx.core.check({ from: "a@example.org", to: ["b@example.org", "c@x.de-mail.de"], options: ["private"] });
    startup ??= { instantiate_ms: instantiateMs, policy_ms: now() - t1 };
    ctx.coreError = null;
    if (policyText) {
      const chk = ctx.core.call("policy.check", policyText);
      if (!chk.ok || !chk.result.valid) {
        // An invalid IT policy must not switch protection off: fall back to the
        // built-in defaults (strict) and say so in the popup and options page.
        ctx.coreError = chk.ok ? chk.result.errors[0] : chk.error;
        ctx.core = await loadCore("");
        log.warn?.(`demail: invalid policy (${ctx.policySource}); using built-in defaults`, ctx.coreError);
        ctx.policySource = "builtin";
      }
    }
  }

  /** A client of this user's helper; discovery runs once and again after a failure. */
  async function helper() {
    if (helperClient) return helperClient;
    const c = new HelperClient({ messenger, fetch, settings: ctx.settings.values, token: ctx.settings.helperToken });
    await c.discover();
    helperClient = c;
    return c;
  }

  /** A fresh client for the options page's status and pairing (no cached discovery). */
  function newHelperClient() {
    return new HelperClient({ messenger, fetch, settings: ctx.settings.values, token: ctx.settings.helperToken });
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
    ctx.ready = init();
    started = ctx.ready.then(() => afterStart());
    started.catch((e) => log.error?.("demail: start failed", e));
    return ctx.ready;
  }

  async function afterStart() {
    try {
      await receive.ensureTags(messenger, i18n);
    } catch (e) {
      log.error?.("demail: tags", e);
    }
    if (ctx.settings.values.scan_existing) inbox.firstSync().catch((e) => log.error?.("demail: first sync", e));
    autoPair()
      .catch((e) => log.debug?.("demail: auto pairing", e))
      .then(() => firstRunSetup())
      .catch((e) => log.debug?.("demail: first run", e));
    inbox.flushReceipts().catch(() => {});
    for (const tab of await messenger.tabs.query({ type: "messageCompose" }).catch(() => [])) tracker.track(tab.id);
  }

  /**
   * First run: when IT allows native auto-approval (helper.toml
   * pairing.native_auto_approve), pair without asking. Otherwise the user pairs from the
   * options page. Tried at most every 10 minutes while there is no token.
   */
  async function autoPair() {
    if (ctx.settings.helperToken) return;
    const s = await messenger.storage.local.get(["helperToken", "pairAttemptAt"]);
    if (s.helperToken || (s.pairAttemptAt && Date.now() - s.pairAttemptAt < 10 * 60 * 1000)) return;
    await messenger.storage.local.set({ pairAttemptAt: Date.now() });
    const r = await messenger.runtime.sendNativeMessage(ctx.settings.values.helper_native_host, { action: "pair", client: "Thunderbird De-Mail-Add-in" });
    if (r && r.ok && r.result?.token) {
      await messenger.storage.local.set({ helperToken: r.result.token });
      log.info?.("demail: paired with the helper (native, approved by IT)");
      helperClient = null;
      if (!ctx.settings.policyText) await reloadSettings(); // the helper's policy is readable now
    }
  }

  /**
   * First run without a token (IT did not pre-provision one): open the guided pairing
   * page once. It requests the pairing, shows the code and waits for the approval.
   */
  async function firstRunSetup() {
    if (ctx.settings.helperToken) return;
    const s = await messenger.storage.local.get(["helperToken", "firstRunShown"]);
    if (s.helperToken || s.firstRunShown) return;
    await (await helper()).health(); // a helper that is not running cannot pair yet
    await messenger.storage.local.set({ firstRunShown: Date.now() });
    await messenger.tabs.create({ url: "options/options.html?firstrun=1" });
  }

  async function reloadSettings() {
    await init();
    tracker.refreshAll();
  }

  // ------------------------------------------------------------------ dispatcher

  async function settingsView() {
    await ctx.ready;
    const { settings, coreError, policySource } = ctx;
    const options = ctx.options.map((o) => ({ id: o.id, label: ctx.optionLabel(o.id) }));
    return { values: settings.values, locked: settings.locked, managed: settings.managed, problems: settings.problems, policyProblem: coreError ? ctx.text(coreError) : null, policySource, options };
  }

  /** The one message dispatcher for every page of the add-in. */
  async function handleMessage(msg, sender) {
    if (!msg || typeof msg !== "object") return { ok: false, error: "bad message" };
    try {
      switch (msg.type) {
        case MSG.ping:
          await ctx.ready;
          return { ok: true, result: { ready: true, beforeSend: send.metrics.beforeSend, startup } };
        case MSG.composeState:
          return { ok: true, result: await views.composeView(msg.tabId) };
        case MSG.composeSet:
          return { ok: true, result: await views.composeSet(msg.tabId, msg.changes || {}) };
        case MSG.composeFix: {
          const r = await views.composeFix(msg.tabId, msg.fix);
          if (msg.dialogId) dialogs.setView(msg.dialogId, r);
          return { ok: true, result: r };
        }
        case MSG.dialogGet: {
          const d = dialogs.get(Number(msg.id));
          return d ? { ok: true, result: d } : { ok: false, error: "no such dialog" };
        }
        case MSG.dialogAnswer:
          dialogs.answer(Number(msg.id), msg.answer);
          return { ok: true, result: true };
        case MSG.displayInfo:
          return { ok: true, result: await inbox.displayInfo(sender?.tab?.id ?? msg.tabId) };
        case MSG.displayOpen:
          await messenger.messageDisplay.open({ messageId: msg.messageId, location: "tab" });
          return { ok: true, result: true };
        case MSG.settingsGet:
          return { ok: true, result: await settingsView() };
        case MSG.settingsSet: {
          await ctx.ready;
          const refused = await saveUserSettings(messenger, ctx.settings, msg.changes, ctx.optionIds());
          await reloadSettings();
          return { ok: true, result: { refused, ...(await settingsView()) } };
        }
        case MSG.helperStatus: {
          await ctx.ready;
          const c = newHelperClient();
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
          await ctx.ready;
          const c = newHelperClient();
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
          await ctx.ready;
          const c = newHelperClient();
          try {
            await c.discover();
            const r = await c.pairingStatus();
            if (r.status === "approved") {
              await messenger.storage.local.remove("helperPairing");
              helperClient = null;
              await reloadSettings(); // now the helper's policy can be read
            }
            return { ok: true, result: { status: r.status, policySource: ctx.policySource } };
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
    messenger.compose.onBeforeSend.addListener((tab, details) => send.onBeforeSend(tab, details));
    messenger.compose.onComposeStateChanged.addListener((tab) => { tracker.track(tab.id); tracker.refresh(tab.id).catch(() => {}); });
    messenger.compose.onIdentityChanged?.addListener((tab) => tracker.refresh(tab.id).catch(() => {}));
    messenger.compose.onAttachmentAdded?.addListener((tab) => tracker.refresh(tab.id).catch(() => {}));
    messenger.tabs.onCreated.addListener((tab) => { if (tab.type === "messageCompose") tracker.track(tab.id); });
    messenger.tabs.onRemoved.addListener((tabId) => { if (tracker.states.has(tabId)) { dialogs.closeFor(tabId); tracker.untrack(tabId); } });
    messenger.messages.onNewMailReceived.addListener((folder, list) => inbox.onNewMail(folder, list));
    messenger.folders?.onFolderInfoChanged?.addListener((folder) => inbox.onFolderInfoChanged(folder));
    messenger.storage.onChanged?.addListener((changes, area) => { if (area === "managed") reloadSettings().catch(() => {}); });
  }

  return {
    start, stop: tracker.stop, register, handleMessage,
    onBeforeSend: send.onBeforeSend, onNewMail: inbox.onNewMail, firstSync: inbox.firstSync,
    refresh: tracker.refresh, track: tracker.track,
    handOffToHelper: send.handOffToHelper, deliverDemail: send.deliverDemail, displayInfo: inbox.displayInfo,
    get ready() { return ctx.ready; },
    get started() { return started; },
    get settings() { return ctx.settings; },
    get core() { return ctx.core; },
    dialogs: dialogs.open, composeStates: tracker.states, metrics: send.metrics,
  };
}

export { TAGS };
