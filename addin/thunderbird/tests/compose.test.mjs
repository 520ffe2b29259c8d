// Compose logic against the real wasm core.
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadCore } from "./support.mjs";
import * as compose from "../lib/compose.js";

const FROM = "Peter Meier <peter.meier@musterstadt.de>";
const POLICY = JSON.stringify({
  version: 1,
  organisation: { name: "Stadt Musterstadt", internal_domains: ["musterstadt.de"] },
  authorization: {
    default: "allow",
    default_options: ["private", "confirmation-of-dispatch", "confirmation-of-receipt", "confirmation-of-retrieve"],
    senders: [{ address: "chefin@musterstadt.de", options: ["private", "confirmation-of-dispatch", "confirmation-of-receipt", "confirmation-of-retrieve", "authoritative"] }],
  },
});

const ev = (core, { to = [], cc = [], bcc = [], options = [], marked = false, privateId = "", subject = "Antrag", size, from = FROM, forwardedDemail = false } = {}) =>
  compose.evaluate(core, { from, recipients: { to, cc, bcc }, state: { options, marked, privateId }, subjectText: subject, size, forwardedDemail });

test("plain e-mail passes untouched: mode none, decision send", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["kollege@musterstadt.de", "x@example.org"] });
  assert.equal(e.mode, "none");
  assert.equal(compose.decide(e).action, "send");
  assert.deepEqual(e.groups.internal.map((r) => r.address), ["kollege@musterstadt.de"]);
  assert.deepEqual(e.groups.external.map((r) => r.address), ["x@example.org"]);
});

test("De-Mail recipient: mode demail with the core's German summary", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["Erika Schmidt <erika.schmidt@buerger.de-mail.de>"], options: ["confirmation-of-dispatch"] });
  assert.equal(e.mode, "demail");
  assert.equal(compose.decide(e).action, "demail");
  assert.equal(e.info[0].code, "demail.summary");
  assert.match(e.info[0].message, /Diese Nachricht geht als De-Mail mit Versandbestätigung an erika\.schmidt@buerger\.de-mail\.de/);
});

test("mixed addressing is blocked with both one-click fixes", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], cc: ["Max <max@example.org>"] });
  assert.equal(e.mode, "conflict");
  assert.equal(compose.decide(e).action, "block");
  assert.equal(e.blocking[0].code, "mixed.rejected");
  assert.match(e.blocking[0].message, /De-Mail-Empfänger .* und E-Mail-Empfänger/);
  assert.deepEqual(e.fixes, ["remove-email", "remove-demail"]);
  assert.deepEqual(compose.recipientsAfterFix(e.result, "remove-email"), { to: ["erika.schmidt@buerger.de-mail.de"], cc: [], bcc: [] });
  assert.deepEqual(compose.recipientsAfterFix(e.result, "remove-demail"), { to: [], cc: ["Max <max@example.org>"], bcc: [] });
});

test("options with only e-mail recipients are blocked; fix: clear options", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["x@example.org"], options: ["private"] });
  assert.equal(compose.decide(e).action, "block");
  assert.equal(e.blocking[0].code, "options.no_demail_recipient");
  assert.ok(e.fixes.includes("clear-options"));
});

test("Abholbestätigung ticks and locks Persönlich (rule from the core)", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], options: ["confirmation-of-retrieve"] });
  const priv = e.options.find((o) => o.id === "private");
  assert.equal(priv.checked, true);
  assert.equal(priv.locked, true);
  assert.equal(priv.reason.code, "options.private_implied");
  assert.match(priv.reason.message, /Abholbestätigung/);
  const ret = e.options.find((o) => o.id === "confirmation-of-retrieve");
  assert.equal(ret.checked, true);
  assert.equal(ret.locked, false);
  assert.deepEqual(e.result.options, ["confirmation-of-retrieve", "private"]);
});

