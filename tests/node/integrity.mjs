// The add-in's way to check X-de-mail-integrity: the wasm core has no RSA/ECDSA code
// (size), so `integrity_prepare_raw` does everything else and lists the public-key checks,
// WebCrypto runs them, and `integrity_verify_raw` decides on their results (docs/core-api.md).
import { webcrypto } from "node:crypto";
import { integrity_prepare_raw, integrity_verify_raw } from "../../addin/wasm/demail_wasm.js";

const { subtle } = webcrypto;
const bytes = (b64) => Buffer.from(b64, "base64");

/** One check of `integrity.prepare` with WebCrypto; a key or signature it cannot read fails. */
export async function runCheck(c) {
  const ecdsa = c.algorithm === "ECDSA";
  try {
    const key = await subtle.importKey(
      "spki", bytes(c.spki), ecdsa ? { name: "ECDSA", namedCurve: c.named_curve } : { name: c.algorithm, hash: c.hash },
      false, ["verify"]);
    const params = ecdsa ? { name: "ECDSA", hash: c.hash }
      : c.algorithm === "RSA-PSS" ? { name: "RSA-PSS", saltLength: c.salt_length } : { name: c.algorithm };
    return await subtle.verify(params, key, bytes(c.signature), bytes(c.data));
  } catch {
    return false;
  }
}

/** prepare → WebCrypto → verify; returns both envelopes as the module wrote them. */
export async function verifyWithWebCrypto(policy, raw, nowMillis) {
  const prepared = integrity_prepare_raw(policy, raw, nowMillis);
  const env = JSON.parse(prepared);
  if (!env.ok) return { prepared, verdict: prepared };
  const results = await Promise.all(env.result.checks.map(runCheck));
  const verdict = integrity_verify_raw(policy, raw, nowMillis, Uint8Array.from(results, (r) => (r ? 1 : 0)));
  return { prepared, verdict, results };
}
