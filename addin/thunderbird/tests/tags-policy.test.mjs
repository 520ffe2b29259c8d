// The De-Mail tags as IT's enterprise policy defines them for Thunderbird without the
// add-in (Preferences in installer/linux/desktop/files/policies.json; the MSI writes the
// same entries): the same keys, German names and colours as the add-in's, and the add-in
// leaves policy-defined tags alone. No wasm needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { TAGS } from "../lib/constants.js";
import { ensureTags } from "../lib/receive.js";

const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "../../..");
const prefs = JSON.parse(readFileSync(join(ROOT, "installer/linux/desktop/files/policies.json"), "utf8")).policies.Preferences;
const de = JSON.parse(readFileSync(join(ROOT, "addin/thunderbird/_locales/de/messages.json"), "utf8"));

/** The tags the policy defines, as messenger.messages.tags.list() would list them. */
function policyTags() {
  const out = new Map();
  for (const [name, { Value, Status }] of Object.entries(prefs)) {
    const m = /^mailnews\.tags\.(.+)\.(tag|color|ordinal)$/.exec(name);
    if (!m) continue;
    // Default branch: a caseworker may still recolour a tag.
    assert.equal(Status, "default", name);
    out.set(m[1], { ...out.get(m[1]), key: m[1], [m[2]]: Value });
  }
  return [...out.values()];
}

test("policy tags: the add-in's keys, German names and colours", () => {
  const want = Object.values(TAGS).map((t) => ({ key: t.key, tag: de[t.labelKey].message, color: t.color }));
  const got = policyTags().map(({ key, tag, color }) => ({ key, tag, color }));
  assert.deepEqual(got.sort((a, b) => a.key.localeCompare(b.key)), want.sort((a, b) => a.key.localeCompare(b.key)));
  assert.deepEqual(want.map((t) => t.tag).sort(), ["De-Mail", "De-Mail-Bestätigung", "De-Mail-Meldung", "De-Mail-Warnung"]);
});

test("policy tags: the warning sorts first, so its colour wins on a row with two tags", () => {
  const order = policyTags().sort((a, b) => (a.ordinal < b.ordinal ? -1 : 1)).map((t) => t.key);
  assert.equal(order[0], TAGS.warning.key);
  // Thunderbird compares ordinals as strings; ours sort before its own $label1…5.
  for (const t of policyTags()) assert.ok(t.ordinal < "$label1", t.ordinal);
  // Table view: only there is the whole row in the tag colour.
  assert.deepEqual(prefs["mail.threadpane.listview"], { Value: 1, Status: "default" });
});

test("the add-in creates no tag the policy already defines", async () => {
  const created = [];
  const messenger = { messages: { tags: { list: async () => policyTags(), create: async (...a) => created.push(a) } } };
  await ensureTags(messenger, (k) => de[k].message);
  assert.deepEqual(created, []);
  // Without the policy it creates all four itself, with the same names and colours.
  const fresh = { messages: { tags: { list: async () => [], create: async (...a) => created.push(a) } } };
  await ensureTags(fresh, (k) => de[k].message);
  assert.deepEqual(created, Object.values(TAGS).map((t) => [t.key, de[t.labelKey].message, t.color]));
});

test("the policies.json snippet in docs/deployment.md is the shipped one", () => {
  const doc = readFileSync(join(ROOT, "docs/deployment.md"), "utf8");
  const block = [...doc.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]).find((b) => b.includes("mailnews.tags.$demail.tag"));
  assert.ok(block, "snippet missing");
  assert.deepEqual(JSON.parse(block).policies.Preferences, prefs);
});
