// Offline manifest checks. The published add-in manifest XSDs are in no npm or PyPI
// package (checked: office-addin-manifest, office-addin-manifest-converter,
// office-addin-validator), so the XML manifest is checked for well-formedness with a real
// XML parser plus the schema rules this add-in depends on (element order, requirement
// levels, resource references and lengths, ids). The unified JSON manifest is validated
// against the schema bundled in @microsoft/app-manifest.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import { DOMParser } from "@xmldom/xmldom";
import Ajv04 from "ajv-draft-04";
import addFormats from "ajv-formats";
import { ROOT, bundleDir, handlerRuntime } from "./env.mjs";

const require = createRequire(import.meta.url);
const BASE = "https://demail-addin.example.org";
const bundle = bundleDir();
const NS = "http://schemas.microsoft.com/office/appforoffice/1.1";
const XSI = "http://www.w3.org/2001/XMLSchema-instance";

function parseXml(text) {
  const errors = [];
  let doc = null;
  try {
    doc = new DOMParser({ onError: (level, msg) => errors.push(`${level}: ${msg}`) }).parseFromString(text, "text/xml");
  } catch (e) {
    // xmldom throws on fatal errors after reporting them
    if (!errors.length) errors.push(`fatalError: ${e.message}`);
  }
  return { doc, errors };
}
const kids = (el) => Array.from(el.childNodes).filter((n) => n.nodeType === 1);
const kid = (el, name) => kids(el).find((k) => k.localName === name);
const all = (el, name) => Array.from(el.getElementsByTagNameNS("*", name));
const xsiType = (el) => el.getAttributeNS(XSI, "type");
const version = (v) => v.split(".").map(Number);
const le = (a, b) => { const [x, y] = [version(a), version(b)]; return x[0] < y[0] || (x[0] === y[0] && x[1] <= y[1]); };

const xmlText = readFileSync(join(bundle, "manifest.xml"), "utf8");
const { doc, errors } = parseXml(xmlText);
const root = doc.documentElement;

test("XML manifest is well-formed (and the check can fail)", () => {
  assert.deepEqual(errors, []);
  assert.notDeepEqual(parseXml("<OfficeApp><Id></OfficeApp>").errors, []);
  assert.deepEqual(readFileSync(join(ROOT, "addin/outlook/manifest.xml"), "utf8").replaceAll(BASE, "X"), xmlText.replaceAll(BASE, "X"));
});

