// The background dispatcher and event handlers with a stubbed messenger API and the
// real wasm core.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createMessenger, loadCore, corpus, corpusFiles, quietLog } from "./support.mjs";
import { createAddin } from "../lib/addin.js";
import { MSG, TAGS } from "../lib/constants.js";

const POLICY = {
  version: 1,
  organisation: { name: "Stadt Musterstadt", internal_domains: ["musterstadt.de"] },
};

function fakeHelper({ reachable = true, reject = null } = {}) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init, body: init.body ? JSON.parse(init.body) : null });
    if (!reachable) throw new TypeError("NetworkError when attempting to fetch resource.");
    if (reject) return new Response(JSON.stringify({ ok: false, error: reject }), { status: reject.status || 422 });
    if (url.endsWith("/raw")) {
      return new Response("From: peter.meier@musterstadt.de\r\nTo: erika.schmidt@buerger.de-mail.de\r\nSubject: Bescheid\r\nMessage-ID: <m1@musterstadt.de>\r\nX-de-mail-private: yes\r\nX-de-mail-confirmation-of-dispatch: yes\r\nX-de-mail-private-id: AZ-1\r\n\r\nText\r\n", { status: 200, headers: { "Content-Type": "message/rfc822" } });
    }
    return new Response(JSON.stringify({ ok: true, result: { id: "msg-1", status: "accepted", private_id: "DM-1" } }), { status: 202 });
  };
  return { fetch, calls };
}

async function setup({ managed = { policy: POLICY }, helper = fakeHelper({ reachable: false }), lang = "de", token = null } = {}) {
  const messenger = createMessenger({ managed, lang });
  if (token) await messenger.storage.local.set({ helperToken: token });
  const addin = createAddin({ messenger, loadCore, fetch: helper.fetch, log: quietLog });
  addin.register();
  await addin.start();
  await addin.started;
  return { messenger, addin, helper };
}

const send = (addin, type, data = {}, sender = {}) => addin.handleMessage({ type, ...data }, sender);

test("plain e-mail: onBeforeSend returns nothing to change and opens no dialog", async () => {
  const { messenger, addin } = await setup();
  const tab = messenger.openCompose({ to: ["kollege@musterstadt.de", "x@example.org"], subject: "Termin" });
  const r = await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  assert.deepEqual(r, {});
  assert.equal(messenger._windows.length, 0);
  assert.equal(messenger._composeTabs.get(tab.id).details.subject, "Termin");
});

test("mixed addressing: send cancelled, compose intact, German explanation and working fixes in the dialog", async () => {
  const { messenger, addin } = await setup();
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], cc: ["Max <max@example.org>"], subject: "Bescheid" });
  const before = structuredClone(messenger._composeTabs.get(tab.id).details);
  const r = await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  assert.deepEqual(r, { cancel: true });
  assert.deepEqual(messenger._composeTabs.get(tab.id).details, before);
  await new Promise((res) => setTimeout(res, 10));
  assert.equal(messenger._windows.length, 1);
  const url = messenger._windows[0].url;
  assert.match(url, /^dialog\/dialog\.html\?id=\d+$/);
  const id = Number(url.split("=")[1]);
  const d = await send(addin, MSG.dialogGet, { id });
  assert.equal(d.result.kind, "blocked");
  assert.match(d.result.view.explanation[0].text, /Eine De-Mail darf nicht zusammen mit einer normalen E-Mail verschickt werden/);
  assert.deepEqual(d.result.view.fixes.map((f) => f.label), ["E-Mail-Empfänger entfernen", "De-Mail-Empfänger entfernen"]);
  assert.equal(messenger._actions.get(tab.id).label, "De-Mail: Konflikt");
  // One click: remove the e-mail recipients.
  const fixed = await send(addin, MSG.composeFix, { tabId: tab.id, fix: "remove-email", dialogId: id });
  assert.equal(fixed.result.mode, "demail");
  assert.deepEqual(messenger._composeTabs.get(tab.id).details.cc, []);
  assert.deepEqual(messenger._composeTabs.get(tab.id).details.to, ["erika.schmidt@buerger.de-mail.de"]);
});

test("the other fix removes the De-Mail recipients", async () => {
  const { messenger, addin } = await setup();
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de", "x@example.org"] });
  const fixed = await send(addin, MSG.composeFix, { tabId: tab.id, fix: "remove-demail" });
  assert.equal(fixed.result.mode, "none");
  assert.deepEqual(messenger._composeTabs.get(tab.id).details.to, ["x@example.org"]);
});

test("options with only e-mail recipients: blocked", async () => {
  const { messenger, addin } = await setup();
  const tab = messenger.openCompose({ to: ["x@example.org"], subject: "Frage" });
  await send(addin, MSG.composeSet, { tabId: tab.id, changes: { options: ["private"] } });
  const r = await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  assert.deepEqual(r, { cancel: true });
  const d = await send(addin, MSG.dialogGet, { id: 1 });
  assert.equal(d.result.view.explanation[0].code, "options.no_demail_recipient");
});

