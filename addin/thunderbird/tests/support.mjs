// Test support: the REAL wasm core (Node), and a stub of Thunderbird's `messenger` API
// that keeps compose windows, folders, messages and tags in memory.
import { readFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { loadCore as loadCoreReal } from "../../shared/demail-core.js";

export const ADDIN = join(dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = join(ADDIN, "..", "..");
const WASM = readFileSync(join(ROOT, "addin/wasm/demail_wasm_bg.wasm"));

let initialised = false;
/** loadCore as the add-in calls it, backed by the real wasm module. */
export async function loadCore(policy = "") {
  const c = await loadCoreReal(policy, initialised ? undefined : WASM);
  initialised = true;
  return c;
}
await loadCore("");

export function corpus(rel) {
  return readFileSync(join(ROOT, "tests/corpus", rel));
}
export function corpusFiles(dir) {
  return readdirSync(join(ROOT, "tests/corpus", dir)).filter((n) => n.endsWith(".eml")).map((n) => `${dir}/${n}`);
}

const LOCALES = {
  de: JSON.parse(readFileSync(join(ADDIN, "_locales/de/messages.json"), "utf8")),
  en: JSON.parse(readFileSync(join(ADDIN, "_locales/en/messages.json"), "utf8")),
};

function event() {
  const listeners = [];
  return {
    addListener: (f) => listeners.push(f),
    removeListener: (f) => listeners.splice(listeners.indexOf(f), 1),
    hasListener: (f) => listeners.includes(f),
    listeners,
    async fire(...args) {
      return Promise.all(listeners.map((f) => f(...args)));
    },
  };
}

/** Very small header reader for the stub's MessageHeader (subject, author, message-id). */
function headerOf(raw, name) {
  const text = Buffer.from(raw).toString("latin1");
  const head = text.split(/\r?\n\r?\n/)[0];
  const m = head.match(new RegExp(`^${name}:[ \\t]*(.*(?:\\r?\\n[ \\t].*)*)`, "im"));
  return m ? m[1].replace(/\r?\n[ \t]+/g, " ").trim() : "";
}

export function createMessenger({ lang = "de", managed = null, nativeHost = null } = {}) {
  const storageArea = (init = {}) => {
    let data = structuredClone(init);
    return {
      async get(keys) {
        if (keys === null || keys === undefined) return structuredClone(data);
        const list = typeof keys === "string" ? [keys] : Array.isArray(keys) ? keys : Object.keys(keys);
        const out = {};
        for (const k of list) if (k in data) out[k] = structuredClone(data[k]);
        return out;
      },
      async set(obj) { data = { ...data, ...structuredClone(obj) }; },
      async remove(k) { for (const key of [].concat(k)) delete data[key]; },
      get data() { return data; },
    };
  };

  const composeTabs = new Map(); // tabId -> {details, attachments}
  const messages = new Map(); // id -> {header, raw}
  const folders = [];
  const tags = [];
  const windows = [];
  const actions = new Map(); // tabId -> {label,title,icon,badge}
  let nextId = 1;

  const m = {
    _composeTabs: composeTabs,
    _messages: messages,
    _windows: windows,
    _actions: actions,
    _tags: tags,
    i18n: {
      getMessage(key, subs) {
        const e = LOCALES[lang][key];
        if (!e) return "";
        const s = [].concat(subs ?? []);
        return e.message.replace(/\$(\d)/g, (_, i) => s[Number(i) - 1] ?? "");
      },
      getUILanguage: () => (lang === "de" ? "de" : "en-US"),
    },
    runtime: {
      id: "demail-addin@open-demail.de",
      onMessage: event(),
      async sendNativeMessage(host, msg) {
        if (!nativeHost) throw new Error("No such native application " + host);
        return nativeHost(host, msg);
      },
    },
    storage: {
      local: storageArea(),
      session: storageArea(),
      managed: {
        async get() {
          if (!managed) throw new Error("Managed storage manifest not found");
          return structuredClone(managed);
        },
      },
      onChanged: event(),
    },
    tabs: {
      onCreated: event(),
      onRemoved: event(),
      async query(q = {}) {
        if (q.type === "messageCompose") return [...composeTabs.keys()].map((id) => ({ id, type: "messageCompose", windowId: 100 + id }));
        return [];
      },
      async get(id) { return { id, type: composeTabs.has(id) ? "messageCompose" : "mail", windowId: 100 + id }; },
    },
    windows: {
      async create(opts) { const w = { id: 500 + windows.length, ...opts }; windows.push(w); return w; },
      async remove(id) { const w = windows.find((x) => x.id === id); if (w) w.removed = true; else windows.push({ id, removed: true }); },
      async update() {},
    },
    composeAction: Object.fromEntries(
      ["setLabel", "setTitle", "setIcon", "setBadgeText", "setBadgeBackgroundColor"].map((fn) => [
        fn,
        async (d) => {
          const a = actions.get(d.tabId) || {};
          if (fn === "setLabel") a.label = d.label;
          if (fn === "setTitle") a.title = d.title;
          if (fn === "setIcon") a.icon = d.path;
          if (fn === "setBadgeText") a.badge = d.text;
          actions.set(d.tabId, a);
        },
      ]),
    ),
    compose: {
      onBeforeSend: event(),
      onComposeStateChanged: event(),
      onIdentityChanged: event(),
      onAttachmentAdded: event(),
      onAfterSend: event(),
      async getComposeDetails(tabId) {
        const t = composeTabs.get(tabId);
        if (!t) throw new Error("no compose tab " + tabId);
        return structuredClone(t.details);
      },
      async setComposeDetails(tabId, d) {
        const t = composeTabs.get(tabId);
        Object.assign(t.details, structuredClone(d));
      },
      async listAttachments(tabId) {
        return (composeTabs.get(tabId)?.attachments || []).map((a, i) => ({ id: tabId * 100 + i, name: a.name, size: a.data.length }));
      },
      async getAttachmentFile(id) {
        const a = composeTabs.get(Math.floor(id / 100)).attachments[id % 100];
        return new Blob([a.data], { type: a.type || "application/octet-stream" });
      },
    },
    messengerUtilities: {
      async parseMailboxString(s) {
        // Mailing lists of the stub address book.
        const lists = { "Ratsmitglieder <Ratsmitglieder>": [{ name: "Anna Rat", email: "anna.rat@musterstadt.de" }, { name: "", email: "bernd@buerger.de-mail.de" }] };
        if (lists[s.trim()]) return lists[s.trim()];
        const mm = s.match(/^\s*(.*?)\s*<([^>]+)>\s*$/);
        return mm ? [{ name: mm[1], email: mm[2] }] : [{ name: "", email: s.trim() }];
      },
    },
    addressBooks: { contacts: { async get() { return null; } } },
    accounts: {
      async list() {
        return [{ id: "account1", identities: [{ id: "id1", email: "peter.meier@musterstadt.de" }], rootFolder: { id: "root", isRoot: true, specialUse: [], subFolders: folders } }];
      },
    },
    folders: {
      onFolderInfoChanged: event(),
      async query(q = {}) {
        return folders.filter((f) => !q.specialUse || q.specialUse.every((u) => f.specialUse.includes(u)));
      },
    },
    messages: {
      onNewMailReceived: event(),
      async get(id) { return structuredClone(messages.get(id).header); },
      async getRaw(id) {
        const raw = messages.get(id).raw;
        return new Blob([raw]);
      },
      async getHeaders(id) {
        const raw = Buffer.from(messages.get(id).raw).toString("latin1");
        const head = raw.split(/\r?\n\r?\n/)[0].replace(/\r?\n[ \t]+/g, " ");
        const out = {};
        for (const line of head.split(/\r?\n/)) {
          const i = line.indexOf(":");
          if (i > 0) (out[line.slice(0, i).toLowerCase()] ||= []).push(line.slice(i + 1).trim());
        }
        return out;
      },
      async update(id, props) {
        const h = messages.get(id).header;
        if (props.tags) h.tags = [...props.tags];
      },
      async list(folderId) {
        return { id: null, messages: [...messages.values()].filter((x) => x.header.folder.id === folderId).map((x) => structuredClone(x.header)) };
      },
      async continueList() { return null; },
      async import(file, folderId, props = {}) {
        const raw = new Uint8Array(await file.arrayBuffer());
        return m.deliver(folderId, raw, { tags: props.tags || [], read: Boolean(props.read) });
      },
      async query(q = {}) {
        let list = [...messages.values()].map((x) => x.header);
        if (q.headerMessageId) list = list.filter((h) => h.headerMessageId === q.headerMessageId);
        if (q.tags) list = list.filter((h) => Object.keys(q.tags.tags).some((t) => h.tags.includes(t)));
        return { id: null, messages: structuredClone(list) };
      },
      tags: {
        async list() { return structuredClone(tags); },
        async create(key, tag, color) {
          if (tags.find((t) => t.key === key)) throw new Error("exists");
          tags.push({ key, tag, color });
        },
      },
    },
    messageDisplay: {
      _shown: new Map(),
      async getDisplayedMessages(tabId) {
        const id = this._shown.get(tabId);
        return { messages: id ? [structuredClone(messages.get(id).header)] : [] };
      },
      async open() {},
    },

    // ---- helpers for tests
    openCompose(details, attachments = []) {
      const id = nextId++;
      composeTabs.set(id, { details: { type: "new", to: [], cc: [], bcc: [], subject: "", body: "<p>Hallo</p>", isPlainText: false, from: "Peter Meier <peter.meier@musterstadt.de>", ...details }, attachments });
      return { id, type: "messageCompose", windowId: 100 + id };
    },
    addFolder(id, specialUse = []) {
      const f = { id, name: id, specialUse, subFolders: [] };
      folders.push(f);
      return f;
    },
    deliver(folderId, raw, extra = {}) {
      const id = nextId++;
      const header = {
        id,
        folder: { id: folderId },
        subject: headerOf(raw, "Subject"),
        author: headerOf(raw, "From"),
        headerMessageId: headerOf(raw, "Message-ID").replace(/^<|>$/g, ""),
        size: raw.length,
        tags: [],
        ...extra,
      };
      messages.set(id, { header, raw });
      return header;
    },
  };
  return m;
}

export const quietLog = { info() {}, warn() {}, error() {}, debug() {} };
