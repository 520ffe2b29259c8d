// @ts-check
// Compose task pane logic without the DOM: the pane's state, the core calls and the
// header writes. Every rule (which options are allowed, implied or locked, which
// recipient is De-Mail, the header names and values) comes from the core.

import { officeAsync, addressesOf, senderAddress } from "./office-async.js";

function unwrap(res) {
  if (!res || !res.ok) {
    throw Object.assign(new Error((res && res.error && res.error.message_en) || "core error"), {
      reason: (res && res.error) || { code: "internal", message: "", message_en: "" },
    });
  }
  return res.result;
}

export class ComposeSession {
  /**
   * @param {object} p
   * @param {object} p.core DemailCore (addin/shared/demail-core.js)
   * @param {object} p.office the Office global
   */
  constructor({ core, office }) {
    this.core = core;
    this.office = office;
    this.item = office.context.mailbox.item;
    this.from = "";
    this.chosen = new Set();
    this.marked = false;
    this.markedTouched = false;
    this.privateId = "";
    this.generatedId = "";
    this.recipients = { to: [], cc: [], bcc: [] };
    this.written = [];
    this.writeError = null;
    this.queue = Promise.resolve();
    this.optionIds = core.optionList().map((o) => o.id); // the core's, in UI order
    // Every header name the core can write: the ones to remove when unticked.
    const all = unwrap(core.headers(this.optionIds, "x"));
    this.allNames = all.headers.map((h) => h.name);
  }

  /** Read sender, recipients and any De-Mail headers already on the draft. */
  async load() {
    this.from = await senderAddress(this.office, this.item);
    await this.readRecipients();
    let existing = {};
    try {
      existing = (await officeAsync(this.item.internetHeaders, "getAsync", this.allNames)) || {};
    } catch (e) {
      existing = {};
    }
    const pairs = Object.keys(existing).map((k) => [k, String(existing[k])]);
    if (pairs.length) {
      // The core reads the headers back (names case-insensitive, values exactly yes/no).
      const c = unwrap(this.core.classifyHeaders(pairs));
      for (const o of c.options || []) this.chosen.add(o);
      if (c.private_id) this.privateId = c.private_id;
      this.written = pairs.map(([name, value]) => ({ name, value }));
      this.marked = true;
      this.markedTouched = true;
    }
    return this.view();
  }

  async readRecipients() {
    const get = async (field) => {
      try {
        return addressesOf(await officeAsync(this.item[field], "getAsync"));
      } catch (e) {
        return [];
      }
    };
    this.recipients = { to: await get("to"), cc: await get("cc"), bcc: await get("bcc") };
  }

  /** The core's view of the current state: option states, recipient kinds, reasons. */
  view() {
    const opts = unwrap(this.core.call("options", { from: this.from, options: [...this.chosen] }));
    const effective = this.marked ? opts.options : [];
    const check = unwrap(
      this.core.check({
        from: this.from,
        to: this.recipients.to,
        cc: this.recipients.cc,
        bcc: this.recipients.bcc,
        options: effective,
        marked: this.marked,
        private_id: this.privateId.trim() === "" ? null : this.privateId,
      }),
    );
    const locked = new Map((opts.locked || []).map((l) => [l.option, l.reason]));
    const disabled = new Map((opts.disabled || []).map((d) => [d.option, d.reason]));
    const options = this.optionIds.map((id) => ({
      id,
      checked: effective.includes(id),
      locked: this.marked && locked.has(id),
      disabled: disabled.has(id),
      reason: (this.marked && locked.get(id)) || disabled.get(id) || null,
    }));
    return {
      from: this.from,
      marked: this.marked,
      options,
      privateId: this.privateId,
      generatedId: this.generatedId,
      check,
      written: this.written,
      writeError: this.writeError,
    };
  }

  /** Serialise changes: Office calls of one change finish before the next starts. */
  run(fn) {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  setOption(id, checked) {
    return this.run(async () => {
      if (checked) this.chosen.add(id);
      else this.chosen.delete(id);
      if (checked) this.marked = true;
      return this.apply();
    });
  }

  setMarked(marked) {
    return this.run(async () => {
      this.markedTouched = true;
      this.marked = Boolean(marked);
      if (!this.marked) this.chosen.clear();
      return this.apply();
    });
  }

  setPrivateId(text) {
    return this.run(async () => {
      this.privateId = String(text || "");
      if (this.privateId.trim() !== "") this.marked = true;
      return this.apply();
    });
  }

  /** Recipients changed in Outlook: re-read them; a De-Mail recipient marks the message once. */
  recipientsChanged() {
    return this.run(async () => {
      await this.readRecipients();
      const v = this.view();
      if (!this.marked && !this.markedTouched && v.check.demail_recipients.length > 0) {
        this.marked = true;
        return this.apply();
      }
      return v;
    });
  }

  /** Write exactly the core's headers for the current state and remove every other X-de-mail one. */
  async apply() {
    this.writeError = null;
    const v = this.view();
    let wanted = [];
    if (this.marked) {
      const opts = v.options.filter((o) => o.checked).map((o) => o.id);
      const pid = this.privateId.trim() !== "" ? this.privateId : this.generatedId || null;
      const res = this.core.headers(opts, pid);
      if (!res.ok) {
        // A bad Nachrichten-Kennung: the core says why; the headers stay as they were.
        this.writeError = res.error;
        return this.view();
      } else {
        wanted = res.result.headers;
        if (res.result.private_id_generated) this.generatedId = res.result.private_id;
      }
    }
    const set = {};
    for (const h of wanted) set[h.name] = h.value;
    const lower = new Set(wanted.map((h) => h.name.toLowerCase()));
    const remove = this.allNames.filter((n) => !lower.has(n.toLowerCase()));
    try {
      if (remove.length) await officeAsync(this.item.internetHeaders, "removeAsync", remove);
      if (wanted.length) await officeAsync(this.item.internetHeaders, "setAsync", set);
      this.written = wanted;
    } catch (e) {
      this.writeError = { code: e.code || "office.failed", message: "", message_en: e.message };
    }
    return this.view();
  }
}
