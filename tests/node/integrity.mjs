// The add-in's way to check X-de-mail-integrity: the wasm core has no RSA/ECDSA code
// (size), so `integrity_prepare_raw` does everything else and lists the public-key checks,
// WebCrypto runs them, and `integrity_verify_raw` decides on their results (docs/core-api.md).
import { integrity_prepare_raw, integrity_verify_raw } from "../../addin/wasm/demail_wasm.js";
// The add-ins' own WebCrypto step (one implementation for both add-ins and these tests).
import { runCheck } from "../../addin/shared/demail-core.js";

/** prepare → WebCrypto → verify; returns both envelopes as the module wrote them. */
export async function verifyWithWebCrypto(policy, raw, nowMillis) {
  const prepared = integrity_prepare_raw(policy, raw, nowMillis);
  const env = JSON.parse(prepared);
  if (!env.ok) return { prepared, verdict: prepared };
  const results = await Promise.all(env.result.checks.map(runCheck));
  const verdict = integrity_verify_raw(policy, raw, nowMillis, Uint8Array.from(results, (r) => (r ? 1 : 0)));
  return { prepared, verdict, results };
}
