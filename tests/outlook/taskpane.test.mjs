// Task pane logic (compose and read) with the real wasm core and the Office stub.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { ROOT, demailBin } from "./env.mjs";
import "./office-stub.js";
import { loadCore } from "../../addin/shared/demail-core.js";
import { ComposeSession } from "../../addin/outlook/src/compose.js";
import { processItem, classifyItem, CATEGORIES } from "../../addin/outlook/src/read.js";
import { language, strings, ALL_STRINGS, optionLabels } from "../../addin/outlook/src/strings.js";

const Office = globalThis.Office;
const policy = JSON.stringify(JSON.parse(execFileSync(demailBin(), ["policy", "check", join(ROOT, "examples/policy.toml")]).toString()).policy);
const core = await loadCore(policy, readFileSync(join(ROOT, "addin/wasm/demail_wasm_bg.wasm")));
const rec = (a) => ({ emailAddress: a, displayName: a, recipientType: "other" });
const RECHT = { emailAddress: "jurist@recht.musterstadt.de", displayName: "Jurist" };
const headers = () => Office.__test.state.headers;

beforeEach(() => Office.__test.load({ from: RECHT, to: [rec("anna@buerger.de-mail.de")] }));

test("ticking options writes exactly the core's TR headers; unticking removes them", async () => {
  const s = new ComposeSession({ core, office: Office });
  await s.load();
  await s.setOption("private", true);
  const pid = headers()["X-de-mail-private-id"];
  assert.match(pid, /^DM-\d{8}-\d{6}-[0-9A-F]{16}$/);
  assert.deepEqual(headers(), { "X-de-mail-private": "yes", "X-de-mail-private-id": pid });
  await s.setOption("confirmation-of-dispatch", true);
  assert.deepEqual(headers(), { "X-de-mail-confirmation-of-dispatch": "yes", "X-de-mail-private": "yes", "X-de-mail-private-id": pid });
  await s.setOption("private", false);
  // The generated Nachrichten-Kennung stays the same for the whole draft.
  assert.deepEqual(headers(), { "X-de-mail-confirmation-of-dispatch": "yes", "X-de-mail-private-id": pid });
  await s.setMarked(false);
  assert.deepEqual(headers(), {});
});

test("Abholbestätigung implies Persönlich (locked, reason from the core)", async () => {
  const s = new ComposeSession({ core, office: Office });
  await s.load();
  const v = await s.setOption("confirmation-of-retrieve", true);
  assert.equal(headers()["X-de-mail-private"], "yes");
  assert.equal(headers()["X-de-mail-confirmation-of-retrieve"], "yes");
  const p = v.options.find((o) => o.id === "private");
  assert.equal(p.checked, true);
  assert.equal(p.locked, true);
  assert.equal(p.reason.code, "options.private_implied");
});

test("options the sender may not use are disabled, with the core's reason", async () => {
  Office.__test.load({ from: { emailAddress: "peter.meier@musterstadt.de" }, to: [rec("anna@buerger.de-mail.de")] });
  const s = new ComposeSession({ core, office: Office });
  const v = await s.load();
  const auth = v.options.find((o) => o.id === "authoritative");
  assert.equal(auth.disabled, true);
  assert.ok(auth.reason.message.length > 0);
  assert.equal(v.options.find((o) => o.id === "private").disabled, false);
});

test("Nachrichten-Kennung: typed value is written; a bad one is refused and nothing changes", async () => {
  const s = new ComposeSession({ core, office: Office });
  await s.load();
  await s.setPrivateId("AZ-2026-0815");
  assert.deepEqual(headers(), { "X-de-mail-private-id": "AZ-2026-0815" });
  const v = await s.setPrivateId("AZ\r\nBcc: x@example.org");
  assert.ok(v.writeError && v.writeError.code.startsWith("private_id."), JSON.stringify(v.writeError));
  assert.deepEqual(headers(), { "X-de-mail-private-id": "AZ-2026-0815" });
});

