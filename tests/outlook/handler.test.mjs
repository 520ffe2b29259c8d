// The on-send handler as classic Outlook runs it: the bundled launchevent.js in a V8
// context without WebAssembly, TextEncoder or DOM, with the Office stub.
// - ES2016 gate (acorn), no WebAssembly.
// - Parity: the core translated by wasm2js answers every case table and corpus message
//   byte for byte like the native Rust core (`demail parity-dump`).
// - Parity through the handler: each send-check case is put into an Outlook item, the
//   handler gathers it and decides; the native core's verdict on the same input must match.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { execFileSync } from "node:child_process";
import * as acorn from "acorn";
import vm from "node:vm";
import { ROOT, FIXED_NOW, FIXED_ENTROPY, bundleDir, demailBin, handlerRuntime } from "./env.mjs";
import { loadCore } from "../../addin/shared/demail-core.js";

const bundle = bundleDir();
const handlerSrc = readFileSync(join(bundle, "outlook/launchevent.js"), "utf8");
const casesDir = join(ROOT, "tests/cases");
const corpusDir = join(ROOT, "tests/corpus");

function parityDump(cases, corpus) {
  return JSON.parse(execFileSync(demailBin(), ["parity-dump", cases, corpus], { maxBuffer: 512 * 1024 * 1024 }).toString());
}
const native = parityDump(casesDir, corpusDir);

function walk(dir, ext, out = []) {
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, ext, out);
    else if (p.endsWith(ext)) out.push(p);
  }
  return out;
}

test("ES2016 gate: the bundled handler parses as an ES2016 script", () => {
  acorn.parse(handlerSrc, { ecmaVersion: 2016, sourceType: "script" });
  for (const f of ["launchevent.js", "core-js-glue.js"]) {
    acorn.parse(readFileSync(join(ROOT, "addin/outlook/src", f), "utf8"), { ecmaVersion: 2016, sourceType: "script" });
  }
});

test("ES2016 gate is real: ES2017+ syntax is refused", () => {
  for (const src of ["async function f() {}", "var o = { ...a };", "a?.b;", "var x = 1n;"]) {
    assert.throws(() => acorn.parse(src, { ecmaVersion: 2016, sourceType: "script" }), SyntaxError, src);
  }
});

test("the handler neither names nor needs WebAssembly", () => {
  // Code, not comments: no identifier WebAssembly anywhere in the bundled file.
  const names = new Set();
  for (const t of acorn.tokenizer(handlerSrc, { ecmaVersion: 2016 })) if (t.type.label === "name") names.add(t.value);
  assert.ok(names.has("DemailCoreJs"));
  assert.equal(names.has("WebAssembly"), false);
  const ctx = handlerRuntime();
  assert.equal(typeof ctx.WebAssembly, "undefined");
  assert.match(ctx.DemailCoreJs.version(), /^\d+\.\d+/);
});

test("the handler's option ids come from the translated core, the same table the panes read", async () => {
  const ctx = handlerRuntime();
  const table = (await loadCore("", readFileSync(join(ROOT, "addin/wasm/demail_wasm_bg.wasm")))).optionList();
  const translated = JSON.parse(vm.runInContext("JSON.stringify(DemailSend.core('version', null).result.options)", ctx));
  assert.deepEqual(translated, table);
  assert.deepEqual(JSON.parse(vm.runInContext("JSON.stringify(DemailSend.options())", ctx)), table.map((o) => o.id));
});

test("Office.actions.associate registers both handlers under the manifest's names", () => {
  const ctx = handlerRuntime();
  assert.deepEqual(Object.keys(ctx.Office.__test.associated).sort(), ["onMessageRecipientsChangedHandler", "onMessageSendHandler"]);
});