test("XML manifest: MailApp with the schema's element order", () => {
  assert.equal(root.localName, "OfficeApp");
  assert.equal(root.namespaceURI, NS);
  assert.equal(xsiType(root), "MailApp");
  const order = ["Id", "Version", "ProviderName", "DefaultLocale", "DisplayName", "Description", "IconUrl", "HighResolutionIconUrl", "SupportUrl", "AppDomains", "Hosts", "Requirements", "FormSettings", "Permissions", "Rule", "DisableEntityHighlighting", "VersionOverrides"];
  assert.deepEqual(kids(root).map((k) => k.localName), order);
  assert.match(kid(root, "Id").textContent, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.match(kid(root, "Version").textContent, /^\d+(\.\d+){0,3}$/);
  assert.equal(kid(root, "Permissions").textContent, "ReadWriteMailbox");
});

test("XML manifest: top-level Mailbox requirement ≤ 1.5, newer features only inside VersionOverrides", () => {
  const sets = all(kid(root, "Requirements"), "Set");
  assert.equal(sets.length, 1);
  assert.equal(sets[0].getAttribute("Name"), "Mailbox");
  assert.ok(le(sets[0].getAttribute("MinVersion"), "1.5"), sets[0].getAttribute("MinVersion"));
  const v10 = kid(root, "VersionOverrides");
  assert.equal(xsiType(v10), "VersionOverridesV1_0");
  assert.equal(v10.namespaceURI, "http://schemas.microsoft.com/office/mailappversionoverrides");
  const v11 = kid(v10, "VersionOverrides");
  assert.equal(xsiType(v11), "VersionOverridesV1_1");
  assert.equal(v11.namespaceURI, "http://schemas.microsoft.com/office/mailappversionoverrides/1.1");
  // V1_0 has no launch events; V1_1 has them and asks for Mailbox 1.12 (Smart Alerts).
  const points = (vo) => kids(kid(kid(kid(vo, "Hosts"), "Host"), "DesktopFormFactor")).filter((k) => k.localName === "ExtensionPoint").map(xsiType);
  assert.deepEqual(points(v10), ["MessageComposeCommandSurface", "MessageReadCommandSurface"]);
  assert.deepEqual(points(v11), ["MessageComposeCommandSurface", "MessageReadCommandSurface", "LaunchEvent"]);
  assert.equal(all(kid(v11, "Requirements"), "Sets")[0].getAttribute("DefaultMinVersion"), "1.12");
  assert.ok(le(all(kid(v10, "Requirements"), "Sets")[0].getAttribute("DefaultMinVersion"), "1.5"));
});

test("XML manifest: launch events name the handler's functions; SendMode Block", () => {
  const events = all(root, "LaunchEvent").map((e) => [e.getAttribute("Type"), e.getAttribute("FunctionName"), e.getAttribute("SendMode") || null]);
  assert.deepEqual(events, [
    ["OnMessageSend", "onMessageSendHandler", "Block"],
    ["OnMessageRecipientsChanged", "onMessageRecipientsChangedHandler", null],
  ]);
  const registered = Object.keys(handlerRuntime().Office.__test.associated).sort();
  assert.deepEqual(events.map((e) => e[1]).sort(), registered);
  // The Smart Alerts "open pane" button the handler names exists in V1_1.
  const v11 = kid(kid(root, "VersionOverrides"), "VersionOverrides");
  assert.ok(all(v11, "Control").some((c) => c.getAttribute("id") === "demailComposeButton"));
  // Classic Outlook runs the JS file alone: the runtime has a javascript override.
  const runtime = all(v11, "Runtime")[0];
  assert.equal(all(runtime, "Override")[0].getAttribute("type"), "javascript");
});

test("XML manifest: every resid resolves within its VersionOverrides; lengths and ids within limits", () => {
  for (const vo of [kid(root, "VersionOverrides"), kid(kid(root, "VersionOverrides"), "VersionOverrides")]) {
    const res = kid(vo, "Resources");
    const defined = new Map();
    for (const group of kids(res)) for (const r of kids(group)) defined.set(r.getAttribute("id"), { group: group.localName, value: r.getAttribute("DefaultValue"), el: r });
    const own = (el) => { for (let p = el.parentNode; p; p = p.parentNode) if (p.localName === "VersionOverrides") return p === vo; return false; };
    const used = Array.from(vo.getElementsByTagNameNS("*", "*")).filter((e) => e.hasAttribute("resid") && own(e));
    assert.ok(used.length > 10);
    for (const e of used) assert.ok(defined.has(e.getAttribute("resid")), `${e.localName} resid=${e.getAttribute("resid")}`);
    for (const [id, r] of defined) {
      assert.ok(id.length <= 32, `resource id ${id} longer than 32`);
      if (r.group === "ShortStrings") assert.ok(r.value.length <= 125, id);
      if (r.group === "LongStrings") assert.ok(r.value.length <= 250, id);
      if (r.group === "Urls" || r.group === "Images") assert.ok(r.value.startsWith(`${BASE}/`), id);
      for (const o of kids(r.el)) assert.match(o.getAttribute("Locale"), /^[a-z]{2}-[A-Z]{2}$/);
    }
    const ids = all(vo, "Control").filter(own).map((c) => c.getAttribute("id")).concat(all(vo, "Group").filter(own).map((g) => g.getAttribute("id")));
    assert.equal(new Set(ids).size, ids.length, `duplicate ids ${ids}`);
  }
});

test("XML manifest: every URL is HTTPS on the add-in's host and the file is in the bundle", () => {
  const urls = [...xmlText.matchAll(/"(https:\/\/[^"]+)"/g)].map((m) => m[1]);
  assert.ok(urls.length > 10);
  for (const u of urls) {
    assert.ok(u.startsWith(`${BASE}/`), u);
    const path = new URL(u).pathname;
    assert.ok(existsSync(join(bundle, path)), `${u} → ${path} missing in the bundle`);
  }
});

test("unified JSON manifest validates against the schema bundled in @microsoft/app-manifest", () => {
  const manifest = JSON.parse(readFileSync(join(bundle, "manifest.json"), "utf8"));
  const schemaPath = require.resolve(`@microsoft/app-manifest/build/json-schemas/teams/v${manifest.manifestVersion}/MicrosoftTeams.schema.json`);
  const ajv = new Ajv04({ allErrors: true, strict: false });
  addFormats(ajv);
  const validate = ajv.compile(JSON.parse(readFileSync(schemaPath, "utf8")));
  assert.ok(validate(manifest), JSON.stringify(validate.errors, null, 1));
  // The validator is live: a manifest without the required name fails.
  const broken = { ...manifest };
  delete broken.name;
  assert.equal(validate(broken), false);
});

test("unified JSON manifest: same id as the XML one, actions resolve, files exist", () => {
  const m = JSON.parse(readFileSync(join(bundle, "manifest.json"), "utf8"));
  assert.equal(m.id, kid(root, "Id").textContent);
  const ext = m.extensions[0];
  const actions = new Set(ext.runtimes.flatMap((r) => r.actions.map((a) => a.id)));
  for (const ev of ext.autoRunEvents.flatMap((a) => a.events)) assert.ok(actions.has(ev.actionId), ev.actionId);
  for (const c of ext.ribbons.flatMap((r) => r.tabs.flatMap((t) => t.groups.flatMap((g) => g.controls)))) assert.ok(actions.has(c.actionId), c.actionId);
  assert.deepEqual(ext.autoRunEvents[0].events.map((e) => [e.type, e.actionId]), [
    ["messageSending", "onMessageSendHandler"],
    ["messageRecipientsChanged", "onMessageRecipientsChangedHandler"],
  ]);
  for (const f of [m.icons.color, m.icons.outline]) assert.ok(existsSync(join(bundle, f)), f);
  for (const u of JSON.stringify(m).match(/https:\/\/[^"]+/g).filter((u) => u.startsWith(BASE) && !u.includes("json-schemas"))) {
    assert.ok(existsSync(join(bundle, new URL(u).pathname)), u);
  }
});
