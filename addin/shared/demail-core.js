// Thin wrapper over the wasm core for the add-ins: JSON in, JSON out.
// It adds only what the core may not do itself: clock, entropy, and turning a
// wasm trap into the stable error code "internal".
import init, {
  initSync,
  call as wasmCall,
  classify_raw as wasmClassifyRaw,
  integrity_prepare_raw as wasmIntegrityPrepare,
  integrity_verify_raw as wasmIntegrityVerify,
  version as wasmVersion,
} from "../wasm/demail_wasm.js";

const INTERNAL = {
  code: "internal",
  message: "Interner Fehler im De-Mail-Modul. Bitte wenden Sie sich an Ihre IT.",
  message_en: "Internal error in the De-Mail module. Please contact your IT department.",
};

function guard(fn) {
  try {
    return JSON.parse(fn());
  } catch (e) {
    return { ok: false, error: { ...INTERNAL, detail: String(e && e.message || e) } };
  }
}

// The option table does not depend on the policy: read once per page, shared by every DemailCore.
let optionTable = null;

export class DemailCore {
  /** @param {string} policy TOML or JSON policy text; "" means built-in defaults. */
  constructor(policy = "") {
    this.policy = policy;
  }
  /** Run an operation; returns {ok, result} or {ok:false, error:{code,message,message_en}}. */
  call(op, input = null) {
    const entropy = globalThis.crypto.getRandomValues(new Uint8Array(16));
    return guard(() => wasmCall(op, this.policy, JSON.stringify(input), Date.now(), entropy));
  }
  /** Classify raw message bytes (Uint8Array) or text. */
  classifyRaw(raw) {
    const bytes = typeof raw === "string" ? new TextEncoder().encode(raw) : raw;
    return guard(() => wasmClassifyRaw(this.policy, bytes));
  }
  /**
   * The five options in UI order, [{id, header, label, label_en}], from the `version` op:
   * the add-ins' only option list (ids, order, labels). Throws, with the core's reason,
   * if the core fails.
   */
  optionList() {
    if (!optionTable) {
      const r = this.call("version");
      if (!r.ok) throw Object.assign(new Error(r.error.message_en || "core error"), { reason: r.error });
      optionTable = Object.freeze(r.result.options.map((o) => Object.freeze({ ...o })));
    }
    return optionTable;
  }
  /**
   * The provider's X-de-mail-integrity of raw message bytes: the core prepares (hashes,
   * certificate walk) and lists the public-key checks, WebCrypto runs them (the wasm core
   * has no RSA/ECDSA code), the core decides. {ok, result: verdict} as `demail verify`'s
   * `integrity`; a key or signature WebCrypto cannot read counts as not verified.
   * @param {Uint8Array} bytes
   */
  async verifyIntegrity(bytes, nowMillis = Date.now()) {
    const prepared = guard(() => wasmIntegrityPrepare(this.policy, bytes, nowMillis));
    if (!prepared.ok) return prepared;
    const results = await Promise.all(prepared.result.checks.map(runCheck));
    return guard(() => wasmIntegrityVerify(this.policy, bytes, nowMillis, Uint8Array.from(results, (r) => (r ? 1 : 0))));
  }
  check(input) { return this.call("check", input); }
  parseSubject(subject) { return this.call("subject.parse", subject); }
  formatSubject(subject, options) { return this.call("subject.format", { subject, options }); }
  headers(options, privateId, sender) { return this.call("headers", { options, private_id: privateId ?? null, sender: sender ?? null }); }
  classifyHeaders(headers, xml) { return this.call("classify.headers", { headers, xml: xml ?? null }); }
}

/** Base64 → bytes (WebCrypto's inputs, Outlook's getAsFileAsync). */
export const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

/** One public-key check of `integrity.prepare` (WebCrypto's terms, docs/core-api.md). */
export async function runCheck(c) {
  const subtle = globalThis.crypto.subtle;
  const ecdsa = c.algorithm === "ECDSA";
  try {
    const key = await subtle.importKey(
      "spki", fromB64(c.spki), ecdsa ? { name: "ECDSA", namedCurve: c.named_curve } : { name: c.algorithm, hash: c.hash },
      false, ["verify"]);
    const params = ecdsa ? { name: "ECDSA", hash: c.hash }
      : c.algorithm === "RSA-PSS" ? { name: "RSA-PSS", saltLength: c.salt_length } : { name: c.algorithm };
    return await subtle.verify(params, key, fromB64(c.signature), fromB64(c.data));
  } catch {
    return false;
  }
}

/** Load the module: in an extension from its URL, in Node from bytes. */
export async function loadCore(policy = "", wasmBytes = undefined) {
  if (wasmBytes) initSync({ module: wasmBytes });
  else await init();
  return new DemailCore(policy);
}

export function coreVersion() {
  return wasmVersion();
}

export { wasmCall as rawCall, wasmClassifyRaw as rawClassify };
