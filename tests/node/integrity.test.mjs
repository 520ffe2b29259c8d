// Integrity fixtures (tests/corpus/integrity, written by an independent implementation)
// through the wasm module the add-in way: prepare, WebCrypto, verify. `prepare` must be
// byte-identical to the native core's, and the verdict identical to the native
// `integrity.verify`, which runs the same checks with RustCrypto instead of WebCrypto.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { execFileSync } from "node:child_process";
import { ROOT, FIXED_NOW, loadWasm, walk, demailBin } from "./env.mjs";
import { matches } from "./match.mjs";
import { verifyWithWebCrypto } from "./integrity.mjs";

loadWasm();
const corpusDir = join(ROOT, "tests/corpus");
const native = JSON.parse(
  execFileSync(demailBin(), ["parity-dump", join(ROOT, "tests/cases"), corpusDir], { maxBuffer: 256 * 1024 * 1024 }).toString(),
);
const fixtures = walk(join(corpusDir, "integrity"), ".eml");

test("integrity fixtures exist", () => assert.ok(fixtures.length >= 20, `${fixtures.length}`));
for (const eml of fixtures) {
  const rel = relative(corpusDir, eml);
  test(`integrity ${rel}`, async () => {
    const { prepared, verdict } = await verifyWithWebCrypto(native.integrity_policy, readFileSync(eml), FIXED_NOW);
    assert.equal(prepared, native.integrity[rel].prepare, "prepare: wasm and native differ");
    assert.equal(verdict, native.integrity[rel].verify, "verdict: WebCrypto and RustCrypto differ");
    const env = JSON.parse(verdict);
    assert.ok(env.ok, verdict);
    const expected = JSON.parse(readFileSync(eml.replace(/\.eml$/, ".json"), "utf8"));
    assert.deepEqual(matches(expected, env.result), []);
  });
}