test("live recipient classification; a De-Mail recipient marks the draft once", async () => {
  Office.__test.load({ from: RECHT, to: [rec("kollegin@musterstadt.de")] });
  const s = new ComposeSession({ core, office: Office });
  let v = await s.load();
  assert.deepEqual(v.check.recipients.map((x) => [x.address, x.kind]), [["kollegin@musterstadt.de", "internal"]]);
  assert.equal(v.marked, false);
  Office.__test.state.to.push(rec("anna@buerger.de-mail.de"), rec("bob@example.org"));
  v = await s.recipientsChanged();
  assert.deepEqual(v.check.recipients.map((x) => x.kind), ["internal", "demail", "external"]);
  assert.equal(v.marked, true);
  assert.equal(v.check.verdict, "blocked");
  assert.ok(v.check.reasons.some((x) => x.code === "mixed.rejected" && /^Diese Nachricht hat De-Mail-Empfänger/.test(x.message)));
  assert.ok("X-de-mail-private-id" in headers());
  // The user switched De-Mail off on purpose: more recipient changes do not switch it on again.
  await s.setMarked(false);
  v = await s.recipientsChanged();
  assert.equal(v.marked, false);
  assert.deepEqual(headers(), {});
});

test("a draft that already carries De-Mail headers opens with them", async () => {
  Office.__test.load({ from: RECHT, to: [rec("anna@buerger.de-mail.de")], headers: { "x-de-mail-authoritative": "yes", "X-de-mail-private-id": "AZ-9" } });
  const s = new ComposeSession({ core, office: Office });
  const v = await s.load();
  assert.equal(v.marked, true);
  assert.equal(v.privateId, "AZ-9");
  assert.deepEqual(v.options.filter((o) => o.checked).map((o) => o.id), ["authoritative"]);
  assert.deepEqual(v.written.map((h) => h.name).sort(), ["X-de-mail-authoritative", "X-de-mail-private-id"]);
  // The first change rewrites them in TR spelling.
  await s.setPrivateId("AZ-10");
  assert.deepEqual(headers(), { "X-de-mail-authoritative": "yes", "X-de-mail-private-id": "AZ-10" });
});

test("a failing Office write is reported, not swallowed", async () => {
  Office.__test.load({ from: RECHT, to: [rec("anna@buerger.de-mail.de")], failures: { "internetHeaders.setAsync": "GenericResponseError" } });
  const s = new ComposeSession({ core, office: Office });
  await s.load();
  const v = await s.setOption("private", true);
  assert.equal(v.writeError.code, "GenericResponseError");
});

// --- read mode ----------------------------------------------------------------------

function headerBlock(eml) {
  const text = readFileSync(eml, "utf8");
  const m = /\r?\n\r?\n/.exec(text);
  return m ? text.slice(0, m.index) : text;
}

test("read: a De-Mail gets the category, created once in the master list in a fixed colour", async () => {
  const eml = join(ROOT, "tests/corpus/demail/03-bescheid-alle-optionen-anhang.eml");
  Office.__test.load({ mode: "read", allHeaders: headerBlock(eml) });
  const res = await processItem(core, Office);
  assert.equal(res.classification.kind, "demail");
  assert.equal(res.category, "applied");
  assert.deepEqual(Office.__test.state.masterCategories, [{ displayName: "De-Mail", color: "Preset9" }]);
  assert.deepEqual(Office.__test.state.categories, ["De-Mail"]);
  assert.equal(res.integrity, null, "no getAsFileAsync offered: nothing checked, nothing claimed");
  // Second message: the master entry exists, no duplicate is attempted.
  Office.__test.state.categories = [];
  const again = await processItem(core, Office);
  assert.equal(again.category, "applied");
  assert.equal(Office.__test.state.masterCategories.length, 1);
  assert.equal(Office.__test.log.filter((l) => l.api === "masterCategories.addAsync").length, 1);
});

