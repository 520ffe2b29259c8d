// @ts-check
// Compose state: each compose window's De-Mail state (options, marker, Kennung; memory
// plus storage.session, never in the message), the core's evaluation of the window, and
// the compose-action button. Recipients have no change event in the MailExtension API,
// so open compose windows are polled.

import * as compose from "./compose.js";
import * as receive from "./receive.js";

const POLL_MS = 1000;

/** @param {object} ctx the add-in's shared context (lib/addin.js) */
export function createTracker(ctx) {
  const { messenger, log } = ctx;
  const states = new Map(); // tabId -> state
  const lastSeen = new Map(); // tabId -> fingerprint of recipients/subject/from
  /** @type {any} a timer id (a number in Thunderbird, an object with unref() under Node) */
  let pollTimer = null;

  async function restoreState(tabId) {
    if (states.has(tabId)) return states.get(tabId);
    let st = null;
    try {
      st = (await messenger.storage.session.get(`compose:${tabId}`))[`compose:${tabId}`] || null;
    } catch {
      st = null;
    }
    if (!st) st = await initialState(tabId);
    states.set(tabId, st);
    return st;
  }

  async function saveState(tabId, st) {
    states.set(tabId, st);
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
        const c = await receive.classifyMessage(messenger, ctx.core, hdr);
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

  /**
   * @param {number} tabId
   * @param {any} details
   * @param {{size?: number, withOptionStates?: boolean}} [opts]
   */
  async function evaluateTab(tabId, details, { size, withOptionStates = true } = {}) {
    await ctx.ready;
    const st = await restoreState(tabId);
    details = details || (await messenger.compose.getComposeDetails(tabId));
    const recipients = await recipientsOf(details);
    const args = { from: compose.senderOf(details), recipients, state: st, subjectText: details.subject || "", size, forwardedDemail: st.forwardedDemail, withOptionStates };
    let ev = compose.evaluate(ctx.core, args);
    // Options IT pre-ticks for a new De-Mail, once, before the user touches anything.
    const defaults = ctx.settings.values.default_options;
    if (!st.touched && !st.defaultsApplied && ev.result.demail_recipients.length && defaults.length) {
      st.defaultsApplied = true;
      const allowed = new Set((ev.options || []).filter((o) => !o.disabled).map((o) => o.id));
      st.options = [...new Set([...st.options, ...defaults.filter((o) => allowed.has(o))])];
      await saveState(tabId, st);
      ev = compose.evaluate(ctx.core, { ...args, state: st });
    }
    return { st, details, ev };
  }

  function fingerprint(d) {
    return JSON.stringify([d.from, d.to, d.cc, d.bcc, d.subject, d.identityId]);
  }

  async function updateButton(tabId, ev) {
    const { i18n, text } = ctx;
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

  /** After new settings or a new policy: every open compose window again. */
  function refreshAll() {
    for (const tabId of states.keys()) refresh(tabId).catch(() => {});
  }

  function track(tabId) {
    if (!states.has(tabId)) restoreState(tabId).then(() => refresh(tabId)).catch(() => {});
    if (!pollTimer) {
      pollTimer = setInterval(poll, POLL_MS);
      pollTimer?.unref?.(); // Node (tests): do not keep the process alive
    }
  }

  function untrack(tabId) {
    states.delete(tabId);
    lastSeen.delete(tabId);
    messenger.storage.session?.remove?.(`compose:${tabId}`)?.catch?.(() => {});
    if (states.size === 0 && pollTimer) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  /** Recipients have no change event: look at open compose windows every second. */
  async function poll() {
    for (const tabId of [...states.keys()]) {
      try {
        const d = await messenger.compose.getComposeDetails(tabId);
        if (fingerprint(d) !== lastSeen.get(tabId)) await refresh(tabId, d);
      } catch {
        untrack(tabId);
      }
    }
  }

  function stop() {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
  }

  return { states, restoreState, saveState, evaluateTab, updateButton, refresh, refreshAll, track, untrack, stop };
}
