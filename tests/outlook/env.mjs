// Paths and loaders shared by the Outlook add-in tests.
import { readFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const HERE = join(ROOT, "tests/outlook");
export const FIXED_NOW = 1795775532000;
export const FIXED_ENTROPY = new Uint8Array(16).fill(7);

/** The bundle built by scripts/build-outlook (scripts/test-outlook builds it with examples/policy.toml). */
export function bundleDir() {
  const td = process.env.CARGO_TARGET_DIR || join(process.env.HOME || "/root", ".cache/demail-target");
  const dir = process.env.OUTLOOK_BUNDLE || join(td, "tmp/outlook-bundle");
  if (!existsSync(join(dir, "outlook/launchevent.js"))) {
    throw new Error(`Outlook bundle missing at ${dir}: run scripts/build-outlook --out ${dir} --policy examples/policy.toml`);
  }
  return dir;
}

export function demailBin() {
  const td = process.env.CARGO_TARGET_DIR || join(ROOT, "target");
  return process.env.DEMAIL_BIN || join(td, "debug", "demail");
}

export const ES2017_PLUS_BUILTINS = `
  delete Object.entries; delete Object.values; delete Object.getOwnPropertyDescriptors; delete Object.fromEntries;
  delete String.prototype.padStart; delete String.prototype.padEnd; delete String.prototype.trimStart;
  delete String.prototype.trimEnd; delete String.prototype.matchAll; delete String.prototype.replaceAll;
  delete String.prototype.at; delete Array.prototype.flat; delete Array.prototype.flatMap; delete Array.prototype.at;
  delete Array.prototype.findLast; delete Promise.prototype.finally; delete Promise.allSettled; delete Promise.any;
  delete globalThis.BigInt; delete globalThis.Atomics; delete globalThis.SharedArrayBuffer; delete globalThis.WeakRef;
  delete globalThis.FinalizationRegistry; delete globalThis.AggregateError; delete Object.hasOwn;
  delete Symbol.asyncIterator;
`;

/**
 * A fresh JS-only runtime like classic Outlook's: the Office stub and the bundled
 * launchevent.js in one V8 context without WebAssembly, TextEncoder or a DOM.
 */
export function handlerRuntime(fixture) {
  const ctx = vm.createContext({ setTimeout, clearTimeout, console, __OUTLOOK_FIXTURE: fixture || {} });
  vm.runInContext("delete globalThis.WebAssembly; delete globalThis.TextEncoder; delete globalThis.TextDecoder;", ctx);
  // Library features newer than ES2016 are gone too, so using one fails here (acorn checks syntax only).
  vm.runInContext(ES2017_PLUS_BUILTINS, ctx);
  vm.runInContext(readFileSync(join(HERE, "office-stub.js"), "utf8"), ctx, { filename: "office-stub.js" });
  vm.runInContext(readFileSync(join(bundleDir(), "outlook/launchevent.js"), "utf8"), ctx, { filename: "launchevent.js" });
  return ctx;
}