test("popup view: options, groups, explanation; Abholbestätigung locks Persönlich", async () => {
  const { messenger, addin } = await setup();
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de", "kollege@musterstadt.de"], cc: ["x@example.org"] });
  let v = (await send(addin, MSG.composeState, { tabId: tab.id })).result;
  assert.equal(v.mode, "conflict");
  assert.deepEqual(v.groups.demail.map((r) => r.address), ["erika.schmidt@buerger.de-mail.de"]);
  assert.deepEqual(v.groups.internal.map((r) => r.address), ["kollege@musterstadt.de"]);
  assert.deepEqual(v.groups.external.map((r) => r.address), ["x@example.org"]);
  assert.deepEqual(v.options.map((o) => o.label), ["Persönlich", "Versandbestätigung", "Eingangsbestätigung", "Abholbestätigung", "Absenderbestätigt"]);
  await messenger.compose.setComposeDetails(tab.id, { to: ["erika.schmidt@buerger.de-mail.de"], cc: [] });
  v = (await send(addin, MSG.composeSet, { tabId: tab.id, changes: { options: ["confirmation-of-retrieve"], privateId: "AZ 66.2-0412" } })).result;
  assert.equal(v.mode, "demail");
  const priv = v.options.find((o) => o.id === "private");
  assert.equal(priv.checked && priv.locked, true);
  assert.equal(priv.reason, "Eine Abholbestätigung gibt es nur für persönliche De-Mails; „Persönlich“ ist daher gesetzt.");
  assert.equal(v.privateId, "AZ 66.2-0412");
  assert.match(v.explanation[0].text, /^Diese Nachricht geht als De-Mail mit Abholbestätigung, Persönlich an erika\.schmidt@buerger\.de-mail\.de\.$/);
  assert.equal(messenger._actions.get(tab.id).label, "De-Mail");
});

test("English UI uses the core's English texts", async () => {
  const { messenger, addin } = await setup({ lang: "en" });
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de", "x@example.org"] });
  const v = (await send(addin, MSG.composeState, { tabId: tab.id })).result;
  assert.match(v.explanation[0].text, /A De-Mail must not travel together with an ordinary e-mail/);
  assert.equal(v.fixes[0].label, "Remove e-mail recipients");
});

test("option ids, order and labels come from the core: popup, options page, banner, in both languages", async () => {
  const table = (await loadCore("")).optionList();
  for (const lang of ["de", "en"]) {
    const { messenger, addin } = await setup({ lang });
    const label = (o) => (lang === "de" ? o.label : o.label_en);
    const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"] });
    const v = (await send(addin, MSG.composeState, { tabId: tab.id })).result;
    assert.deepEqual(v.options.map((o) => [o.id, o.label]), table.map((o) => [o.id, label(o)]));
    const s = (await send(addin, MSG.settingsGet)).result;
    assert.deepEqual(s.options, table.map((o) => ({ id: o.id, label: label(o) })));
    messenger.addFolder("inbox", ["inbox"]);
    messenger.messageDisplay._shown.set(7, messenger.deliver("inbox", corpus("demail/02-versand-eingang-private-id-qp.eml")).id);
    const b = (await send(addin, MSG.displayInfo, {}, { tab: { id: 7 } })).result;
    assert.deepEqual(b.labels.options, ["confirmation-of-dispatch", "confirmation-of-receipt"].map((id) => label(table.find((o) => o.id === id))));
  }
});

test("allowed De-Mail, helper unreachable, policy block: cancelled with the helper explanation", async () => {
  const { messenger, addin } = await setup({ token: "t0k" });
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  await send(addin, MSG.composeSet, { tabId: tab.id, changes: { options: ["private"] } });
  const r = await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  assert.deepEqual(r, { cancel: true });
  const d = await send(addin, MSG.dialogGet, { id: 1 });
  assert.equal(d.result.kind, "helper");
  assert.match(d.result.view.explanation[0].text, /Helfer .* nicht erreichbar/);
  assert.equal(messenger._composeTabs.get(tab.id).details.subject, "Bescheid");
});

test("allowed De-Mail, helper unreachable, policy subject-tags: sent with [P, VB] in the subject", async () => {
  const { messenger, addin } = await setup({ managed: { policy: POLICY, unreachable_helper: "subject-tags", locked: ["unreachable_helper"] } });
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  await send(addin, MSG.composeSet, { tabId: tab.id, changes: { options: ["private", "confirmation-of-dispatch"] } });
  const r = await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  assert.deepEqual(r, { details: { subject: "[P, VB] Bescheid" } });
  assert.equal(messenger._windows.length, 0);
});

test("helper reachable: the De-Mail is handed over and the compose window closes", async () => {
  const helper = fakeHelper();
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, helper_discovery: "url", helper_url: "http://127.0.0.1:8741" } });
  messenger.addFolder("sent", ["sent"]);
  const tab = messenger.openCompose({ to: ["Erika <erika.schmidt@buerger.de-mail.de>"], subject: "[VB] Bescheid", body: "<p>Text</p>" }, [{ name: "a.pdf", type: "application/pdf", data: new Uint8Array([1, 2, 3]) }]);
  await send(addin, MSG.composeSet, { tabId: tab.id, changes: { options: ["private"], privateId: "AZ-1" } });
  const r = await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  assert.deepEqual(r, { cancel: true });
  const call = helper.calls.find((c) => c.url.endsWith("/v1/messages"));
  assert.ok(call, "POST /v1/messages");
  assert.equal(call.init.headers.Authorization, "Bearer t0k");
  assert.equal(call.body.subject, "Bescheid");
  assert.deepEqual(call.body.options, ["confirmation-of-dispatch", "private"]);
  assert.equal(call.body.private_id, "AZ-1");
  assert.deepEqual(call.body.to, ["Erika <erika.schmidt@buerger.de-mail.de>"]);
  assert.equal(call.body.attachments[0].data, "AQID");
  assert.ok(messenger._windows.some((w) => w.id === tab.windowId && w.removed), "compose window closed");
  // The copy in the Sent folder is the helper's message, with its De-Mail headers, tagged.
  let copy = null;
  for (let i = 0; i < 50 && !copy; i++) {
    await new Promise((r) => setTimeout(r, 10));
    copy = [...messenger._messages.values()].find((x) => x.header.folder.id === "sent");
  }
  assert.ok(copy, "Sent copy filed");
  assert.match(Buffer.from(copy.raw).toString(), /X-de-mail-private: yes/);
  assert.deepEqual(copy.header.tags, ["$demail"]);
});

