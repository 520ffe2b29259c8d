// One home for the option list: the core's `version` op. The add-ins read ids, order and
// labels from it at start. What must stay a static copy (managed_schema.json: Thunderbird
// reads it without running our code) and the few id-keyed lists left in the add-ins' JS
// must agree with the core; any other list of option ids in the add-ins fails here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { ROOT, walk } from "./env.mjs";
import { loadCore } from "../../addin/shared/demail-core.js";
import { RECEIPT_FOR_OPTION } from "../../addin/thunderbird/lib/constants.js";
import { ALL_STRINGS } from "../../addin/outlook/src/strings.js";

const core = await loadCore("", readFileSync(join(ROOT, "addin/wasm/demail_wasm_bg.wasm")));
const table = core.optionList();
const ids = table.map((o) => o.id);

test("the core's version op: five options in UI order with header and both labels", () => {
  assert.deepEqual(table.map((o) => o.label), ["Persönlich", "Versandbestätigung", "Eingangsbestätigung", "Abholbestätigung", "Absenderbestätigt"]);
  for (const o of table) {
    assert.equal(o.header.toLowerCase(), `x-de-mail-${o.id}`);
    assert.ok(o.label_en && o.label_en !== o.label, o.id);
  }
  assert.deepEqual(core.call("version").result.options, table);
});

test("Thunderbird managed_schema.json: default_options enum is the core's id list", () => {
  const schema = JSON.parse(readFileSync(join(ROOT, "addin/thunderbird/managed_schema.json"), "utf8"));
  assert.deepEqual(schema.properties.default_options.items.enum, ids);
});

test("Thunderbird RECEIPT_FOR_OPTION: core options, in the core's order (the timeline's)", () => {
  const keys = Object.keys(RECEIPT_FOR_OPTION);
  assert.deepEqual(keys, ids.filter((id) => keys.includes(id)));
});

test("Outlook strings: one hint per core option in both languages, none for other ids", () => {
  for (const lang of ["de", "en"]) {
    const hints = Object.keys(ALL_STRINGS[lang]).filter((k) => k.startsWith("optHint.")).map((k) => k.slice("optHint.".length));
    assert.deepEqual(hints, ids, lang);
    for (const id of ids) assert.ok(ALL_STRINGS[lang][`optHint.${id}`].trim(), `${lang} optHint.${id}`);
  }
});

test("no other copy of the option list in the add-ins", () => {
  // Option ids as they appear in source: a quoted string, or a key suffix like optHint.<id>.
  const re = new RegExp(`(?<=["'\`.])(${ids.map((i) => i.replace(/[-.]/g, "\\$&")).join("|")})(?=["'\`])`, "g");
  const once = Object.fromEntries(ids.map((id) => [id, 1]));
  // Where ids may appear, and how often: exactly the lists the tests above compare.
  const allowed = {
    "addin/thunderbird/managed_schema.json": once,
    "addin/thunderbird/lib/constants.js": Object.fromEntries(Object.keys(RECEIPT_FOR_OPTION).map((id) => [id, 1])),
    "addin/outlook/src/strings.js": Object.fromEntries(ids.map((id) => [id, 2])),
  };
  const files = ["js", "mjs", "json", "html"].flatMap((ext) => walk(join(ROOT, "addin"), `.${ext}`));
  const problems = [];
  for (const file of files) {
    const rel = relative(ROOT, file);
    // Tests name options as expected values; the build output is the core itself.
    if (rel.startsWith("addin/wasm/") || rel.includes("/tests/") || rel.includes("node_modules")) continue;
    const found = {};
    for (const m of readFileSync(file, "utf8").matchAll(re)) found[m[1]] = (found[m[1]] || 0) + 1;
    if (allowed[rel]) {
      if (JSON.stringify(Object.entries(found).sort()) !== JSON.stringify(Object.entries(allowed[rel]).sort())) {
        problems.push(`${rel}: option ids ${JSON.stringify(found)}, expected ${JSON.stringify(allowed[rel])}`);
      }
    } else if (Object.keys(found).length > 1) {
      // One id is a rule about that option (e.g. Persönlich carried over to a reply); more is a list.
      problems.push(`${rel}: a list of option ids (${Object.keys(found).join(", ")}); read it from the core (core.optionList() / the version op)`);
    }
  }
  assert.deepEqual(problems, []);
});
