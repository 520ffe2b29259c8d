// @ts-check
// Settings: what IT sets through storage.managed (Thunderbird policies.json,
// 3rdparty.Extensions["demail-addin@open-demail.de"]) merged with what the user may
// change (storage.local). The schema IT writes against is ../managed_schema.json.
//
// - `policy` (the De-Mail rules, core format, docs/policy.md) is IT-only.
// - Every other managed value is a default the user may change, unless its key is
//   listed in `locked` (then the options page shows it read-only).
// - `default_options` are checked against `optionIds`, the core's option ids (the
//   add-in reads them from the core before the settings); without them none is valid.

/** Settings the user may see and (when not locked) change. */
export const USER_DEFAULTS = Object.freeze({
  /** Helper unreachable or not paired when a De-Mail is sent: "block" or "subject-tags". */
  unreachable_helper: "block",
  /** How to find the helper: "auto" (native host, then helper_url), "native", "url". */
  helper_discovery: "auto",
  /** Base URL of the helper when discovery is "url" or the native host is missing. */
  helper_url: "http://127.0.0.1:8741",
  /** Name of the native-messaging host that tells where the helper listens. */
  helper_native_host: "de.demail.helper",
  /** Options ticked in advance for a new De-Mail. */
  default_options: [],
  /** Classify and tag messages that were in a folder before the add-in came (first sync). */
  scan_existing: true,
  /** Show the De-Mail banner above a displayed message. */
  show_banner: true,
  /** Ask once more before a De-Mail leaves. */
  confirm_demail: false,
});

const CHOICES = {
  unreachable_helper: ["block", "subject-tags"],
  helper_discovery: ["auto", "native", "url"],
};

/** Validate one user setting; returns the value or undefined when invalid. */
export function validValue(key, value, optionIds = []) {
  if (!(key in USER_DEFAULTS)) return undefined;
  const def = USER_DEFAULTS[key];
  if (CHOICES[key]) return CHOICES[key].includes(value) ? value : undefined;
  if (key === "default_options") {
    return Array.isArray(value) && value.every((o) => optionIds.includes(o)) ? [...new Set(value)] : undefined;
  }
  if (key === "helper_url") {
    try {
      const u = new URL(value);
      return (u.protocol === "http:" || u.protocol === "https:") &&
        (u.hostname === "127.0.0.1" || u.hostname === "localhost" || u.hostname === "[::1]")
        ? u.origin
        : undefined;
    } catch {
      return undefined;
    }
  }
  if (key === "helper_native_host") return typeof value === "string" && /^[A-Za-z0-9_.]{1,128}$/.test(value) ? value : undefined;
  return typeof value === typeof def ? value : undefined;
}

/**
 * Merge managed (IT) and local (user) settings.
 * @returns {{values, locked: string[], policyText: string, helperToken: string|null, managed: boolean, problems: string[]}}
 */
export function mergeSettings(managed, local, optionIds = []) {
  managed = managed && typeof managed === "object" ? managed : {};
  local = local && typeof local === "object" ? local : {};
  const problems = [];
  const locked = Array.isArray(managed.locked) ? managed.locked.filter((k) => k in USER_DEFAULTS) : [];
  const values = { ...USER_DEFAULTS };
  for (const key of Object.keys(USER_DEFAULTS)) {
    if (key in managed) {
      const v = validValue(key, managed[key], optionIds);
      if (v === undefined) problems.push(`managed:${key}`);
      else values[key] = v;
    }
    if (!locked.includes(key) && key in local) {
      const v = validValue(key, local[key], optionIds);
      if (v !== undefined) values[key] = v;
    }
  }
  let policyText = "";
  if (typeof managed.policy === "string") policyText = managed.policy;
  else if (managed.policy && typeof managed.policy === "object") policyText = JSON.stringify(managed.policy);
  // protocol.md §3: a token provisioned by a logon script (`demail pair provision`).
  const helperToken = typeof managed.token === "string" && managed.token ? managed.token : null;
  return { values, locked, policyText, helperToken, managed: Object.keys(managed).length > 0, problems };
}

/** Read both storage areas through the messenger API (managed may be absent). */
export async function loadSettings(messenger, optionIds = []) {
  let managed = {};
  try {
    managed = await messenger.storage.managed.get(null);
  } catch {
    // No policy deployed: storage.managed throws "Managed storage manifest not found".
  }
  const local = (await messenger.storage.local.get("settings")).settings || {};
  return mergeSettings(managed, local, optionIds);
}

/** Store user changes; locked keys and invalid values are refused. */
export async function saveUserSettings(messenger, merged, changes, optionIds = []) {
  const current = (await messenger.storage.local.get("settings")).settings || {};
  const refused = [];
  for (const [key, value] of Object.entries(changes || {})) {
    if (merged.locked.includes(key)) { refused.push(key); continue; }
    const v = validValue(key, value, optionIds);
    if (v === undefined) { refused.push(key); continue; }
    current[key] = v;
  }
  await messenger.storage.local.set({ settings: current });
  return refused;
}