test("helper refuses with the core's check: the dialog shows the core's reasons", async () => {
  const check = { verdict: "blocked", reasons: [{ code: "sender.not_authorized", severity: "block", message: "Der Absender ist nicht freigeschaltet.", message_en: "Not authorised." }] };
  const helper = fakeHelper({ reject: { code: "submit.blocked", message: "Abgelehnt.", message_en: "Refused.", details: { check } } });
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, helper_discovery: "url" } });
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  assert.deepEqual(await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id)), { cancel: true });
  const d = await send(addin, MSG.dialogGet, { id: 1 });
  assert.equal(d.result.view.explanation[0].text, "Der Absender ist nicht freigeschaltet.");
});

test("helper store unavailable (503) counts as unreachable: subject-tag fallback applies", async () => {
  const helper = fakeHelper({ reject: { code: "store.unavailable", message: "Speicher nicht verfügbar.", message_en: "Store unavailable.", status: 503 } });
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, helper_discovery: "url", unreachable_helper: "subject-tags" } });
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  assert.deepEqual(await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id)), { details: { subject: "[De-Mail] Bescheid" } });
});

test("a token provisioned by IT (managed `token`) is used without pairing", async () => {
  const helper = fakeHelper();
  const { messenger, addin } = await setup({ helper, managed: { policy: POLICY, helper_discovery: "url", token: "dmh1_it" } });
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  assert.deepEqual(await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id)), { cancel: true });
  assert.equal(helper.calls.find((c) => c.url.endsWith("/v1/messages")).init.headers.Authorization, "Bearer dmh1_it");
});

test("helper refuses the message: blocked with the helper's reason, window stays", async () => {
  const helper = fakeHelper({ reject: { code: "check.blocked", message: "Abgelehnt vom Helfer.", message_en: "Refused." } });
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, helper_discovery: "url" } });
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  const r = await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  assert.deepEqual(r, { cancel: true });
  assert.ok(!messenger._windows.some((w) => w.removed));
  const d = await send(addin, MSG.dialogGet, { id: 1 });
  assert.equal(d.result.view.explanation[0].text, "Abgelehnt vom Helfer.");
});

test("forwarding a received De-Mail to e-mail: confirm dialog decides", async () => {
  const { messenger, addin } = await setup();
  messenger.addFolder("inbox", ["inbox"]);
  const orig = messenger.deliver("inbox", corpus("demail/04-persoenlich-abholung-base64.eml"));
  const tab = messenger.openCompose({ type: "forward", relatedMessageId: orig.id, to: ["x@example.org"], subject: "WG: Bescheid" });
  const pending = addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  await new Promise((res) => setTimeout(res, 20));
  const d = await send(addin, MSG.dialogGet, { id: 1 });
  assert.equal(d.result.kind, "confirm");
  assert.equal(d.result.view.explanation[0].code, "forward.demail_to_email");
  await send(addin, MSG.dialogAnswer, { id: 1, answer: "cancel" });
  assert.deepEqual(await pending, { cancel: true });
  const again = addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  await new Promise((res) => setTimeout(res, 20));
  await send(addin, MSG.dialogAnswer, { id: 2, answer: "send" });
  assert.deepEqual(await again, {});
});

test("a reply to a Persönlich De-Mail starts in De-Mail mode with Persönlich", async () => {
  const { messenger, addin } = await setup();
  messenger.addFolder("inbox", ["inbox"]);
  const orig = messenger.deliver("inbox", corpus("demail/04-persoenlich-abholung-base64.eml"));
  const tab = messenger.openCompose({ type: "reply", relatedMessageId: orig.id, to: [orig.author], subject: "AW: x" });
  const v = (await send(addin, MSG.composeState, { tabId: tab.id })).result;
  assert.equal(v.marked, true);
  assert.equal(v.options.find((o) => o.id === "private").checked, true);
  assert.equal(v.mode, "demail");
});

test("new mail: De-Mails, receipts and notifications get their tags, e-mail none", async () => {
  const { messenger, addin } = await setup();
  messenger.addFolder("inbox", ["inbox"]);
  const expect = {};
  for (const f of [...corpusFiles("demail"), ...corpusFiles("receipt"), ...corpusFiles("notification"), ...corpusFiles("email")]) {
    const h = messenger.deliver("inbox", corpus(f));
    const kind = JSON.parse(corpus(f.replace(/\.eml$/, ".json"))).kind;
    expect[h.id] = { demail: TAGS.demail.key, receipt: TAGS.receipt.key, notification: TAGS.notification.key, malware: TAGS.notification.key }[kind] || null;
  }
  // Tags exist with their colours.
  assert.deepEqual(messenger._tags.map((t) => [t.key, t.tag, t.color]), [
    ["$demail", "De-Mail", "#C2185B"], ["$demail-receipt", "De-Mail-Bestätigung", "#00796B"], ["$demail-notification", "De-Mail-Meldung", "#5D4037"],
    ["$demail-warning", "De-Mail-Warnung", "#BF360C"],
  ]);
  const list = await messenger.messages.list("inbox");
  // scan_existing is on by default; run new-mail handling explicitly as well (idempotent).
  await addin.onNewMail({ id: "inbox" }, list);
  for (const [id, tag] of Object.entries(expect)) {
    const tags = messenger._messages.get(Number(id)).header.tags;
    assert.deepEqual(tags, tag ? [tag] : [], `message ${id}: ${messenger._messages.get(Number(id)).header.subject}`);
  }
});

test("first sync tags existing folders once and skips trash", async () => {
  const messenger = createMessenger({ managed: { policy: POLICY } });
  messenger.addFolder("inbox", ["inbox"]);
  messenger.addFolder("trash", ["trash"]);
  const a = messenger.deliver("inbox", corpus("demail/01-buerger-anfrage-normal.eml"));
  const b = messenger.deliver("trash", corpus("demail/01-buerger-anfrage-normal.eml"));
  const addin = createAddin({ messenger, loadCore, fetch: fakeHelper().fetch, log: quietLog });
  await addin.start();
  await addin.firstSync();
  assert.deepEqual(messenger._messages.get(a.id).header.tags, ["$demail"]);
  assert.deepEqual(messenger._messages.get(b.id).header.tags, []);
  assert.ok((await messenger.storage.local.get("scannedFolders")).scannedFolders.inbox);
});

