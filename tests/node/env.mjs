// Where things are, and the wasm module loaded the way Node can load it.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { initSync } from "../../addin/wasm/demail_wasm.js";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const FIXED_NOW = 1795775532000;
export const FIXED_ENTROPY = new Uint8Array(16).fill(7);

let loaded = false;
export function loadWasm() {
  if (!loaded) {
    initSync({ module: readFileSync(join(ROOT, "addin/wasm/demail_wasm_bg.wasm")) });
    loaded = true;
  }
}

export function walk(dir, ext, out = []) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, ext, out);
    else if (p.endsWith(ext)) out.push(p);
  }
  return out;
}

/** The native CLI binary, built by scripts/test before the Node tests run. */
export function demailBin() {
  const td = process.env.CARGO_TARGET_DIR || join(ROOT, "target");
  return process.env.DEMAIL_BIN || join(td, "debug", "demail");
}
