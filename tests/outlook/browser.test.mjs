// The real task pane, read pane and event page in headless Chromium (Debian's), driven
// by playwright-core. The bundle is served under its HTTPS origin through request
// interception; Microsoft's office.js URL is answered with tests/outlook/office-stub.js.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdirSync, readdirSync } from "node:fs";
import { join, extname } from "node:path";
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { ROOT, HERE, bundleDir, demailBin } from "./env.mjs";

const ORIGIN = "https://demail-addin.example.org";
const OFFICE_JS = "https://appsforoffice.microsoft.com/lib/1/hosted/office.js";
const bundle = bundleDir();
const td = process.env.CARGO_TARGET_DIR || join(process.env.HOME || "/root", ".cache/demail-target");
const shots = process.env.OUTLOOK_SCREENSHOTS || join(td, "tmp/outlook-screenshots");
mkdirSync(shots, { recursive: true });
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css", ".wasm": "application/wasm", ".png": "image/png", ".json": "application/json" };

let browser;
before(async () => {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
});
after(async () => {
  await browser?.close();
});

async function open(page, fixture) {
  const ctx = await browser.newContext({ viewport: { width: 340, height: 820 }, locale: "de-DE" });
  const unexpected = [];
  await ctx.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.href === OFFICE_JS) return route.fulfill({ status: 200, contentType: TYPES[".js"], body: readFileSync(join(HERE, "office-stub.js")) });
    // Another organisation's policy, as scripts/build-outlook writes policy.js.
    if (fixture.policyJson && url.origin === ORIGIN && url.pathname === "/outlook/policy.js") {
      return route.fulfill({ status: 200, contentType: TYPES[".js"], body: `var DEMAIL_POLICY = ${JSON.stringify(fixture.policyJson)};\n` });
    }
    if (url.origin === ORIGIN) {
      const file = join(bundle, decodeURIComponent(url.pathname));
      if (!file.startsWith(bundle)) return route.abort();
      try {
        return route.fulfill({ status: 200, contentType: TYPES[extname(file)] || "application/octet-stream", body: readFileSync(file) });
      } catch {
        unexpected.push(url.href);
        return route.fulfill({ status: 404, body: "" });
      }
    }
    unexpected.push(url.href);
    return route.abort();
  });
  await ctx.addInitScript((fx) => {
    window.__OUTLOOK_FIXTURE = fx;
  }, fixture);
  const p = await ctx.newPage();
  const errors = [];
  p.on("pageerror", (e) => errors.push(String(e)));
  await p.goto(`${ORIGIN}/outlook/${page}`);
  return { ctx, p, errors, unexpected };
}

const state = (p) => p.evaluate(() => JSON.parse(JSON.stringify(window.Office.__test.state)));
const waitHeaders = (p, pred) => p.waitForFunction(pred, null, { timeout: 10000 });
// The pane re-renders after the Office write resolves: wait for the checkbox too, so the next
// click never lands on an element that is about to be replaced.
const waitBox = (p, id, checked) =>
  p.waitForFunction(([i, c]) => document.getElementById(i)?.checked === c, [id, checked], { timeout: 10000 });
const rec = (a) => ({ emailAddress: a, displayName: a, recipientType: "other" });

