// The package: manifest, locales, managed-storage schema, settings merge, and that no
// page uses a locale key that does not exist.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { ADDIN, loadCore } from "./support.mjs";
import { mergeSettings, USER_DEFAULTS, validValue } from "../lib/settings.js";

// The option ids as the add-in gets them: from the core.
const OPTION_IDS = (await loadCore("")).optionList().map((o) => o.id);

const json = (p) => JSON.parse(readFileSync(join(ADDIN, p), "utf8"));

function walk(dir, out = []) {
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) { if (n !== "tests") walk(p, out); } else out.push(p);
  }
  return out;
}

test("manifest: MV3, wasm allowed by CSP, pinned id, ESR 153, German default locale", () => {
  const m = json("manifest.json");
  assert.equal(m.manifest_version, 3);
  assert.equal(m.content_security_policy.extension_pages, "script-src 'self' 'wasm-unsafe-eval'");
  assert.equal(m.browser_specific_settings.gecko.id, "demail-addin@open-demail.de");
  assert.equal(m.browser_specific_settings.gecko.strict_min_version, "153.0");
  assert.equal(m.default_locale, "de");
  assert.equal(m.background.type, "module");
  for (const p of ["messagesTags", "messagesUpdate", "compose", "storage", "messagesRead"]) assert.ok(m.permissions.includes(p), p);
});

test("locales: German and English define the same keys; every key used exists", () => {
  const de = json("_locales/de/messages.json");
  const en = json("_locales/en/messages.json");
  assert.deepEqual(Object.keys(de).sort(), Object.keys(en).sort());
  const used = new Set();
  for (const f of walk(ADDIN)) {
    if (!/\.(js|html|json)$/.test(f) || f.includes("_locales")) continue;
    const s = readFileSync(f, "utf8");
    for (const m of s.matchAll(/data-i18n(?:-aria|-placeholder)?="([A-Za-z_]+)"/g)) used.add(m[1]);
    for (const m of s.matchAll(/\b(?:i18n|t)\("([A-Za-z_]+)"/g)) used.add(m[1]);
    for (const m of s.matchAll(/__MSG_([A-Za-z_]+)__/g)) used.add(m[1]);
  }
  const missing = [...used].filter((k) => !(k in de));
  assert.deepEqual(missing, []);
});

test("managed schema covers exactly the user settings plus policy, locked, token", () => {
  const s = json("managed_schema.json");
  const keys = Object.keys(s.properties).sort();
  assert.deepEqual(keys, [...Object.keys(USER_DEFAULTS), "policy", "locked", "token"].sort());
  assert.deepEqual(s.properties.locked.items.enum.sort(), Object.keys(USER_DEFAULTS).sort());
  assert.deepEqual(s.properties.default_options.items.enum, OPTION_IDS);
});

test("settings merge: managed defaults, user overrides, locks, invalid values ignored", () => {
  const m = mergeSettings(
    { policy: { version: 1 }, unreachable_helper: "subject-tags", show_banner: "yes", locked: ["unreachable_helper", "bogus"] },
    { unreachable_helper: "block", scan_existing: false, helper_url: "http://evil.example:80" },
  );
  assert.equal(m.values.unreachable_helper, "subject-tags");
  assert.equal(m.values.scan_existing, false);
  assert.equal(m.values.show_banner, true);
  assert.equal(m.values.helper_url, USER_DEFAULTS.helper_url);
  assert.deepEqual(m.locked, ["unreachable_helper"]);
  assert.deepEqual(m.problems, ["managed:show_banner"]);
  assert.equal(m.policyText, '{"version":1}');
  assert.equal(validValue("helper_url", "http://localhost:9000/x"), "http://localhost:9000");
  assert.equal(validValue("default_options", ["private", "nope"]), undefined);
});

test("default_options are checked against the core's option ids", () => {
  assert.deepEqual(validValue("default_options", ["confirmation-of-retrieve", "private"], OPTION_IDS), ["confirmation-of-retrieve", "private"]);
  assert.equal(validValue("default_options", ["private", "nope"], OPTION_IDS), undefined);
  const m = mergeSettings({ default_options: ["authoritative"] }, { default_options: ["private", "nope"] }, OPTION_IDS);
  assert.deepEqual(m.values.default_options, ["authoritative"]);
});