test("read: each kind has its own category, named as the gateway's Keywords field names it", async () => {
  const kinds = [
    ["receipt/01-versand-stern.eml", "receipt", "De-Mail-Bestätigung", "Preset5"],
    ["notification/01-unbekannter-empfaenger.eml", "notification", "De-Mail-Meldung", "Preset2"],
  ];
  for (const [rel, kind, name, color] of kinds) {
    Office.__test.load({ mode: "read", allHeaders: headerBlock(join(ROOT, "tests/corpus", rel)) });
    const res = await processItem(core, Office);
    assert.equal(res.classification.kind, kind, rel);
    assert.deepEqual(Office.__test.state.categories, [name], rel);
    assert.deepEqual(Office.__test.state.masterCategories, [{ displayName: name, color }], rel);
    assert.equal(CATEGORIES[kind].name, name);
  }
  // The same words the gateway writes for Exchange (gateway/src/border.rs `keywords`).
  const border = readFileSync(join(ROOT, "gateway/src/border.rs"), "utf8");
  for (const c of Object.values(CATEGORIES)) assert.ok(border.includes(`"${c.name}"`), c.name);
});

test("read: an ordinary e-mail gets no category", async () => {
  Office.__test.load({ mode: "read", allHeaders: headerBlock(join(ROOT, "tests/corpus/email/01-webshop-versandbestaetigung.eml")) });
  const res = await processItem(core, Office);
  assert.equal(res.classification.kind, "email");
  assert.equal(res.category, "not-demail");
  assert.deepEqual(Office.__test.state.categories, []);
  assert.deepEqual(Office.__test.state.masterCategories, []);
});

test("read: headers alone classify the corpus like the full message (kind, options, auth level)", async () => {
  const dir = join(ROOT, "tests/corpus");
  const failures = [];
  let n = 0;
  // integrity/: their JSON is the integrity verdict, not a classification.
  for (const sub of readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory() && d.name !== "integrity")) {
    for (const f of readdirSync(join(dir, sub.name)).filter((x) => x.endsWith(".eml"))) {
      const eml = join(dir, sub.name, f);
      const expected = JSON.parse(readFileSync(eml.replace(/\.eml$/, ".json"), "utf8"));
      Office.__test.load({ mode: "read", allHeaders: headerBlock(eml) });
      const c = await classifyItem(core, Office.context.mailbox.item);
      n++;
      if (c.kind !== expected.kind) failures.push(`${sub.name}/${f}: ${c.kind} ≠ ${expected.kind}`);
      if (c.kind === expected.kind && expected.auth_level !== undefined && c.auth_level !== expected.auth_level) failures.push(`${sub.name}/${f}: auth ${c.auth_level}`);
    }
  }
  assert.ok(n > 20);
  assert.deepEqual(failures, []);
});

test("strings: German default, English for other display languages; both complete", () => {
  assert.equal(language("de-DE"), "de");
  assert.equal(language("de-AT"), "de");
  assert.equal(language(undefined), "de");
  assert.equal(language("en-US"), "en");
  assert.equal(language("fr-FR"), "en");
  assert.deepEqual(Object.keys(ALL_STRINGS.de).sort(), Object.keys(ALL_STRINGS.en).sort());
  // Labels come from the core; the hints are ours, one per core option and no other.
  const table = core.optionList();
  const de = optionLabels(table, "de");
  const en = optionLabels(table, "en");
  for (const { id } of table) assert.ok(de.get(id) && en.get(id) && strings("de")[`optHint.${id}`] && strings("en")[`optHint.${id}`], id);
  assert.equal(de.get("private"), "Persönlich");
  assert.equal(en.get("private"), "Personal");
  const hints = Object.keys(ALL_STRINGS.de).filter((k) => k.startsWith("optHint.")).map((k) => k.slice(8));
  assert.deepEqual(hints, table.map((o) => o.id));
});
