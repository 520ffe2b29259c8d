// @ts-check
// Compose-side logic: turn a compose window's state into the core's send-check input,
// and the core's answer into what the button, the popup and the send guard show.
// Every De-Mail decision comes from the core (`check`, `subject.parse`,
// `subject.format`, `headers`); this module only gathers input and presents output.
// Option ids and their order come from the core too (`core.optionList()`).

/** A Thunderbird mailing-list pill ("Liste <Liste>": no @ inside the brackets). */
export function isListReference(entry) {
  return typeof entry === "string" && /^[^<]*<[^<>@]+>\s*$/.test(entry.trim());
}

/** ComposeRecipientList → array of strings (contact objects are kept as markers). */
export function recipientStrings(list) {
  if (list === undefined || list === null || list === "") return [];
  const arr = Array.isArray(list) ? list : [list];
  return arr.map((r) => (typeof r === "string" ? r : { unresolved: r }));
}

/**
 * Resolve mailing lists and contact references to address strings.
 * `resolver(entry)` returns an array of "Name <addr>" strings or null.
 */
export async function resolveRecipients(list, resolver) {
  const out = [];
  for (const entry of recipientStrings(list)) {
    if (typeof entry === "string" && !isListReference(entry)) {
      if (entry.trim()) out.push(entry);
      continue;
    }
    const resolved = resolver ? await resolver(entry) : null;
    if (resolved && resolved.length) out.push(...resolved);
    else out.push(typeof entry === "string" ? entry : String(entry.unresolved?.nodeId ?? entry.unresolved?.id ?? "?"));
  }
  return out;
}

/** The sender's address from compose details ("Name <addr>" or addr). */
export function senderOf(details) {
  const f = details?.from;
  return typeof f === "string" ? f : "";
}

/**
 * Everything the core needs for the send check.
 * @param {object} p
 * @param {string} p.from the sender address
 * @param {{to:string[],cc:string[],bcc:string[]}} p.recipients resolved lists
 * @param {object} p.state the add-in's per-compose state {options, marked, privateId}
 * @param {object|null} p.subject the core's subject.parse result
 * @param {string[]} p.optionIds the core's option ids in UI order
 * @param {number} [p.size] estimated wire size in bytes
 * @param {boolean} [p.forwardedDemail] a forward of a received De-Mail
 */
export function checkInput({ from, recipients, state, subject, size, forwardedDemail, optionIds }) {
  const chosen = new Set(state?.options || []);
  for (const o of subject?.options || []) chosen.add(o);
  const input = {
    from: from || "",
    to: recipients.to || [],
    cc: recipients.cc || [],
    bcc: recipients.bcc || [],
    options: optionIds.filter((o) => chosen.has(o)),
    marked: Boolean(state?.marked || subject?.demail),
    forwarded_demail: Boolean(forwardedDemail),
  };
  if (typeof size === "number" && size >= 0) input.size = Math.round(size);
  const pid = state?.privateId;
  if (typeof pid === "string" && pid.trim() !== "") input.private_id = pid;
  return input;
}

function unwrap(res) {
  if (!res || !res.ok) {
    const e = res?.error || {};
    throw Object.assign(new Error(e.message_en || "core error"), {
      reason: { code: e.code || "internal", message: e.message || "", message_en: e.message_en || "", severity: "block" },
    });
  }
  return res.result;
}

/**
 * The popup's option states (allowed, implied and locked, disabled with the reason),
 * straight from the core's `options` operation: the same rules the send check applies.
 */
export function optionStates(core, input) {
  const r = unwrap(core.call("options", { from: input.from, options: input.options }));
  const locked = new Map((r.locked || []).map((x) => [x.option, x.reason]));
  const disabled = new Map((r.disabled || []).map((x) => [x.option, x.reason]));
  return optionIdsOf(core).map((id) => ({
    id,
    checked: (r.options || []).includes(id),
    disabled: disabled.has(id),
    locked: locked.has(id),
    reason: disabled.get(id) || locked.get(id) || null,
  }));
}

function optionIdsOf(core) {
  return core.optionList().map((o) => o.id);
}

/** Recipients grouped for display: De-Mail / intern / extern. */
export function groups(result) {
  const g = { demail: [], internal: [], external: [] };
  for (const r of result.recipients) (g[r.kind] || (g[r.kind] = [])).push(r);
  return g;
}

/** One-click fixes the popup and the block dialog offer for this result. */
export function fixesFor(result) {
  const codes = new Set(result.reasons.filter((r) => r.severity === "block" || r.severity === "confirm").map((r) => r.code));
  const fixes = [];
  const mixed = ["mixed.rejected", "mixed.external", "mixed.confirm"].some((c) => codes.has(c));
  if (mixed) {
    fixes.push(codes.has("mixed.external") ? "remove-external" : "remove-email");
    fixes.push("remove-demail");
  }
  if (codes.has("options.no_demail_recipient")) fixes.push("clear-options");
  if (codes.has("demail.no_demail_recipient")) fixes.push("unmark");
  return fixes;
}