test("banner data: options, auth level hoch, private-id; receipt links to the original", async () => {
  const { messenger, addin } = await setup();
  messenger.addFolder("inbox", ["inbox"]);
  const orig = messenger.deliver("inbox", corpus("demail/02-versand-eingang-private-id-qp.eml"));
  const rcpt = messenger.deliver("inbox", corpus("receipt/01-versand-stern.eml"));
  messenger.messageDisplay._shown.set(7, orig.id);
  let b = (await send(addin, MSG.displayInfo, {}, { tab: { id: 7 } })).result;
  assert.equal(b.kind, "demail");
  assert.deepEqual(b.labels.options, ["Versandbestätigung", "Eingangsbestätigung"]);
  assert.equal(b.labels.authLevel, "hoch");
  assert.equal(b.privateId, "DM-20261127-110540-9F3A0C1B7E22D4A5");
  messenger.messageDisplay._shown.set(7, rcpt.id);
  b = (await send(addin, MSG.displayInfo, {}, { tab: { id: 7 } })).result;
  assert.equal(b.kind, "receipt");
  assert.equal(b.labels.title, "De-Mail-Bestätigung");
  assert.equal(b.labels.receiptType, "Versandbestätigung");
  assert.equal(b.receipt.originalSubject, "Ihr Antrag auf Sondernutzungserlaubnis, Az. 66.2-2026/0412");
  assert.equal(b.original.id, orig.id);
  // Plain e-mail: no banner.
  const mail = messenger.deliver("inbox", corpus("email/03-intern-kollegen.eml"));
  messenger.messageDisplay._shown.set(7, mail.id);
  assert.equal((await send(addin, MSG.displayInfo, {}, { tab: { id: 7 } })).result, null);
});

test("an invalid IT policy falls back to the strict defaults and says so", async () => {
  const { messenger, addin } = await setup({ managed: { policy: { version: 2 } } });
  const s = (await send(addin, MSG.settingsGet)).result;
  assert.match(s.policyProblem, /Richtlinien-Version 2/);
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de", "x@example.org"] });
  const v = (await send(addin, MSG.composeState, { tabId: tab.id })).result;
  assert.equal(v.verdict, "blocked");
  assert.match(v.policyProblem, /Richtlinien-Version 2/);
});

test("settings: locked keys cannot be changed, others can", async () => {
  const { addin } = await setup({ managed: { policy: POLICY, unreachable_helper: "subject-tags", locked: ["unreachable_helper"] } });
  const r = (await send(addin, MSG.settingsSet, { changes: { unreachable_helper: "block", show_banner: false } })).result;
  assert.deepEqual(r.refused, ["unreachable_helper"]);
  assert.equal(r.values.unreachable_helper, "subject-tags");
  assert.equal(r.values.show_banner, false);
  assert.deepEqual(r.locked, ["unreachable_helper"]);
});

test("the button follows recipient changes (poll/refresh)", async () => {
  const { messenger, addin } = await setup();
  const tab = messenger.openCompose({ to: ["x@example.org"] });
  await addin.refresh(tab.id);
  assert.equal(messenger._actions.get(tab.id).label, "Keine De-Mail");
  await messenger.compose.setComposeDetails(tab.id, { to: ["erika.schmidt@buerger.de-mail.de"] });
  await addin.refresh(tab.id);
  assert.equal(messenger._actions.get(tab.id).label, "De-Mail");
  assert.equal(messenger._actions.get(tab.id).icon, "icons/demail.svg");
  await messenger.compose.setComposeDetails(tab.id, { cc: ["x@example.org"] });
  await addin.refresh(tab.id);
  assert.equal(messenger._actions.get(tab.id).label, "De-Mail: Konflikt");
  assert.equal(messenger._actions.get(tab.id).badge, "!");
});

test("mailing lists are expanded before the check", async () => {
  const { messenger, addin } = await setup();
  const tab = messenger.openCompose({ to: ["Ratsmitglieder <Ratsmitglieder>"] });
  const v = (await send(addin, MSG.composeState, { tabId: tab.id })).result;
  assert.equal(v.verdict, "blocked");
  assert.deepEqual(v.groups.demail.map((r) => r.address), ["bernd@buerger.de-mail.de"]);
  assert.deepEqual(v.groups.internal.map((r) => r.address), ["anna.rat@musterstadt.de"]);
});

test("onBeforeSend for a 20-recipient e-mail stays well under 20 ms", async () => {
  const { messenger, addin } = await setup();
  const to = Array.from({ length: 20 }, (_, i) => `Person ${i} <p${i}@example.org>`);
  const tab = messenger.openCompose({ to, subject: "Rundschreiben" });
  const details = await messenger.compose.getComposeDetails(tab.id);
  await addin.onBeforeSend(tab, details); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) assert.deepEqual(await addin.onBeforeSend(tab, details), {});
  const per = (performance.now() - t0) / 20;
  assert.ok(per < 20, `${per.toFixed(2)} ms per onBeforeSend`);
});

test("a De-Mail with attachments over the size limit is blocked on Send", async () => {
  const { messenger, addin } = await setup({ managed: { policy: { ...POLICY, rules: { max_size: "1 MiB" } } } });
  const big = new Uint8Array(2 * 1024 * 1024);
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Pläne" }, [{ name: "plan.pdf", data: big }]);
  const r = await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id));
  assert.deepEqual(r, { cancel: true });
  const d = await send(addin, MSG.dialogGet, { id: 1 });
  assert.equal(d.result.view.explanation[0].code, "size.exceeded");
  // The same attachment on a plain e-mail is none of the add-in's business.
  const mail = messenger.openCompose({ to: ["x@example.org"], subject: "Pläne" }, [{ name: "plan.pdf", data: big }]);
  assert.deepEqual(await addin.onBeforeSend(mail, await messenger.compose.getComposeDetails(mail.id)), {});
});

