// The same case tables and corpus, run through the built wasm package: results must
// match the expectations AND be byte-identical to the native core (via the CLI).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, relative, basename } from "node:path";
import { execFileSync } from "node:child_process";
import { call, classify_raw } from "../../addin/wasm/demail_wasm.js";
import { ROOT, FIXED_NOW, FIXED_ENTROPY, loadWasm, walk, demailBin } from "./env.mjs";
import { matches } from "./match.mjs";

loadWasm();
const casesDir = join(ROOT, "tests/cases");
const corpusDir = join(ROOT, "tests/corpus");
const native = JSON.parse(
  execFileSync(demailBin(), ["parity-dump", casesDir, corpusDir], { maxBuffer: 256 * 1024 * 1024 }).toString(),
);

let total = 0;
for (const file of walk(casesDir, ".json")) {
  const doc = JSON.parse(readFileSync(file, "utf8"));
  const name = basename(file);
  test(`cases ${name}`, () => {
    assert.ok(doc.cases.length > 0, "case file without cases");
    const failures = [];
    doc.cases.forEach((c, i) => {
      // The module checks integrity through its byte exports, not `call`: integrity.test.mjs
      // holds those to the native ops (the same bytes for every fixture).
      if (c.op.startsWith("integrity.")) return;
      const out = call(c.op, native.policies[name] ?? "", JSON.stringify(c.input), FIXED_NOW, FIXED_ENTROPY);
      total++;
      if (out !== native.cases[name][i]) {
        failures.push(`${c.name}: wasm and native differ\n  wasm:   ${out}\n  native: ${native.cases[name][i]}`);
      }
      const env = JSON.parse(out);
      if (c.error) {
        if (env.ok || env.error.code !== c.error) failures.push(`${c.name}: expected error ${c.error}, got ${out}`);
      } else if (!env.ok) {
        failures.push(`${c.name}: unexpected error ${out}`);
      } else {
        const diffs = matches(c.expect ?? {}, env.result);
        if (diffs.length) failures.push(`${c.name}: ${diffs.join("; ")}`);
      }
    });
    assert.deepEqual(failures, []);
  });
}

test("corpus: wasm classification equals native and the expected JSON", () => {
  const policy = native.corpus_policy;
  const emls = walk(corpusDir, ".eml");
  assert.ok(emls.length > 0, "empty corpus");
  const failures = [];
  for (const eml of emls) {
    const rel = relative(corpusDir, eml);
    const out = classify_raw(policy, readFileSync(eml));
    if (out !== native.corpus[rel]) failures.push(`${rel}: wasm and native differ`);
    // integrity/: their JSON is the integrity verdict (integrity.test.mjs).
    if (rel.startsWith("integrity/")) continue;
    const env = JSON.parse(out);
    const expected = JSON.parse(readFileSync(eml.replace(/\.eml$/, ".json"), "utf8"));
    const diffs = env.ok ? matches(expected, env.result) : [`error ${out}`];
    if (diffs.length) failures.push(`${rel}: ${diffs.join("; ")}`);
  }
  assert.deepEqual(failures, []);
});

test("ran a meaningful number of cases", () => {
  assert.ok(total >= 100, `only ${total} cases ran`);
});