test("translated core = native core on every case table (byte for byte)", (t) => {
  const ctx = handlerRuntime();
  let checks = 0;
  let total = 0;
  const failures = [];
  for (const file of walk(casesDir, ".json")) {
    const name = file.split("/").pop();
    const doc = JSON.parse(readFileSync(file, "utf8"));
    doc.cases.forEach((c, i) => {
      // Integrity is checked through the byte exports of the add-in's module, not `call`
      // (tests/node/integrity.test.mjs); the translated core has no such exports.
      if (c.op.startsWith("integrity.")) return;
      const out = ctx.DemailCoreJs.call(c.op, native.policies[name] ?? "", JSON.stringify(c.input), FIXED_NOW, FIXED_ENTROPY);
      total++;
      if (c.op === "check") checks++;
      if (out !== native.cases[name][i]) failures.push(`${name} ${c.name}\n  js:     ${out}\n  native: ${native.cases[name][i]}`);
    });
  }
  t.diagnostic(`${total} cases (${checks} send checks) identical`);
  assert.deepEqual(failures, []);
  assert.ok(checks >= 100, `only ${checks} send-check cases`);
  assert.ok(total > checks);
});

test("translated core = native core on the corpus (classification)", () => {
  const ctx = handlerRuntime();
  const failures = [];
  const emls = walk(corpusDir, ".eml");
  assert.ok(emls.length > 20);
  for (const eml of emls) {
    const rel = eml.slice(corpusDir.length + 1);
    const out = ctx.DemailCoreJs.classifyRaw(native.corpus_policy, readFileSync(eml));
    if (out !== native.corpus[rel]) failures.push(rel);
  }
  assert.deepEqual(failures, []);
});

// --- through the handler ---------------------------------------------------------------

const REPRESENTABLE = new Set(["from", "to", "cc", "bcc", "options", "marked", "private_id"]);

/** An Outlook item carrying the case: recipients as typed, De-Mail headers as the pane writes them. */
function fixtureFor(ctx, policy, input) {
  const rec = (l) => (l || []).map((a) => ({ emailAddress: a, displayName: a, recipientType: "other" }));
  const headers = {};
  let options = input.options || [];
  if (input.marked || options.length) {
    ctx.DEMAIL_POLICY = policy;
    const h = JSON.parse(ctx.DemailCoreJs.call("headers", policy, JSON.stringify({ options, private_id: input.private_id ?? "AZ-1" }), FIXED_NOW, FIXED_ENTROPY));
    assert.ok(h.ok, JSON.stringify(h));
    for (const x of h.result.headers) headers[x.name] = x.value;
    options = h.result.options; // with implied ones, e.g. Abholbestätigung → Persönlich
  }
  return {
    options,
    from: input.from === undefined ? null : { emailAddress: input.from, displayName: input.from },
    userProfile: { emailAddress: input.from ?? "", displayName: "" },
    to: rec(input.to),
    cc: rec(input.cc),
    bcc: rec(input.bcc),
    headers,
  };
}

function expectedDecision(result) {
  const first = (sev) => result.reasons.find((r) => r.severity === sev);
  if (result.verdict === "blocked") return { allowEvent: false, starts: first("block").message, prompt: false };
  if (result.verdict === "confirm") return { allowEvent: false, starts: first("confirm").message, prompt: true };
  return { allowEvent: true };
}

