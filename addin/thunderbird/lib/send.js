// @ts-check
// Send (compose.onBeforeSend): the core's verdict decides. E-mail passes untouched; a
// blocked send is cancelled with the window intact and a dialog; an allowed De-Mail is
// handed to the helper (docs/protocol.md), else IT's unreachable-helper policy applies.

import { TAGS } from "./constants.js";
import * as compose from "./compose.js";
import { HelperClient, HelperError } from "./helper.js";

/**
 * @param {object} ctx the add-in's shared context (lib/addin.js)
 * @param {{tracker: object, views: object, dialogs: object}} parts lib/tracker.js, lib/views.js, lib/dialogs.js
 */
export function createSend(ctx, { tracker, views, dialogs }) {
  const { messenger, log, now } = ctx;
  const metrics = { beforeSend: [] };

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
    let { st, ev } = await tracker.evaluateTab(tabId, details, { withOptionStates: false });
    // The size limit is a De-Mail limit: only when the core found De-Mail recipients is
    // the size worth an extra round trip for the attachment list.
    if (ev.result.demail_recipients.length > 0) {
      const size = compose.estimateSize(details, await attachmentsOf(tabId));
      ({ st, ev } = await tracker.evaluateTab(tabId, details, { size, withOptionStates: false }));
    }
    const decision = compose.decide(ev);
    let result;
    if (decision.action === "send") {
      result = {};
    } else if (decision.action === "block") {
      await tracker.updateButton(tabId, ev);
      dialogs.closeFor(tabId);
      dialogs.show("blocked", tabId, views.view(tabId, st, ev));
      result = { cancel: true };
    } else {
      let go = true;
      if (decision.action === "confirm" || (ev.mode === "demail" && ctx.settings.values.confirm_demail)) {
        dialogs.closeFor(tabId);
        const { answered } = await dialogs.show("confirm", tabId, views.view(tabId, st, ev));
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
    // An expired or revoked token was forgotten (lib/helper.js): pair again.
    if (["auth.invalid", "helper.not_paired"].includes(handed.error?.code)) ctx.repair?.();
    if (handed.rejected) {
      dialogs.show("blocked", tab.id, { ...views.view(tab.id, st, ev), explanation: [{ code: handed.error.code, severity: "block", text: handed.text }], fixes: [] });
      return { cancel: true };
    }
    if (ctx.settings.values.unreachable_helper === "subject-tags") {
      const subject = compose.fallbackSubject(ctx.core, ev);
      return { details: { subject } };
    }
    dialogs.show("helper", tab.id, {
      ...views.view(tab.id, st, ev),
      explanation: [{ code: "helper.unreachable", severity: "block", text: ctx.i18n("helperUnreachableBlock") }, ...(handed.text ? [{ code: handed.error?.code || "helper", severity: "info", text: handed.text }] : [])],
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
    const { settings } = ctx;
    const client = new HelperClient({ messenger, fetch: ctx.fetch, settings: settings.values, token: settings.helperToken });
    let accepted;
    // One Message-ID per compose window, made at its first Send and kept: a second Send
    // after a timeout is the same De-Mail to the helper, never a second one.
    if (!st.messageId) {
      st.messageId = newMessageId(compose.senderOf(details));
      await tracker.saveState(tab.id, st);
    }
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
      const txt = reasons?.length ? reasons.map(ctx.text).join(" ") : ctx.german() ? err.message_de || err.message_en : err.message_en || err.message_de;
      return { ok: false, rejected: !err.unavailable, error: err, text: txt };
    }
    try {
      await messenger.compose.setComposeDetails(tab.id, { isModified: false });
    } catch {
      // older builds: the close may ask to save
    }
    tracker.untrack(tab.id);
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
      message_id: st.messageId,
      forwarded_demail: Boolean(st.forwardedDemail),
      confirmed: Boolean(confirmed),
    };
  }

  return { onBeforeSend, deliverDemail, handOffToHelper, metrics };
}

/** `<ms>.<24 hex>@<sender's domain>`: unique, and under the organisation's domain. */
export function newMessageId(sender) {
  const domain = /@([A-Za-z0-9.-]+)>?\s*$/.exec(sender || "")?.[1] || "demail.invalid";
  const rnd = [...crypto.getRandomValues(new Uint8Array(12))].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${Date.now()}.${rnd}@${domain}`;
}

function base64(bytes) {
  let s = "";
  const CH = 0x8000;
  for (let i = 0; i < bytes.length; i += CH) s += String.fromCharCode.apply(null, bytes.subarray(i, i + CH));
  return btoa(s);
}
