// The add-in's browser.* / messenger.* calls and its own JSDoc types checked with
// TypeScript against @types/thunderbird-webext-browser (tests/types/), and proof that the
// check catches a WebExtension API that Thunderbird does not have.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const types = join(dirname(fileURLToPath(import.meta.url)), "types");
const tsc = (project) => spawnSync(join(types, "node_modules/.bin/tsc"), ["-p", project], { encoding: "utf8" });

test("the add-in type-checks against the Thunderbird WebExtension types", () => {
  const r = tsc(join(types, "tsconfig.json"));
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test("the type check fails on a Thunderbird API that does not exist", () => {
  const dir = mkdtempSync(join(tmpdir(), "demail-tsc-"));
  try {
    writeFileSync(
      join(dir, "bad.js"),
      "// @ts-check\nmessenger.compose.getComposeDetailsNow(1);\nmessenger.messages.getFull('not a number');\n",
    );
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ extends: join(types, "tsconfig.json"), include: ["bad.js"], exclude: [] }));
    const r = tsc(join(dir, "tsconfig.json"));
    assert.notEqual(r.status, 0, "tsc accepted a made-up API");
    assert.match(r.stdout, /bad\.js\(2,\d+\): error TS(2339|2551)/, r.stdout);
    assert.match(r.stdout, /bad\.js\(3,\d+\): error TS2345/, r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