test("parity through the handler: every representable send-check case, native verdict = handler decision", async (t) => {
  const ctx = handlerRuntime();
  const files = readdirSync(casesDir).filter((f) => /^check-.*\.json$/.test(f)).sort();
  const tmp = mkdtempSync(join(tmpdir(), "outlook-parity-"));
  const corpus = join(tmp, "corpus");
  mkdirSync(join(tmp, "cases"));
  mkdirSync(corpus);
  const runs = [];
  try {
    for (const f of files) {
      const doc = JSON.parse(readFileSync(join(casesDir, f), "utf8"));
      const policy = native.policies[f] ?? "";
      const gathered = [];
      for (const c of doc.cases) {
        if (c.op !== "check" || !Object.keys(c.input).every((k) => REPRESENTABLE.has(k))) continue;
        ctx.DEMAIL_POLICY = policy;
        const fx = fixtureFor(ctx, policy, c.input);
        ctx.Office.__test.load(fx);
        // Objects from the handler's realm: compare as plain JSON.
        const input = JSON.parse(JSON.stringify(await ctx.DemailSend.gather(ctx.Office)));
        // The item carries what the case says; marking follows the headers the pane writes.
        assert.deepEqual(input.to, c.input.to ?? [], c.name);
        assert.deepEqual([...input.options].sort(), [...fx.options].sort(), c.name);
        assert.equal(input.marked, Boolean(c.input.marked || (c.input.options ?? []).length), c.name);
        const ev = ctx.Office.__test.event("messageSending");
        const decision = JSON.parse(JSON.stringify(await ctx.DemailSend.onMessageSend(ev, ctx.Office)));
        assert.equal(ev.completedCount, 1, c.name);
        assert.deepEqual(decision, JSON.parse(JSON.stringify(ev.completedWith)), c.name);
        gathered.push({ name: `${f} ${c.name}`, op: "check", input, decision });
      }
      // The native core decides on exactly the input the handler gathered.
      writeFileSync(join(tmp, "cases", f), JSON.stringify({ policy: doc.policy, cases: gathered.map(({ name, op, input }) => ({ name, op, input })) }));
      runs.push({ f, gathered });
    }
    const nat = parityDump(join(tmp, "cases"), corpus);
    const failures = [];
    let n = 0;
    const verdicts = {};
    for (const { f, gathered } of runs) {
      gathered.forEach((g, i) => {
        const env = JSON.parse(nat.cases[f][i]);
        n++;
        if (!env.ok) return failures.push(`${g.name}: native error ${nat.cases[f][i]}`);
        verdicts[env.result.verdict] = (verdicts[env.result.verdict] || 0) + 1;
        const want = expectedDecision(env.result);
        const d = g.decision;
        if (d.allowEvent !== want.allowEvent) return failures.push(`${g.name}: native ${env.result.verdict}, handler allowEvent=${d.allowEvent}`);
        if (!want.allowEvent) {
          if (!d.errorMessage.startsWith(want.starts.slice(0, 480))) failures.push(`${g.name}: message ${JSON.stringify(d.errorMessage)} does not start with ${JSON.stringify(want.starts)}`);
          if ((d.sendModeOverride === "promptUser") !== want.prompt) failures.push(`${g.name}: sendModeOverride ${d.sendModeOverride}`);
        }
      });
    }
    t.diagnostic(`${n} send-check cases through the handler, native verdicts ${JSON.stringify(verdicts)}`);
    assert.deepEqual(failures, []);
    assert.ok(n >= 100, `only ${n} cases went through the handler`);
    // The table exercises every outcome, so a handler that always allows or always blocks fails.
    for (const v of ["email", "demail", "blocked"]) assert.ok(verdicts[v] > 0, `no ${v} case: ${JSON.stringify(verdicts)}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

// --- behaviour with the bundled example policy (examples/policy.toml) -----------------

const SENDER = { emailAddress: "peter.meier@musterstadt.de", displayName: "Peter Meier" };
const r = (a) => ({ emailAddress: a, displayName: a, recipientType: "externalUser" });

async function send(fixture) {
  const ctx = handlerRuntime(fixture);
  const ev = ctx.Office.__test.event("messageSending");
  ctx.onMessageSendHandler(ev);
  const d = JSON.parse(JSON.stringify(await ev.done));
  return { ctx, d, ev };
}

test("mixed recipients are blocked with the German message, English after it", async () => {
  const { d } = await send({ from: SENDER, to: [r("anna@buerger.de-mail.de"), r("bob@example.org")] });
  assert.equal(d.allowEvent, false);
  assert.match(d.errorMessage, /^Diese Nachricht hat De-Mail-Empfänger \(anna@buerger\.de-mail\.de\) und E-Mail-Empfänger \(bob@example\.org\)/);
  assert.ok(d.errorMessage.length <= 500);
  assert.equal(d.cancelLabel, "De-Mail-Bereich öffnen");
  assert.equal(d.commandId, "demailComposeButton");
  assert.equal(d.sendModeOverride, undefined);
});

test("a De-Mail over the size limit is stopped before it leaves; attachments count base64-encoded", async () => {
  const pid = { "X-de-mail-private": "yes", "X-de-mail-private-id": "AZ-8" };
  const MiB = 1024 * 1024;
  // 8 MiB of attachments are about 10.7 MiB on the wire: over examples/policy.toml's 10 MiB.
  const big = await send({ from: SENDER, to: [r("anna@buerger.de-mail.de")], headers: pid, body: "<p>Anbei</p>", attachments: [{ name: "akte.pdf", size: 8 * MiB }] });
  assert.equal(big.d.allowEvent, false);
  assert.match(big.d.errorMessage, /^Die Nachricht ist 10,7 MB groß; eine De-Mail darf höchstens 10,0 MB groß sein/);
  const small = await send({ from: SENDER, to: [r("anna@buerger.de-mail.de")], headers: pid, body: "<p>Anbei</p>", attachments: [{ name: "akte.pdf", size: 7 * MiB }] });
  assert.deepEqual(small.d, { allowEvent: true });
  // Ordinary e-mail has no De-Mail limit: body and attachments are not even read.
  const mail = await send({ from: SENDER, to: [r("kollegin@musterstadt.de")], attachments: [{ name: "video.mp4", size: 50 * MiB }] });
  assert.deepEqual(mail.d, { allowEvent: true });
  assert.equal(mail.ctx.Office.__test.log.filter((l) => l.api === "getAttachmentsAsync").length, 0);
  assert.equal(big.ctx.Office.__test.log.filter((l) => l.api === "getAttachmentsAsync").length, 1);
});

test("the size estimate is the Thunderbird add-in's", async () => {
  const { estimateSize } = await import("../../addin/thunderbird/lib/compose.js");
  const ctx = handlerRuntime({});
  for (const [body, atts] of [["", []], ["<p>Grüße aus Köln</p>", [{ size: 1 }]], ["x".repeat(5000), [{ size: 3 * 1024 * 1024 }, { size: 17 }]]]) {
    assert.equal(ctx.DemailSend.estimateSize(body, atts), estimateSize({ body }, atts), body.slice(0, 20));
  }
});

test("English Outlook gets the English text first", async () => {
  const { d } = await send({ displayLanguage: "en-US", from: SENDER, to: [r("anna@buerger.de-mail.de"), r("bob@example.org")] });
  assert.match(d.errorMessage, /^This message has De-Mail recipients/);
  assert.equal(d.cancelLabel, "Open De-Mail pane");
});

test("options without a De-Mail recipient are blocked", async () => {
  const { d } = await send({ from: SENDER, to: [r("bob@example.org")], headers: { "X-de-mail-private": "yes", "X-de-mail-private-id": "AZ-7" } });
  assert.equal(d.allowEvent, false);
  assert.match(d.errorMessage, /De-Mail/);
});

test("subject tags count as marking (clients without the pane)", async () => {
  const { ctx, d } = await send({ from: SENDER, to: [r("bob@example.org")], subject: "[P] Bescheid" });
  assert.equal(d.allowEvent, false);
  const input = JSON.parse(JSON.stringify(await ctx.DemailSend.gather(ctx.Office)));
  assert.deepEqual(input.options, ["private"]);
  assert.equal(input.marked, true);
});

test("a marked De-Mail to De-Mail recipients is allowed; plain internal e-mail too", async () => {
  const a = await send({ from: SENDER, to: [r("anna@buerger.de-mail.de")], headers: { "X-de-mail-private": "yes", "X-de-mail-private-id": "AZ-7" } });
  assert.deepEqual(a.d, { allowEvent: true });
  const b = await send({ from: SENDER, to: [r("kollegin@musterstadt.de")] });
  assert.deepEqual(b.d, { allowEvent: true });
});

test("an unmarked De-Mail recipient is blocked when the policy requires marking", async () => {
  const doc = JSON.parse(readFileSync(join(casesDir, "check-rules-block.json"), "utf8"));
  assert.match(doc.policy, /require_marking = "block"/);
  const ctx = handlerRuntime({ from: SENDER, to: [r("anna@buerger.de-mail.de")] });
  ctx.DEMAIL_POLICY = native.policies["check-rules-block.json"];
  const ev = ctx.Office.__test.event("messageSending");
  const d = await ctx.DemailSend.onMessageSend(ev, ctx.Office);
  assert.equal(d.allowEvent, false);
  const res = JSON.parse(ctx.DemailCoreJs.call("check", ctx.DEMAIL_POLICY, JSON.stringify({ from: SENDER.emailAddress, to: ["anna@buerger.de-mail.de"], marked: false }), FIXED_NOW, FIXED_ENTROPY));
  assert.ok(res.result.reasons.some((x) => x.code === "demail.not_marked" && x.severity === "block"));
  assert.ok(d.errorMessage.startsWith(res.result.reasons.find((x) => x.code === "demail.not_marked").message));
});

test("confirm verdicts ask the user (PromptUser) instead of blocking for good", async () => {
  const ctx = handlerRuntime({ from: SENDER, to: [r("anna@buerger.de-mail.de"), r("bob@example.org")] });
  ctx.DEMAIL_POLICY = native.policies["check-rules-confirm.json"];
  const d = await ctx.DemailSend.onMessageSend(ctx.Office.__test.event("messageSending"), ctx.Office);
  assert.equal(d.allowEvent, false);
  assert.equal(d.sendModeOverride, "promptUser");
});

test("Outlook failing to give the recipients holds the message (fail closed, German text)", async () => {
  const { d } = await send({ from: SENDER, to: [r("anna@buerger.de-mail.de")], failures: { "to.getAsync": "GenericResponseError" } });
  assert.equal(d.allowEvent, false);
  assert.match(d.errorMessage, /^Die De-Mail-Prüfung ist fehlgeschlagen/);
});

test("recipients changed: a warning in the notification bar, removed once fixed", async () => {
  const ctx = handlerRuntime({ from: SENDER, to: [r("anna@buerger.de-mail.de"), r("bob@example.org")] });
  let ev = ctx.Office.__test.event("messageRecipientsChanged");
  ctx.onMessageRecipientsChangedHandler(ev);
  await ev.done;
  const n = ctx.Office.__test.state.notifications["demail-check"];
  assert.equal(n.type, "errorMessage");
  assert.ok(n.message.length <= 150);
  assert.match(n.message, /^Diese Nachricht hat De-Mail-Empfänger/);
  ctx.Office.__test.state.to = [r("anna@buerger.de-mail.de")];
  ev = ctx.Office.__test.event("messageRecipientsChanged");
  ctx.onMessageRecipientsChangedHandler(ev);
  await ev.done;
  assert.equal(ctx.Office.__test.state.notifications["demail-check"], undefined);
});


test("the bundle carries the organisation's policy (examples/policy.toml via the demail CLI)", async () => {
  const ctx = handlerRuntime();
  const cli = JSON.parse(execFileSync(demailBin(), ["policy", "check", join(ROOT, "examples/policy.toml")]).toString());
  assert.deepEqual(JSON.parse(ctx.DEMAIL_POLICY), cli.policy);
  // Only this policy denies De-Mail to senders it does not list (built-in rules allow them).
  const { d } = await send({ from: { emailAddress: "praktikant@musterstadt.de" }, to: [r("anna@buerger.de-mail.de")], headers: { "X-de-mail-private-id": "AZ-1" } });
  assert.equal(d.allowEvent, false);
  const builtIn = JSON.parse(ctx.DemailCoreJs.call("check", "", JSON.stringify({ from: "praktikant@musterstadt.de", to: ["anna@buerger.de-mail.de"], marked: true }), FIXED_NOW, FIXED_ENTROPY));
  assert.notEqual(builtIn.result.verdict, "blocked");
});

test("the handler runtime really lacks ES2017+ library features (the runtime gate can fail)", () => {
  const ctx = handlerRuntime();
  for (const expr of ["Object.entries({})", "'a'.padStart(2)", "Promise.resolve().finally(() => 0)", "[[1]].flat()", "BigInt(1)"]) {
    assert.throws(() => vm.runInContext(expr, ctx), (e) => e.name === "TypeError" || e.name === "ReferenceError", expr);
  }
});