test("options the sender may not use are disabled with the core's reason", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"] });
  const auth = e.options.find((o) => o.id === "authoritative");
  assert.equal(auth.disabled, true);
  assert.equal(auth.reason.code, "sender.option_not_authorized");
  assert.match(auth.reason.message, /Absenderbestätigt/);
  assert.equal(e.options.find((o) => o.id === "private").disabled, false);
  const boss = ev(core, { from: "chefin@musterstadt.de", to: ["erika.schmidt@buerger.de-mail.de"] });
  assert.equal(boss.options.find((o) => o.id === "authoritative").disabled, false);
});

test("a sender without De-Mail rights sees every option disabled", async () => {
  const core = await loadCore(JSON.stringify({ version: 1, authorization: { default: "deny" } }));
  const e = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"] });
  assert.ok(e.options.every((o) => o.disabled && o.reason.code === "sender.not_authorized"));
  assert.equal(compose.decide(e).action, "block");
});

test("subject tags count as options; an unknown tag blocks", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], subject: "[P, VB] Bescheid" });
  assert.deepEqual(e.input.options, ["private", "confirmation-of-dispatch"]);
  assert.equal(e.subject.subject, "Bescheid");
  const bad = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], subject: "[P, XY] Bescheid" });
  assert.equal(compose.decide(bad).action, "block");
  assert.equal(bad.blocking[0].code, "subject.unknown_tag");
});

test("subject-tag fallback: the core writes [P, VB] Betreff", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], options: ["private", "confirmation-of-dispatch"], subject: "Bescheid" });
  assert.equal(compose.fallbackSubject(core, e), "[P, VB] Bescheid");
  const typed = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], options: ["confirmation-of-dispatch"], subject: "[P] Bescheid" });
  assert.equal(compose.fallbackSubject(core, typed), "[P, VB] Bescheid");
  const none = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  assert.equal(compose.fallbackSubject(core, none), "[De-Mail] Bescheid");
});

test("a message over the De-Mail size limit is blocked", async () => {
  const core = await loadCore(JSON.stringify({ version: 1, rules: { max_size: "1 MiB" } }));
  const e = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], size: 3 * 1024 * 1024 });
  assert.equal(compose.decide(e).action, "block");
  assert.equal(e.blocking[0].code, "size.exceeded");
  const small = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], size: 10_000 });
  assert.equal(compose.decide(small).action, "demail");
});

test("forwarding a received De-Mail to e-mail recipients needs confirmation (default policy)", async () => {
  const core = await loadCore("");
  const e = ev(core, { to: ["x@example.org"], forwardedDemail: true });
  assert.equal(compose.decide(e).action, "confirm");
  assert.equal(e.confirming[0].code, "forward.demail_to_email");
  const blockCore = await loadCore(JSON.stringify({ version: 1, rules: { forwarded_demail_to_email: "block" } }));
  assert.equal(compose.decide(ev(blockCore, { to: ["x@example.org"], forwardedDemail: true })).action, "block");
});

test("a bad Nachrichten-Kennung is blocked by the core", async () => {
  const core = await loadCore(POLICY);
  const e = ev(core, { to: ["erika.schmidt@buerger.de-mail.de"], privateId: "x".repeat(1025) });
  assert.equal(compose.decide(e).action, "block");
  assert.equal(e.blocking[0].code, "private_id.too_long");
});

test("mailing-list pills are recognised and resolved", async () => {
  assert.equal(compose.isListReference("Ratsmitglieder <Ratsmitglieder>"), true);
  assert.equal(compose.isListReference("Anna <anna@x.de>"), false);
  const r = await compose.resolveRecipients(["Ratsmitglieder <Ratsmitglieder>", "a@b.de"], async () => ["Anna <anna@x.de>", "b@c.de-mail.de"]);
  assert.deepEqual(r, ["Anna <anna@x.de>", "b@c.de-mail.de", "a@b.de"]);
});

test("formatRecipient quotes display names that need it", () => {
  assert.equal(compose.formatRecipient({ address: "a@b.de", name: "Meier, Peter" }), '"Meier, Peter" <a@b.de>');
  assert.equal(compose.formatRecipient({ address: "a@b.de", name: "Anna" }), "Anna <a@b.de>");
  assert.equal(compose.formatRecipient({ address: "a@b.de" }), "a@b.de");
});