/** The "Name <addr>" form of a recipient from the core's check result. */
export function formatRecipient(r) {
  if (!r.name) return r.address;
  const needsQuotes = /[()<>\[\]:;@\\,."]/.test(r.name);
  const name = needsQuotes ? `"${r.name.replace(/["\\]/g, "\\$&")}"` : r.name;
  return `${name} <${r.address}>`;
}

/** New to/cc/bcc lists after a fix; null when the fix does not change recipients. */
export function recipientsAfterFix(result, fix) {
  const drop = {
    "remove-email": (r) => r.kind !== "demail",
    "remove-external": (r) => r.kind === "external",
    "remove-demail": (r) => r.kind === "demail",
  }[fix];
  if (!drop) return null;
  const out = { to: [], cc: [], bcc: [] };
  for (const r of result.recipients) if (!drop(r)) out[r.field].push(formatRecipient(r));
  return out;
}

/** The button's mode: "none" (plain e-mail), "demail" or "conflict". */
export function modeOf(result, input) {
  if (result.verdict === "demail") return "demail";
  if (result.verdict === "email") return "none";
  // blocked or confirm: something needs the user's attention before sending.
  return "conflict";
}

/**
 * Evaluate a compose window: the core's subject parse and send check, plus what the
 * UI needs. Never throws for core errors: they come back as a blocking reason.
 */
export function evaluate(core, { from, recipients, state, subjectText, size, forwardedDemail, withOptionStates = true }) {
  let subject = null;
  const extra = [];
  try {
    subject = unwrap(core.parseSubject(subjectText || ""));
    for (const e of subject.errors || []) extra.push({ ...e, severity: "block" });
  } catch (e) {
    extra.push(e.reason);
  }
  const input = checkInput({ from, recipients, state, subject, size, forwardedDemail, optionIds: optionIdsOf(core) });
  let result;
  try {
    result = unwrap(core.check(input));
  } catch (e) {
    result = {
      verdict: "blocked", reasons: [e.reason], demail_recipients: [], email_recipients: [],
      internal_recipients: [], external_recipients: [], recipients: [], options: [],
    };
  }
  if (extra.length) {
    result = { ...result, reasons: [...result.reasons, ...extra] };
    if (extra.some((r) => r.severity === "block")) result.verdict = "blocked";
  }
  const out = {
    input,
    subject,
    result,
    mode: modeOf(result, input),
    groups: groups(result),
    fixes: fixesFor(result),
    blocking: result.reasons.filter((r) => r.severity === "block"),
    confirming: result.reasons.filter((r) => r.severity === "confirm"),
    info: result.reasons.filter((r) => r.severity !== "block" && r.severity !== "confirm"),
  };
  if (withOptionStates) {
    try {
      out.options = optionStates(core, input);
    } catch (e) {
      out.options = optionIdsOf(core).map((id) => ({ id, checked: input.options.includes(id), disabled: false, locked: false, reason: null }));
    }
  }
  return out;
}

/**
 * The send decision for onBeforeSend.
 * @returns {{action: "send"|"block"|"confirm"|"demail", evaluation}}
 *   "send": ordinary e-mail, untouched. "demail": an allowed De-Mail (the caller hands it
 *   to the helper or applies the unreachable-helper policy). "confirm": ask the user first.
 */
export function decide(evaluation) {
  const v = evaluation.result.verdict;
  if (v === "blocked") return { action: "block", evaluation };
  if (v === "confirm") return { action: "confirm", evaluation };
  if (v === "demail") return { action: "demail", evaluation };
  return { action: "send", evaluation };
}

/**
 * Subject for the subject-tag fallback (`[P, VB] Betreff`), written by the core from the
 * subject without any tags the user typed and the effective options.
 */
export function fallbackSubject(core, evaluation) {
  const base = evaluation.subject ? evaluation.subject.subject : "";
  return unwrap(core.formatSubject(base, evaluation.result.options)).subject;
}

/** Rough wire size of a message: body text plus base64-encoded attachments. */
export function estimateSize(details, attachments) {
  const enc = new TextEncoder();
  let n = 2048; // headers
  if (details?.body) n += enc.encode(details.body).length;
  if (details?.plainTextBody) n += enc.encode(details.plainTextBody).length;
  for (const a of attachments || []) n += Math.ceil(((a.size || 0) * 4) / 3) + 256;
  return n;
}