test("first run: pairs through the native host when IT allows auto-approval", async () => {
  const calls = [];
  const messenger = createMessenger({
    managed: { policy: POLICY },
    nativeHost: (host, msg) => {
      calls.push([host, msg.action]);
      return msg.action === "pair" ? { ok: true, result: { pairing_id: "p_1", token: "dmh1_native", status: "approved" } } : { ok: false, error: { code: "helper.not_running" } };
    },
  });
  const addin = createAddin({ messenger, loadCore, fetch: fakeHelper().fetch, log: quietLog });
  await addin.start();
  await addin.started;
  for (let i = 0; i < 50 && !(await messenger.storage.local.get("helperToken")).helperToken; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal((await messenger.storage.local.get("helperToken")).helperToken, "dmh1_native");
  assert.deepEqual(calls, [["de.demail.helper", "pair"]]);
});

/** A helper stand-in answering by route; every call is recorded. */
function routedHelper(routes) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const path = new URL(url).pathname + new URL(url).search;
    calls.push({ path, method: init.method || "GET", body: init.body ? JSON.parse(init.body) : null, auth: init.headers?.Authorization });
    for (const [prefix, answer] of Object.entries(routes)) {
      if (path.startsWith(prefix)) {
        const a = typeof answer === "function" ? answer(calls.at(-1)) : answer;
        if (a instanceof Error) throw a;
        return new Response(JSON.stringify(a.body ?? { ok: true, result: a }), { status: a.status || 200 });
      }
    }
    return new Response(JSON.stringify({ ok: false, error: { code: "request.not_found" } }), { status: 404 });
  };
  return { fetch, calls };
}

const URL_SETTINGS = { helper_discovery: "url", helper_url: "http://127.0.0.1:8741" };

test("first sync downloads only the core's candidates; the Sent folder in full", async () => {
  const messenger = createMessenger({ managed: { policy: POLICY } });
  messenger.addFolder("inbox", ["inbox"]);
  messenger.addFolder("sent", ["sent"]);
  const demail = messenger.deliver("inbox", corpus("demail/01-buerger-anfrage-normal.eml"));
  for (const f of corpusFiles("email")) messenger.deliver("inbox", corpus(f));
  // Our own sent De-Mail: the author is the organisation's e-mail address.
  const ours = messenger.deliver("sent", Buffer.from("From: peter.meier@musterstadt.de\r\nTo: erika.schmidt@buerger.de-mail.de\r\nSubject: Bescheid\r\nMessage-ID: <s1@musterstadt.de>\r\nX-de-mail-private: yes\r\nX-de-mail-private-id: AZ-9\r\n\r\nText\r\n"));
  const fetched = [];
  const getRaw = messenger.messages.getRaw;
  messenger.messages.getRaw = (id, o) => { fetched.push(id); return getRaw(id, o); };
  const addin = createAddin({ messenger, loadCore, fetch: fakeHelper({ reachable: false }).fetch, log: quietLog });
  await addin.start();
  await addin.firstSync();
  assert.deepEqual(messenger._messages.get(demail.id).header.tags, ["$demail"]);
  assert.deepEqual(messenger._messages.get(ours.id).header.tags, ["$demail"]);
  // The e-mails (one from a look-alike domain) were never downloaded.
  assert.deepEqual(fetched.sort(), [demail.id, ours.id].sort());
});

test("received receipts go to the helper's journal; they wait while it is unreachable", async () => {
  let up = false;
  const helper = routedHelper({ "/v1/journal/receipts": () => (up ? { status: 201, body: { ok: true, result: { new: true } } } : new TypeError("NetworkError")), "/v1/policy": () => new TypeError("NetworkError") });
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, ...URL_SETTINGS } });
  messenger.addFolder("inbox", ["inbox"]);
  messenger.deliver("inbox", corpus("receipt/01-versand-stern.eml"));
  await addin.onNewMail({ id: "inbox" }, await messenger.messages.list("inbox"));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal((await messenger.storage.local.get("pendingReceipts")).pendingReceipts.length, 1, "kept while the helper is down");
  up = true;
  messenger.deliver("inbox", corpus("receipt/03-eingang-stern.eml"));
  const list = await messenger.messages.list("inbox");
  await addin.onNewMail({ id: "inbox" }, { id: null, messages: list.messages.slice(-1) });
  for (let i = 0; i < 50 && (await messenger.storage.local.get("pendingReceipts")).pendingReceipts.length; i++) await new Promise((r) => setTimeout(r, 10));
  const posted = helper.calls.filter((c) => c.path === "/v1/journal/receipts" && c.method === "POST").map((c) => c.body);
  // The receipt itself, so the helper can check its signature and what it certifies.
  assert.deepEqual(posted.at(-2), { raw: Buffer.from(corpus("receipt/01-versand-stern.eml")).toString("base64") });
  assert.deepEqual(posted.at(-1), { raw: Buffer.from(corpus("receipt/03-eingang-stern.eml")).toString("base64") });
  assert.deepEqual((await messenger.storage.local.get("pendingReceipts")).pendingReceipts, []);
  assert.ok(helper.calls.every((c) => c.path !== "/v1/journal/receipts" || c.auth === "Bearer t0k"));
});