test("compose pane: ticking boxes sets exactly the TR headers, unticking removes them", async () => {
  const { ctx, p, errors, unexpected } = await open("taskpane.html", {
    from: { emailAddress: "jurist@recht.musterstadt.de", displayName: "Jurist" },
    to: [rec("anna@buerger.de-mail.de")],
  });
  try {
    await p.waitForSelector("body[data-ready='1']", { timeout: 20000 });
    // A De-Mail recipient marks the draft as De-Mail at once (Nachrichten-Kennung only).
    await waitHeaders(p, () => Object.keys(window.Office.__test.state.headers).length === 1);
    const pid = (await state(p)).headers["X-de-mail-private-id"];
    assert.match(pid, /^DM-/);
    // The pane re-renders after the write resolves, so wait for the view, not just the headers.
    await waitBox(p, "marked", true);
    assert.match(await p.textContent("#recipients"), /De-Mail\s*anna@buerger\.de-mail\.de/);

    await p.click("label[for='opt-private']");
    await waitHeaders(p, () => window.Office.__test.state.headers["X-de-mail-private"] === "yes");
    await waitBox(p, "opt-private", true);
    await p.click("label[for='opt-confirmation-of-dispatch']");
    await waitHeaders(p, () => "X-de-mail-confirmation-of-dispatch" in window.Office.__test.state.headers);
    await waitBox(p, "opt-confirmation-of-dispatch", true);
    await p.fill("#private-id", "AZ-2026-0815");
    await p.press("#private-id", "Tab");
    await waitHeaders(p, () => window.Office.__test.state.headers["X-de-mail-private-id"] === "AZ-2026-0815");
    await p.waitForFunction(() => document.getElementById("headers").textContent.includes("AZ-2026-0815"));
    assert.deepEqual((await state(p)).headers, {
      "X-de-mail-confirmation-of-dispatch": "yes",
      "X-de-mail-private": "yes",
      "X-de-mail-private-id": "AZ-2026-0815",
    });
    // Abholbestätigung: Persönlich becomes locked (the core's rule).
    await p.click("label[for='opt-confirmation-of-retrieve']");
    await waitHeaders(p, () => "X-de-mail-confirmation-of-retrieve" in window.Office.__test.state.headers);
    await p.waitForFunction(() => document.getElementById("opt-private").disabled);
    await p.screenshot({ path: join(shots, "compose-options.png"), fullPage: true });

    await p.click("label[for='opt-confirmation-of-retrieve']");
    await waitHeaders(p, () => !("X-de-mail-confirmation-of-retrieve" in window.Office.__test.state.headers));
    await waitBox(p, "opt-confirmation-of-retrieve", false);
    await p.click("label[for='opt-private']");
    await waitHeaders(p, () => !("X-de-mail-private" in window.Office.__test.state.headers));
    await waitBox(p, "opt-private", false);
    assert.deepEqual((await state(p)).headers, { "X-de-mail-confirmation-of-dispatch": "yes", "X-de-mail-private-id": "AZ-2026-0815" });
    await p.click("label[for='marked']");
    await waitHeaders(p, () => Object.keys(window.Office.__test.state.headers).length === 0);
    await waitBox(p, "marked", false);
    // The click unticks "marked" in the page at once; the options follow with the pane's
    // next render, after the write: wait for that, it times out if they stay ticked.
    await waitBox(p, "opt-confirmation-of-dispatch", false);
    assert.equal(await p.isChecked("#opt-confirmation-of-dispatch"), false);
    assert.deepEqual(errors, []);
    assert.deepEqual(unexpected, []);
  } finally {
    await ctx.close();
  }
});

