// Every Office.js call of the add-in checked against Microsoft's own type definitions
// (@types/office-js, tsc --checkJs over the files marked // @ts-check), and proof that
// the check catches an API or a signature that does not exist.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const tsc = (project) => spawnSync(join(here, "node_modules/.bin/tsc"), ["-p", project], { encoding: "utf8" });

test("the add-in's Office.js calls exist with these signatures (@types/office-js)", () => {
  const r = tsc(join(here, "tsconfig.json"));
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test("the type check fails on an Office.js API or signature that does not exist", () => {
  const dir = mkdtempSync(join(tmpdir(), "demail-tsc-"));
  try {
    writeFileSync(
      join(dir, "bad.js"),
      "// @ts-check\n" +
        "Office.context.mailbox.item.getComposeTypeAsyncNow(function () {});\n" +
        "Office.context.mailbox.item.internetHeaders.getAsync('X-de-mail-persoenlich', function () {});\n",
    );
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({ extends: join(here, "tsconfig.json"), include: [join(here, "build-globals.d.ts"), "bad.js"] }),
    );
    const r = tsc(join(dir, "tsconfig.json"));
    assert.notEqual(r.status, 0, "tsc accepted a made-up API");
    assert.match(r.stdout, /bad\.js\(2,\d+\): error TS2551|bad\.js\(2,\d+\): error TS2339/, r.stdout);
    assert.match(r.stdout, /bad\.js\(3,\d+\): error TS2345/, r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