test("receipts arriving together are all kept for the helper (none overwrites another)", async () => {
  const helper = routedHelper({ "/v1/journal/receipts": () => new TypeError("NetworkError"), "/v1/policy": () => new TypeError("NetworkError") });
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, ...URL_SETTINGS } });
  messenger.addFolder("inbox", ["inbox"]);
  // storage.local is asynchronous IPC in Thunderbird: a read takes a while.
  const local = messenger.storage.local;
  const get = local.get.bind(local);
  local.get = async (k) => { const v = await get(k); await new Promise((r) => setTimeout(r, 20)); return v; };
  for (const f of ["receipt/01-versand-stern.eml", "receipt/03-eingang-stern.eml"]) messenger.deliver("inbox", corpus(f));
  await addin.onNewMail({ id: "inbox" }, await messenger.messages.list("inbox"));
  for (let i = 0; i < 50 && ((await messenger.storage.local.get("pendingReceipts")).pendingReceipts || []).length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  const kept = (await messenger.storage.local.get("pendingReceipts")).pendingReceipts.map((r) => Buffer.from(r.raw, "base64").toString("latin1").match(/X-de-mail-message-type: ([a-z ]+)/i)[1]).sort();
  assert.deepEqual(kept, ["confirmation of dispatch", "confirmation of receipt"]);
});

test("policy: IT's storage.managed wins; without it the helper's GET /v1/policy applies", async () => {
  const allowMixed = { ...POLICY, rules: { mixed_addressing: "allow" } };
  const helper = routedHelper({ "/v1/policy": { source: "/etc/demail/policy.toml", policy: allowMixed } });
  const mixed = { to: ["erika.schmidt@buerger.de-mail.de", "x@example.org"] };
  // No policy from IT in Thunderbird: the helper's rules.
  let { messenger, addin } = await setup({ helper, token: "t0k", managed: URL_SETTINGS });
  assert.equal((await send(addin, MSG.settingsGet)).result.policySource, "helper");
  let tab = messenger.openCompose(mixed);
  assert.equal((await send(addin, MSG.composeState, { tabId: tab.id })).result.verdict, "demail");
  // The helper's policy is kept for when the helper is not running.
  assert.deepEqual(JSON.parse((await messenger.storage.local.get("helperPolicy")).helperPolicy).rules, { mixed_addressing: "allow" });
  // IT's managed policy wins.
  ({ messenger, addin } = await setup({ helper, token: "t0k", managed: { ...URL_SETTINGS, policy: POLICY } }));
  assert.equal((await send(addin, MSG.settingsGet)).result.policySource, "managed");
  tab = messenger.openCompose(mixed);
  assert.equal((await send(addin, MSG.composeState, { tabId: tab.id })).result.verdict, "blocked");
});

test("guided pairing: request, code, pending until approved, then the helper's policy", async () => {
  let status = "pending";
  const helper = routedHelper({
    "/v1/pairing": (c) => (c.method === "POST" ? { status: 201, body: { ok: true, result: { pairing_id: "p_1", code: "K7PX-3MQA", token: "dmh1_x", status: "pending", expires_at: 1 } } } : { body: { ok: true, result: { pairing_id: "p_1", status } } }),
    "/v1/policy": (c) => (c.auth ? { policy: POLICY } : new TypeError("no")),
    "/v1/health": { status: "ok" },
  });
  const { addin, messenger } = await setup({ helper, managed: URL_SETTINGS });
  const p = await send(addin, MSG.helperPair);
  assert.equal(p.result.code, "K7PX-3MQA");
  // The helper's window shows which add-in asks.
  assert.deepEqual(helper.calls.find((c) => c.path === "/v1/pairing" && c.method === "POST").body, { client: "Thunderbird De-Mail-Add-in", addon_id: "demail-addin@open-demail.de" });
  assert.equal((await send(addin, MSG.helperPairStatus)).result.status, "pending");
  status = "approved";
  const s = (await send(addin, MSG.helperPairStatus)).result;
  assert.equal(s.status, "approved");
  assert.equal(s.policySource, "helper");
  assert.equal((await messenger.storage.local.get("helperToken")).helperToken, "dmh1_x");
});

const MATCHES = { check: "matches", counts: true, reasons: [{ code: "receipt.matches_sent", message: "Die Bestätigung gilt genau der versandten Nachricht.", message_en: "The receipt confirms exactly the message sent." }] };

async function sentBanner(receipts, receipt_status = "sent", lang = "de") {
  const helper = routedHelper({
    "/v1/journal": { messages: [{ private_id: "AZ-9", options: ["confirmation-of-dispatch", "confirmation-of-receipt", "private"], sent_at: 1795779350000, receipt_status, receipts }] },
    "/v1/policy": new TypeError("no"),
  });
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, ...URL_SETTINGS }, lang });
  messenger.addFolder("sent", ["sent"]);
  const m = messenger.deliver("sent", Buffer.from("From: peter.meier@musterstadt.de\r\nTo: erika.schmidt@buerger.de-mail.de\r\nSubject: Bescheid\r\nMessage-ID: <s1@musterstadt.de>\r\nX-de-mail-private: yes\r\nX-de-mail-confirmation-of-dispatch: yes\r\nX-de-mail-confirmation-of-receipt: yes\r\nX-de-mail-private-id: AZ-9\r\n\r\nText\r\n"));
  m.folder.specialUse = ["sent"];
  messenger._messages.get(m.id).header.folder.specialUse = ["sent"];
  messenger.messageDisplay._shown.set(3, m.id);
  const b = (await send(addin, MSG.displayInfo, {}, { tab: { id: 3 } })).result;
  assert.ok(helper.calls.some((c) => c.path === "/v1/journal?private_id=AZ-9"));
  return b;
}

test("sent De-Mail banner: the receipt timeline from the helper's journal", async () => {
  const b = await sentBanner([{ type: "dispatch", time: "2026-11-27T10:00:00Z", reported_at: 1, message_id: "<r1@p>", ...MATCHES }], "dispatched");
  assert.equal(b.timeline.status, "dispatched");
  assert.deepEqual(b.labels.timeline.map((s) => [s.type, s.done]), [["sent", true], ["dispatch", true], ["receipt", false]]);
  assert.equal(b.labels.timelineStatus, "Versand bestätigt");
  assert.deepEqual(b.labels.timeline[1].checks, [{ check: "matches", counts: true, text: "Bestätigung geprüft: passt zur gesendeten Nachricht" }]);
  assert.deepEqual(b.labels.warnings, []);
});

