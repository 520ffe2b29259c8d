/*
 * An Office.js stand-in for tests: the subset of the Outlook mailbox API the add-in
 * uses, with Office's calling conventions (optional options object before the callback,
 * callbacks always asynchronous, AsyncResult {status, value, error, asyncContext},
 * string enum values as in office.js) and the failures Outlook reports (duplicate or
 * unknown categories, over-long notifications, bad header names).
 *
 * The fixture comes from globalThis.__OUTLOOK_FIXTURE (set before this script runs) or
 * from Office.__test.load(fixture). Everything the add-in writes is observable in
 * Office.__test.state and Office.__test.log.
 */
(function (g) {
  "use strict";
  var log = [];
  var state;
  var handlers = { item: {}, mailbox: {} };
  var associated = {};

  function clone(x) { return x === undefined ? undefined : JSON.parse(JSON.stringify(x)); }

  function reset(fx) {
    fx = fx || {};
    state = {
      mode: fx.mode || "compose",
      displayLanguage: fx.displayLanguage || "de-DE",
      mailboxVersion: fx.mailboxVersion || "1.14",
      userProfile: fx.userProfile || { emailAddress: "sachbearbeiter@stadt.de", displayName: "Sachbearbeiter" },
      from: fx.from === undefined ? { emailAddress: "sachbearbeiter@stadt.de", displayName: "Sachbearbeiter" } : fx.from,
      to: clone(fx.to || []),
      cc: clone(fx.cc || []),
      bcc: clone(fx.bcc || []),
      subject: fx.subject || "",
      headers: clone(fx.headers || {}),
      allHeaders: fx.allHeaders || "",
      body: fx.body || "",
      attachments: clone(fx.attachments || []),
      // The whole message as base64 (getAsFileAsync, Mailbox 1.14); absent: not offered.
      eml: fx.eml,
      categories: clone(fx.categories || []),
      masterCategories: clone(fx.masterCategories || []),
      notifications: {},
      failures: clone(fx.failures || {}),
    };
    log.length = 0;
    handlers = { item: {}, mailbox: {} };
  }

  function result(ok, value, error, ctx) {
    return ok
      ? { status: "succeeded", value: value, error: null, asyncContext: ctx }
      : { status: "failed", value: undefined, error: error, asyncContext: ctx };
  }

  /** Office signature: (args…, [options], callback). Runs fn(args) → {ok, value, error}. */
  function api(name, nargs, fn) {
    return function () {
      var a = Array.prototype.slice.call(arguments);
      // Required arguments come first; a callback is only what follows them.
      var cb = a.length > nargs && typeof a[a.length - 1] === "function" ? a.pop() : null;
      var opts = a.length > nargs && a[a.length - 1] && typeof a[a.length - 1] === "object" ? a.pop() : {};
      var ctx = opts && opts.asyncContext;
      log.push({ api: name, args: clone(a) });
      var out;
      if (state.failures[name]) out = { ok: false, error: { name: state.failures[name], code: state.failures[name], message: name + " failed" } };
      else {
        try { out = fn.apply(null, a); } catch (e) { out = { ok: false, error: { name: "GenericResponseError", code: 9020, message: String(e.message) } }; }
      }
      if (cb) setTimeout(function () { cb(result(out.ok, out.value, out.error, ctx)); }, 0);
    };
  }
  function ok(v) { return { ok: true, value: v }; }
  function fail(name, message) { return { ok: false, error: { name: name, code: name, message: message } }; }

  function recipients(field) {
    return {
      getAsync: api(field + ".getAsync", 0, function () { return ok(clone(state[field])); }),
      setAsync: api(field + ".setAsync", 1, function (list) { state[field] = normalise(list); fire("olkRecipientsChanged", { changedRecipientFields: field }); return ok(); }),
      addAsync: api(field + ".addAsync", 1, function (list) { state[field] = state[field].concat(normalise(list)); fire("olkRecipientsChanged", {}); return ok(); }),
    };
  }
  function normalise(list) {
    return (list || []).map(function (r) {
      return typeof r === "string" ? { emailAddress: r, displayName: r, recipientType: "other" } : r;
    });
  }
  function findHeader(name) {
    var n = String(name).toLowerCase();
    return Object.keys(state.headers).filter(function (k) { return k.toLowerCase() === n; })[0];
  }
  var HEADER_NAME = /^[\x21-\x39\x3b-\x7e]+$/;

  function fire(type, args) {
    var hs = handlers.item[type] || [];
    hs.forEach(function (h) { setTimeout(function () { h(Object.assign({ type: type }, args || {})); }, 0); });
  }

  var CategoryColor = {};
  for (var i = 0; i <= 24; i++) CategoryColor["Preset" + i] = "Preset" + i;
  CategoryColor.None = "None";

  function composeItem() {
    return {
      itemType: "message",
      from: { getAsync: api("from.getAsync", 0, function () { return state.from ? ok(clone(state.from)) : fail("GenericResponseError", "no from"); }) },
      to: recipients("to"),
      cc: recipients("cc"),
      bcc: recipients("bcc"),
      subject: {
        getAsync: api("subject.getAsync", 0, function () { return ok(state.subject); }),
        setAsync: api("subject.setAsync", 1, function (s) { state.subject = String(s); return ok(); }),
      },
      internetHeaders: {
        getAsync: api("internetHeaders.getAsync", 1, function (names) {
          var out = {};
          (names || []).forEach(function (n) { var k = findHeader(n); if (k !== undefined) out[n] = state.headers[k]; });
          return ok(out);
        }),
        setAsync: api("internetHeaders.setAsync", 1, function (obj) {
          var keys = Object.keys(obj || {});
          for (var j = 0; j < keys.length; j++) if (!HEADER_NAME.test(keys[j])) return fail("InvalidHeaderName", keys[j]);
          keys.forEach(function (k) { var old = findHeader(k); if (old !== undefined) delete state.headers[old]; state.headers[k] = String(obj[k]); });
          return ok();
        }),
        removeAsync: api("internetHeaders.removeAsync", 1, function (names) {
          (names || []).forEach(function (n) { var k = findHeader(n); if (k !== undefined) delete state.headers[k]; });
          return ok();
        }),
      },
      body: {
        getAsync: api("body.getAsync", 1, function () { return ok(state.body); }),
      },
      getAttachmentsAsync: api("getAttachmentsAsync", 0, function () { return ok(clone(state.attachments)); }),
      notificationMessages: notifications(),
      addHandlerAsync: api("item.addHandlerAsync", 2, function (type, h) { (handlers.item[type] = handlers.item[type] || []).push(h); return ok(); }),
    };
  }

  function notifications() {
    return {
      replaceAsync: api("notificationMessages.replaceAsync", 2, function (key, msg) {
        if (!msg || typeof msg.message !== "string" || msg.message.length > 150) return fail("DataExceedsMaximumSize", "message longer than 150 characters");
        if (msg.type === "informationalMessage" && (!msg.icon || msg.persistent === undefined)) return fail("InvalidParameter", "icon and persistent required");
        state.notifications[key] = clone(msg);
        return ok();
      }),
      removeAsync: api("notificationMessages.removeAsync", 1, function (key) {
        if (!(key in state.notifications)) return fail("KeyNotFound", key);
        delete state.notifications[key];
        return ok();
      }),
      getAllAsync: api("notificationMessages.getAllAsync", 0, function () {
        return ok(Object.keys(state.notifications).map(function (k) { return Object.assign({ key: k }, state.notifications[k]); }));
      }),
    };
  }

  function readItem() {
    var item = {
      itemType: "message",
      getAllInternetHeadersAsync: api("getAllInternetHeadersAsync", 0, function () { return ok(state.allHeaders); }),
      categories: {
        getAsync: api("categories.getAsync", 0, function () {
          return ok(state.categories.map(function (n) {
            var m = state.masterCategories.filter(function (c) { return c.displayName === n; })[0];
            return { displayName: n, color: m ? m.color : "None" };
          }));
        }),
        addAsync: api("categories.addAsync", 1, function (names) {
          for (var j = 0; j < names.length; j++) {
            if (!state.masterCategories.some(function (c) { return c.displayName === names[j]; })) return fail("InvalidCategory", names[j] + " is not in the master list");
          }
          names.forEach(function (n) { if (state.categories.indexOf(n) < 0) state.categories.push(n); });
          return ok();
        }),
      },
      notificationMessages: notifications(),
    };
    if (state.eml !== undefined) item.getAsFileAsync = api("getAsFileAsync", 0, function () { return ok(state.eml); });
    return item;
  }

  var mailbox = {
    masterCategories: {
      getAsync: api("masterCategories.getAsync", 0, function () { return ok(clone(state.masterCategories)); }),
      addAsync: api("masterCategories.addAsync", 1, function (cats) {
        for (var j = 0; j < cats.length; j++) {
          if (!(cats[j].color in CategoryColor)) return fail("InvalidParameter", "bad colour " + cats[j].color);
          var name = cats[j].displayName;
          if (state.masterCategories.some(function (c) { return c.displayName === name; })) return fail("DuplicateCategory", name);
        }
        cats.forEach(function (c) { state.masterCategories.push({ displayName: c.displayName, color: c.color }); });
        return ok();
      }),
    },
    addHandlerAsync: api("mailbox.addHandlerAsync", 2, function (type, h) { (handlers.mailbox[type] = handlers.mailbox[type] || []).push(h); return ok(); }),
  };
  Object.defineProperty(mailbox, "userProfile", { get: function () { return state.userProfile; }, enumerable: true });

  var cachedItem = null;
  var cachedMode = null;
  Object.defineProperty(mailbox, "item", {
    enumerable: true,
    get: function () {
      if (cachedMode !== state.mode) { cachedItem = state.mode === "read" ? readItem() : composeItem(); cachedMode = state.mode; }
      return cachedItem;
    },
  });

  function versionAtLeast(have, want) {
    var a = String(have).split(".").map(Number);
    var b = String(want).split(".").map(Number);
    return a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);
  }

  var context = {
    mailbox: mailbox,
    requirements: { isSetSupported: function (name, v) { return name === "Mailbox" && versionAtLeast(state.mailboxVersion, v || "1.1"); } },
  };
  Object.defineProperty(context, "displayLanguage", { get: function () { return state.displayLanguage; }, enumerable: true });

  var Office = {
    context: context,
    AsyncResultStatus: { Succeeded: "succeeded", Failed: "failed" },
    EventType: { RecipientsChanged: "olkRecipientsChanged", ItemChanged: "olkItemSelectedChanged" },
    MailboxEnums: {
      CategoryColor: CategoryColor,
      ItemNotificationMessageType: { ProgressIndicator: "progressIndicator", InformationalMessage: "informationalMessage", ErrorMessage: "errorMessage", InsightMessage: "insightMessage" },
      SendModeOverride: { PromptUser: "promptUser" },
      RecipientType: { DistributionList: "distributionList", User: "user", ExternalUser: "externalUser", Other: "other" },
    },
    actions: { associate: function (name, fn) { associated[name] = fn; } },
    onReady: function (cb) {
      var info = { host: "Outlook", platform: "OfficeOnline" };
      return new Promise(function (resolve) {
        setTimeout(function () { if (cb) cb(info); resolve(info); }, 0);
      });
    },
    __test: {
      load: reset,
      get state() { return state; },
      log: log,
      associated: associated,
      /** A launch event as Outlook passes it; resolves when the add-in calls completed(). */
      event: function (type) {
        var ev = { type: type, completedWith: undefined, completedCount: 0 };
        ev.done = new Promise(function (resolve) {
          ev.completed = function (opts) { ev.completedCount++; ev.completedWith = opts === undefined ? null : clone(opts); resolve(ev.completedWith); };
        });
        return ev;
      },
      setRecipients: function (field, list) { state[field] = normalise(list); fire("olkRecipientsChanged", { changedRecipientFields: field }); },
    },
  };
  reset(g.__OUTLOOK_FIXTURE);
  g.Office = Office;
})(typeof globalThis !== "undefined" ? globalThis : this);