test("compose pane: recipients classified live; mixed recipients shown as blocked in German", async () => {
  const { ctx, p, errors } = await open("taskpane.html", {
    from: { emailAddress: "peter.meier@musterstadt.de", displayName: "Peter Meier" },
    to: [rec("kollegin@musterstadt.de")],
  });
  try {
    await p.waitForSelector("body[data-ready='1']", { timeout: 20000 });
    assert.equal(await p.getAttribute("#recipients li", "data-kind"), "internal");
    await p.evaluate(() => window.Office.__test.setRecipients("to", ["anna@buerger.de-mail.de", "bob@example.org"]));
    await p.waitForSelector("#reasons [data-code='mixed.rejected']", { timeout: 10000 });
    const text = await p.textContent("#reasons [data-code='mixed.rejected']");
    assert.match(text, /^Diese Nachricht hat De-Mail-Empfänger \(anna@buerger\.de-mail\.de\) und E-Mail-Empfänger \(bob@example\.org\)/);
    const kinds = await p.$$eval("#recipients li", (ls) => ls.map((l) => l.dataset.kind));
    assert.deepEqual(kinds, ["demail", "external"]);
    await p.screenshot({ path: join(shots, "compose-mixed-blocked.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});

test("event page: Send with mixed recipients is blocked with the German message", async () => {
  const { ctx, p, errors, unexpected } = await open("launchevent.html", {
    from: { emailAddress: "peter.meier@musterstadt.de", displayName: "Peter Meier" },
    to: [rec("anna@buerger.de-mail.de"), rec("bob@example.org")],
  });
  try {
    const d = await p.evaluate(async () => {
      const ev = window.Office.__test.event("messageSending");
      window.Office.__test.associated.onMessageSendHandler(ev);
      return ev.done;
    });
    assert.equal(d.allowEvent, false);
    assert.match(d.errorMessage, /^Diese Nachricht hat De-Mail-Empfänger/);
    const ok = await p.evaluate(async () => {
      window.Office.__test.state.to = [{ emailAddress: "anna@buerger.de-mail.de" }];
      window.Office.__test.state.headers = { "X-de-mail-private-id": "AZ-1" };
      const ev = window.Office.__test.event("messageSending");
      window.Office.__test.associated.onMessageSendHandler(ev);
      return ev.done;
    });
    assert.deepEqual(ok, { allowEvent: true });
    assert.deepEqual(errors, []);
    assert.deepEqual(unexpected, []);
  } finally {
    await ctx.close();
  }
});

function headerBlock(rel) {
  const text = readFileSync(join(ROOT, "tests/corpus", rel), "utf8");
  const m = /\r?\n\r?\n/.exec(text);
  return m ? text.slice(0, m.index) : text;
}

test("read pane: a De-Mail gets the category \"De-Mail\" and shows options and log-in level", async () => {
  const { ctx, p, errors } = await open("read.html", { mode: "read", allHeaders: headerBlock("demail/04-persoenlich-abholung-base64.eml") });
  try {
    await p.waitForSelector("body[data-ready='1']", { timeout: 20000 });
    assert.equal(await p.getAttribute("#kind", "data-kind"), "demail");
    assert.equal(await p.getAttribute("#category-status", "data-category"), "applied");
    const s = await state(p);
    assert.deepEqual(s.categories, ["De-Mail"]);
    assert.deepEqual(s.masterCategories, [{ displayName: "De-Mail", color: "Preset9" }]);
    // Without getAsFileAsync the pane says it cannot check, and claims nothing.
    assert.equal(await p.getAttribute("#integrity", "data-status"), "unavailable");
    assert.match(await p.textContent("#integrity-text"), /kann die Signatur des Anbieters nicht prüfen/);
    assert.match(await p.textContent("#facts"), /Versandoptionen.*Persönlich/s);
    assert.match(await p.textContent("#facts"), /Anmeldung des Absenders/);
    await p.screenshot({ path: join(shots, "read-demail.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});

test("read pane: a receipt says what it confirms", async () => {
  const receipts = readdirSync(join(ROOT, "tests/corpus/receipt")).filter((f) => f.endsWith(".eml")).sort();
  assert.ok(receipts.length > 0);
  const { ctx, p, errors } = await open("read.html", { mode: "read", allHeaders: headerBlock(`receipt/${receipts[0]}`) });
  try {
    await p.waitForSelector("body[data-ready='1']", { timeout: 20000 });
    assert.equal(await p.getAttribute("#kind", "data-kind"), "receipt");
    assert.equal(await p.isVisible("#receipt"), true);
    assert.match(await p.textContent("#receipt-text"), /bestätigung\)/);
    assert.deepEqual((await state(p)).categories, ["De-Mail-Bestätigung"]);
    await p.screenshot({ path: join(shots, "read-receipt.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});

/** The integrity corpus's policy (it trusts the fixtures' test CA) in the core's JSON form. */
function integrityPolicy() {
  const out = execFileSync(demailBin(), ["policy", "check", join(ROOT, "tests/corpus/integrity/policy.toml")]);
  return JSON.stringify(JSON.parse(String(out)).policy);
}

test("read pane: the provider's signature is checked on the whole message; an altered or untrusted one is a warning and a category", async () => {
  const policyJson = integrityPolicy();
  const cases = [
    ["01-rsa-sha256", "valid", /Geprüft: Die Signatur des De-Mail-Anbieters ist gültig/, ["De-Mail"]],
    ["05-ecdsa-p256-sha256", "valid", /Geprüft/, ["De-Mail"]],
    ["10-subject-altered", "invalid", /Achtung: Die Signatur des De-Mail-Anbieters ist nicht gültig/, ["De-Mail", "De-Mail-Warnung"]],
    ["11-body-altered", "invalid", /Achtung/, ["De-Mail", "De-Mail-Warnung"]],
    ["14-untrusted-ca", "untrusted-certificate", /Achtung/, ["De-Mail", "De-Mail-Warnung"]],
    ["21-receipt-signed", "valid", /Geprüft/, ["De-Mail-Bestätigung"]],
  ];
  for (const [name, status, text, categories] of cases) {
    const rel = `integrity/${name}.eml`;
    const eml = readFileSync(join(ROOT, "tests/corpus", rel)).toString("base64");
    const { ctx, p, errors } = await open("read.html", { mode: "read", allHeaders: headerBlock(rel), eml, policyJson });
    try {
      await p.waitForSelector("body[data-ready='1']", { timeout: 20000 });
      assert.equal(await p.getAttribute("#integrity", "data-status"), status, name);
      assert.match(await p.textContent("#integrity-text"), text, name);
      // Announced to screen readers, and never by colour alone (the text says it).
      assert.equal(await p.getAttribute("#integrity-text", "role"), "status");
      const s = await state(p);
      assert.deepEqual(s.categories, categories, name);
      if (categories.includes("De-Mail-Warnung")) {
        assert.deepEqual(s.masterCategories.find((c) => c.displayName === "De-Mail-Warnung"), { displayName: "De-Mail-Warnung", color: "Preset1" });
        assert.match(await p.textContent("#integrity-detail"), /\S/, `${name}: the reason is named`);
      }
      if (status === "valid") assert.match(await p.textContent("#integrity-detail"), /Signiert von: CN=/);
      await p.screenshot({ path: join(shots, `read-integrity-${name}.png`), fullPage: true });
      assert.deepEqual(errors, []);
    } finally {
      await ctx.close();
    }
  }
});

test("compose pane on an Outlook without Mailbox 1.8 says so in German and writes nothing", async () => {
  const { ctx, p, errors } = await open("taskpane.html", { mailboxVersion: "1.7", to: [rec("anna@buerger.de-mail.de")] });
  try {
    await p.waitForSelector("#fatal:not([hidden])", { timeout: 20000 });
    assert.match(await p.textContent("#fatal"), /^Diese Outlook-Version unterstützt diesen De-Mail-Bereich nicht/);
    assert.equal(await p.isVisible("#form"), false);
    assert.deepEqual((await state(p)).headers, {});
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});

// Accessibility (BITV 2.0 = EN 301 549 = WCAG 2.1 AA): axe-core on every pane in its
// states, and the compose pane by keyboard alone.
const AXE = readFileSync(join(HERE, "node_modules/axe-core/axe.min.js"), "utf8");
const WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

async function axe(p) {
  await p.addScriptTag({ content: AXE });
  return p.evaluate(async (tags) => {
    const r = await globalThis.axe.run(document, { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }));
  }, WCAG);
}

test("accessibility: no serious or critical axe findings (WCAG 2.1 AA) on any pane", async () => {
  const policyJson = integrityPolicy();
  const eml = (rel) => readFileSync(join(ROOT, "tests/corpus", rel)).toString("base64");
  const pages = [
    ["compose, De-Mail with options", "taskpane.html", { from: rec("jurist@recht.musterstadt.de"), to: [rec("anna@buerger.de-mail.de")] }, "body[data-ready='1']"],
    ["compose, mixed recipients (blocked)", "taskpane.html", { to: [rec("anna@buerger.de-mail.de"), rec("info@example.org")] }, "body[data-ready='1']"],
    ["compose, too old Outlook", "taskpane.html", { mailboxVersion: "1.7" }, "#fatal:not([hidden])"],
    ["read, signature valid", "read.html", { mode: "read", allHeaders: headerBlock("integrity/01-rsa-sha256.eml"), eml: eml("integrity/01-rsa-sha256.eml"), policyJson }, "body[data-ready='1']"],
    ["read, signature broken", "read.html", { mode: "read", allHeaders: headerBlock("integrity/10-subject-altered.eml"), eml: eml("integrity/10-subject-altered.eml"), policyJson }, "body[data-ready='1']"],
    ["read, receipt", "read.html", { mode: "read", allHeaders: headerBlock("receipt/01-versand-stern.eml") }, "body[data-ready='1']"],
    ["read, e-mail", "read.html", { mode: "read", allHeaders: headerBlock("email/01-webshop-versandbestaetigung.eml") }, "body[data-ready='1']"],
    ["help", "support.html", {}, "main"],
  ];
  const bad = [];
  for (const [name, page, fixture, ready] of pages) {
    const { ctx, p } = await open(page, fixture);
    try {
      await p.waitForSelector(ready, { timeout: 20000 });
      const found = await axe(p);
      // The closing note lists every finding; only serious and critical ones fail.
      console.log(`AXE ${name}: ${found.length ? found.map((v) => `${v.id} (${v.impact}, ${v.nodes})`).join("; ") : "none"}`);
      for (const v of found.filter((v) => v.impact === "serious" || v.impact === "critical")) bad.push(`${name}: ${v.id} (${v.impact}, ${v.nodes} nodes)`);
      if (page === "support.html") {
        // The check is live: text below 4.5:1 contrast is found on this very page.
        await p.evaluate(() => document.querySelector("main").insertAdjacentHTML("beforeend", '<p style="color:#aaa;background:#fff">blass</p>'));
        const again = await p.evaluate(async () => (await globalThis.axe.run(document, { runOnly: { type: "tag", values: ["wcag2aa"] } })).violations.map((v) => v.id));
        assert.ok(again.includes("color-contrast"), again.join(","));
      }
    } finally {
      await ctx.close();
    }
  }
  assert.deepEqual(bad, []);
});

test("accessibility: the compose pane works by keyboard alone, with a visible focus", async () => {
  const { ctx, p, errors } = await open("taskpane.html", {
    from: { emailAddress: "jurist@recht.musterstadt.de", displayName: "Jurist" },
    to: [rec("anna@buerger.de-mail.de")],
  });
  try {
    await p.waitForSelector("body[data-ready='1']", { timeout: 20000 });
    await waitHeaders(p, () => Object.keys(window.Office.__test.state.headers).length === 1);
    await waitBox(p, "marked", true);
    // Tab through the pane: every control is reached, in reading order, and shows its focus.
    const order = [];
    for (let i = 0; i < 12; i++) {
      await p.keyboard.press("Tab");
      const f = await p.evaluate(() => {
        const e = document.activeElement;
        if (!e || e === document.body) return null;
        const s = getComputedStyle(e);
        return { id: e.id, outline: s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2 };
      });
      if (!f) break;
      if (order.some((o) => o.id === f.id)) break;
      order.push(f);
    }
    const ids = order.map((o) => o.id);
    const boxes = await p.$$eval("#options input[type=checkbox]", (l) => l.map((e) => e.id));
    assert.equal(ids[0], "marked", ids.join(","));
    for (const b of boxes) {
      if (await p.$eval(`#${b}`, (e) => e.disabled)) continue;
      assert.ok(ids.includes(b), `${b} not reachable by Tab: ${ids.join(",")}`);
    }
    assert.ok(ids.includes("private-id"), ids.join(","));
    assert.ok(ids.indexOf("marked") < ids.indexOf("private-id"), "reading order");
    assert.deepEqual(order.filter((o) => !o.outline).map((o) => o.id), [], "every focused control shows a 2 px outline");
    // Space ticks the focused option; the headers follow, as with the mouse.
    const first = (await p.$$eval("#options input[type=checkbox]:not(:disabled)", (l) => l.map((e) => e.id)))[0];
    assert.ok(first, `an enabled option: ${ids.join(",")}`);
    await p.focus(`#${first}`);
    await p.keyboard.press("Space");
    await waitBox(p, first, true);
    await waitHeaders(p, () => Object.keys(window.Office.__test.state.headers).length > 1);
    // The pane redraws after the write: the focus stays on the option (WCAG 2.4.3).
    assert.equal(await p.evaluate(() => document.activeElement?.id), first);
    await p.keyboard.press("Space");
    await waitBox(p, first, false);
    assert.equal(await p.evaluate(() => document.activeElement?.id), first);
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});