test("sent De-Mail banner: a receipt that does not count is a warning in words, never a done step", async () => {
  const mismatch = { check: "mismatch", counts: false, reasons: [{ code: "receipt.body_mismatch", message: "Die Bestätigung gilt einer Nachricht mit anderem Inhalt.", message_en: "The receipt confirms a message with other content." }] };
  const forged = { check: "invalid-signature", counts: false, reasons: [{ code: "integrity.body_altered", message: "Der Inhalt wurde verändert.", message_en: "The content was altered." }] };
  const b = await sentBanner([
    { type: "dispatch", time: "2026-11-27T10:00:00Z", reported_at: 1, message_id: "<r1@p>", ...MATCHES },
    { type: "receipt", time: "2026-11-27T11:00:00Z", reported_at: 2, message_id: "<r2@p>", ...mismatch },
    { type: "receipt", time: "2026-11-27T11:01:00Z", reported_at: 3, message_id: "<r3@p>", ...forged },
  ], "dispatched");
  assert.equal(b.timeline.status, "dispatched", "the Eingangsbestätigungen do not count");
  assert.deepEqual(b.labels.timeline.map((s) => [s.type, s.done]), [["sent", true], ["dispatch", true], ["receipt", false]]);
  const checks = b.labels.timeline[2].checks;
  assert.deepEqual(checks.map((x) => [x.check, x.counts]), [["mismatch", false], ["invalid-signature", false]]);
  assert.equal(checks[0].text, "Warnung – Bestätigung passt nicht zur gesendeten Nachricht: Die Bestätigung gilt einer Nachricht mit anderem Inhalt. Sie zählt nicht als Nachweis.");
  assert.match(checks[1].text, /^Warnung – Signatur der Bestätigung ist nicht gültig \(verändert oder gefälscht\): Der Inhalt wurde verändert\./);
  // English locale.
  const en = await sentBanner([{ type: "receipt", reported_at: 2, ...mismatch }], "sent", "en");
  assert.equal(en.labels.timeline[2].checks[0].text, "Warning – the confirmation does not match the message sent: The receipt confirms a message with other content. It does not count as proof.");
});

test("sent De-Mail banner: receipts nobody checked (an older helper, fields-only reports) do not count", async () => {
  // An older helper: no check, and a receipt_status that counted everything.
  const b = await sentBanner([{ type: "dispatch", time: "2026-11-27T10:00:00Z", reported_at: 1 }], "dispatched");
  assert.equal(b.timeline.status, "sent");
  assert.deepEqual(b.labels.timeline.map((s) => [s.type, s.done]), [["sent", true], ["dispatch", false], ["receipt", false]]);
  assert.deepEqual(b.labels.timeline[1].checks, [{ check: "unchecked", counts: false, text: "Bestätigung nicht geprüft; sie zählt nicht als Nachweis." }]);
  // counts without the check that earns it is not trusted either.
  const odd = await sentBanner([{ type: "dispatch", reported_at: 1, check: "unsigned", counts: true }], "dispatched");
  assert.equal(odd.labels.timeline[1].done, false);
});

test("gateway seal required: sealed De-Mail marked; forged or unsealed ones not, with a warning banner", async () => {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const pub = Buffer.from(await crypto.subtle.exportKey("raw", pair.publicKey)).toString("base64");
  const policy = { ...POLICY, seal: { required: true, public_keys: [`gw1:${pub}`] } };
  const { messenger, addin } = await setup({ managed: { policy } });
  messenger.addFolder("inbox", ["inbox"]);
  const body = corpus("demail/01-buerger-anfrage-normal.eml").toString("latin1");
  // Seal as the gateway does: Ed25519 over the core's canonical form.
  const seal = async (raw) => {
    const withDummy = `X-Demail-Gateway-Seal: v=1; kid=gw1; s=AAAA\r\n${raw}`;
    const c = addin.core.call("seal.canonical", withDummy.split(/\r?\n\r?\n/)[0] + "\r\n\r\n").result.canonical;
    const s = Buffer.from(await crypto.subtle.sign({ name: "Ed25519" }, pair.privateKey, new TextEncoder().encode(c))).toString("base64");
    return `X-Demail-Gateway-Seal: v=1; kid=gw1; s=${s}\r\n${raw}`;
  };
  const sealed = messenger.deliver("inbox", Buffer.from(await seal(body), "latin1"));
  const forged = messenger.deliver("inbox", Buffer.from((await seal(body)).replace(/^From: .*$/m, "From: Betrueger <max.mustermann@buerger.de-mail.de>"), "latin1"));
  const unsealed = messenger.deliver("inbox", Buffer.from(body, "latin1"));
  await addin.onNewMail({ id: "inbox" }, await messenger.messages.list("inbox"));
  assert.deepEqual(messenger._messages.get(sealed.id).header.tags, ["$demail"]);
  assert.deepEqual(messenger._messages.get(forged.id).header.tags, []);
  assert.deepEqual(messenger._messages.get(unsealed.id).header.tags, []);
  const banner = async (id) => {
    messenger.messageDisplay._shown.set(9, id);
    return (await send(addin, MSG.displayInfo, {}, { tab: { id: 9 } })).result;
  };
  assert.equal((await banner(sealed.id)).kind, "demail");
  const f = await banner(forged.id);
  assert.equal(f.kind, "untrusted");
  assert.equal(f.labels.title, "Nicht vom De-Mail-Gateway bestätigt – Vorsicht");
  assert.match(f.labels.sealWarning, /gefälscht oder verändert/);
  const u = await banner(unsealed.id);
  assert.equal(u.kind, "untrusted");
  assert.match(u.labels.sealWarning, /nicht über das De-Mail-Gateway/);
  // Displaying it does not tag it either.
  assert.deepEqual(messenger._messages.get(unsealed.id).header.tags, []);
});

