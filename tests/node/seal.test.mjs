// The add-in's way to check a gateway seal: the wasm build has no Ed25519 verifier (size),
// so `seal.canonical` gives the signed text and WebCrypto verifies it. Run over the seal
// fixtures (tests/seal), it must reach the same verdict as the native `seal.verify`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, basename } from "node:path";
import { webcrypto } from "node:crypto";
import { call } from "../../addin/wasm/demail_wasm.js";
import { ROOT, FIXED_NOW, FIXED_ENTROPY, loadWasm, walk } from "./env.mjs";

loadWasm();
const dir = join(ROOT, "tests/seal");
const toml = readFileSync(join(dir, "policy.toml"), "utf8");
const keys = JSON.parse(toml.match(/public_keys = (\[.*\])/)[1]);
const policy = JSON.stringify({ seal: { public_keys: keys, required: true } });

async function verify(raw) {
  const env = JSON.parse(call("seal.canonical", policy, JSON.stringify(raw), FIXED_NOW, FIXED_ENTROPY));
  assert.ok(env.ok, JSON.stringify(env));
  const r = env.result;
  if (!r.seal) return { sealed: false, code: r.code };
  if (!r.public_key) return { sealed: false, code: "seal.unknown_key" };
  const key = await webcrypto.subtle.importKey(
    "raw", Buffer.from(r.public_key.split(":")[1], "base64"), { name: "Ed25519" }, false, ["verify"]);
  const ok = await webcrypto.subtle.verify(
    { name: "Ed25519" }, key, Buffer.from(r.seal.s, "base64"), new TextEncoder().encode(r.canonical));
  return { sealed: ok, code: ok ? "seal.valid" : "seal.bad_signature" };
}

const fixtures = walk(dir, ".eml");
test("seal fixtures exist", () => assert.ok(fixtures.length >= 10));
for (const eml of fixtures) {
  test(`seal ${basename(eml)}`, async () => {
    const expected = JSON.parse(readFileSync(eml.replace(/\.eml$/, ".json"), "utf8"));
    const got = await verify(readFileSync(eml, "utf8"));
    assert.equal(got.sealed, expected.sealed, JSON.stringify(got));
    assert.equal(got.code, expected.code);
  });
}