test("gateway seal not required: an unsealed De-Mail is marked as before; a broken seal still warns", async () => {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const pub = Buffer.from(await crypto.subtle.exportKey("raw", pair.publicKey)).toString("base64");
  const { messenger, addin } = await setup({ managed: { policy: { ...POLICY, seal: { required: false, public_keys: [`gw1:${pub}`] } } } });
  messenger.addFolder("inbox", ["inbox"]);
  const body = corpus("demail/01-buerger-anfrage-normal.eml").toString("latin1");
  const plain = messenger.deliver("inbox", Buffer.from(body, "latin1"));
  const broken = messenger.deliver("inbox", Buffer.from(`X-Demail-Gateway-Seal: v=1; kid=gw1; s=${Buffer.alloc(64, 1).toString("base64")}\r\n${body}`, "latin1"));
  await addin.onNewMail({ id: "inbox" }, await messenger.messages.list("inbox"));
  assert.deepEqual(messenger._messages.get(plain.id).header.tags, ["$demail"]);
  assert.deepEqual(messenger._messages.get(broken.id).header.tags, []);
});

test("one Message-ID per compose window: a second Send after a failure is the same De-Mail", async () => {
  let up = false;
  const helper = routedHelper({
    "/v1/health": { status: "ok", request_timeout: 60 },
    "/v1/messages": () => (up ? { status: 202, body: { ok: true, result: { id: "m_1", status: "queued" } } } : new TypeError("NetworkError when attempting to fetch resource.")),
    "/v1/outbox": { status: 404, body: { ok: false, error: { code: "outbox.not_found" } } },
  });
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, ...URL_SETTINGS } });
  const tab = messenger.openCompose({ from: "Peter Meier <peter.meier@musterstadt.de>", to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  assert.deepEqual(await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id)), { cancel: true });
  assert.equal(messenger._windows.filter((w) => w.id === tab.windowId && w.removed).length, 0, "the window stays");
  up = true;
  assert.deepEqual(await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id)), { cancel: true });
  const ids = helper.calls.filter((c) => c.path === "/v1/messages").map((c) => c.body.message_id);
  assert.equal(ids.length, 3, "the first Send tried twice (a lost answer), the second once");
  assert.match(ids[0], /^\d{13}\.[0-9a-f]{24}@musterstadt\.de$/);
  assert.deepEqual(new Set(ids).size, 1, `one Message-ID: ${ids}`);
  assert.ok(messenger._windows.some((w) => w.id === tab.windowId && w.removed), "closed after the helper took it");
  // Another compose window is another De-Mail.
  const tab2 = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Zweiter Bescheid" });
  await addin.onBeforeSend(tab2, await messenger.compose.getComposeDetails(tab2.id));
  assert.notEqual(helper.calls.filter((c) => c.path === "/v1/messages").at(-1).body.message_id, ids[0]);
});

test("a 408 from the helper: sent once more with the same Message-ID, the window closes", async () => {
  let n = 0;
  const helper = routedHelper({
    "/v1/health": { status: "ok", request_timeout: 2 },
    "/v1/messages": () => (++n === 1 ? { status: 408, body: { ok: false, error: { code: "request.timeout", message: "zu lange", message_en: "too long" } } } : { status: 200, body: { ok: true, result: { id: "m_1", status: "queued", duplicate: true } } }),
    "/v1/outbox": { status: 404, body: { ok: false, error: { code: "outbox.not_found" } } },
  });
  const { messenger, addin } = await setup({ helper, token: "t0k", managed: { policy: POLICY, ...URL_SETTINGS } });
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  assert.deepEqual(await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id)), { cancel: true });
  const posts = helper.calls.filter((c) => c.path === "/v1/messages");
  assert.equal(posts.length, 2);
  assert.equal(posts[0].body.message_id, posts[1].body.message_id);
  assert.ok(messenger._windows.some((w) => w.id === tab.windowId && w.removed), "compose window closed");
  assert.equal(messenger._windows.filter((w) => !w.removed).length, 0, "no dialog");
});

test("an expired or revoked token is forgotten and the add-in pairs again", async () => {
  const pairs = [];
  const messenger = createMessenger({
    managed: { policy: POLICY, ...URL_SETTINGS },
    nativeHost: (host, msg) => {
      if (msg.action === "pair") pairs.push(msg.client);
      return msg.action === "pair" ? { ok: true, result: { token: "dmh1_new", status: "approved" } } : { ok: false, error: { code: "helper.not_running" } };
    },
  });
  await messenger.storage.local.set({ helperToken: "dmh1_old", pairAttemptAt: Date.now(), firstRunShown: Date.now() });
  const helper = routedHelper({
    "/v1/health": { status: "ok", request_timeout: 60 },
    "/v1/messages": { status: 401, body: { ok: false, error: { code: "auth.invalid", message: "Die Kopplung ist ungültig oder wurde widerrufen.", message_en: "invalid" } } },
    "/v1/policy": { status: 401, body: { ok: false, error: { code: "auth.invalid" } } },
  });
  const addin = createAddin({ messenger, loadCore, fetch: helper.fetch, log: quietLog });
  addin.register();
  await addin.start();
  await addin.started;
  const tab = messenger.openCompose({ to: ["erika.schmidt@buerger.de-mail.de"], subject: "Bescheid" });
  assert.deepEqual(await addin.onBeforeSend(tab, await messenger.compose.getComposeDetails(tab.id)), { cancel: true });
  for (let i = 0; i < 50 && (await messenger.storage.local.get("helperToken")).helperToken !== "dmh1_new"; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal((await messenger.storage.local.get("helperToken")).helperToken, "dmh1_new", "paired again through the native host");
  assert.deepEqual(pairs, ["Thunderbird De-Mail-Add-in"], "not before the old token was refused");
});
