// @ts-check
/*
 * On-send protection for Outlook (Smart Alerts, OnMessageSend, Mailbox 1.12) and an early
 * warning when recipients change (OnMessageRecipientsChanged, Mailbox 1.11).
 *
 * Classic Outlook on Windows runs this file in a JavaScript-only runtime that supports
 * ES2016 and no WebAssembly, so it must stay ES2016 (no async/await, no object spread,
 * no optional chaining; tests/outlook checks it with acorn) and use the core's own send
 * check translated to plain JS by wasm2js (DemailCoreJs, prepended by scripts/build-outlook).
 * No De-Mail rule lives here: the verdict, the reasons and their texts come from the core.
 */
/* global Office, DemailCoreJs, DEMAIL_POLICY */
var DemailSend = (function () {
  "use strict";

  var INTERNAL = {
    code: "internal",
    message: "Die De-Mail-Prüfung ist fehlgeschlagen; die Nachricht wurde vorsichtshalber angehalten. Bitte wenden Sie sich an Ihre IT.",
    message_en: "The De-Mail check failed; the message was held back to be safe. Please contact your IT department.",
  };
  var OPEN_PANE = { de: "De-Mail-Bereich öffnen", en: "Open De-Mail pane" };
  var NOTICE_KEY = "demail-check";
  // Outlook's limits: Smart Alerts dialog text and notification bar text.
  var MAX_ALERT = 500;
  var MAX_NOTICE = 150;

  // DEMAIL_POLICY: the organisation's policy as JSON, from policy.js (scripts/build-outlook).
  function policyText() {
    return typeof DEMAIL_POLICY === "string" ? DEMAIL_POLICY : "";
  }

  function entropy() {
    var b = new Uint8Array(16);
    var c = typeof crypto !== "undefined" ? crypto : null;
    if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    return b;
  }

  /** Run a core operation; a trap becomes the stable code "internal". */
  function core(op, input) {
    var out;
    try {
      out = JSON.parse(DemailCoreJs.call(op, policyText(), JSON.stringify(input), Date.now(), entropy()));
    } catch (e) {
      return { ok: false, error: { code: INTERNAL.code, message: INTERNAL.message, message_en: INTERNAL.message_en, detail: String(e && e.message || e) } };
    }
    return out;
  }

  function unwrap(res) {
    if (!res || !res.ok) {
      throw Object.assign(new Error("core: " + (res && res.error && res.error.code)), { reason: res && res.error });
    }
    return res.result;
  }

  var optionIds = null;
  /** The option ids in UI order, from the core's option table (`version`). */
  function options() {
    if (!optionIds) optionIds = unwrap(core("version", null)).options.map(function (o) { return o.id; });
    return optionIds;
  }

  var headerNames = null;
  /** Every X-de-mail-* name the add-in can write, from the core. */
  function demailHeaderNames() {
    if (!headerNames) {
      headerNames = unwrap(core("headers", { options: options(), private_id: "x" })).headers.map(function (h) { return h.name; });
    }
    return headerNames;
  }

  function officeAsync(target, method, args) {
    return new Promise(function (resolve, reject) {
      if (!target || typeof target[method] !== "function") {
        reject(new Error("Office API " + method + " unavailable"));
        return;
      }
      var a = (args || []).slice();
      a.push(function (res) {
        if (res && res.status === "succeeded") resolve(res.value);
        else reject(new Error(res && res.error && res.error.message || method + " failed"));
      });
      target[method].apply(target, a);
    });
  }

  function addresses(list) {
    var out = [];
    (list || []).forEach(function (r) {
      if (r && r.emailAddress && String(r.emailAddress).trim() !== "") out.push(String(r.emailAddress));
    });
    return out;
  }

  function optional(p, fallback) {
    return p.then(null, function () { return fallback; });
  }

  /** The send check's input from the item being sent. */
  function gather(office) {
    var item = office.context.mailbox.item;
    var profile = office.context.mailbox.userProfile;
    var from = optional(officeAsync(item.from, "getAsync"), null).then(function (f) {
      return f && f.emailAddress ? String(f.emailAddress) : profile && profile.emailAddress ? String(profile.emailAddress) : "";
    });
    var to = officeAsync(item.to, "getAsync");
    var cc = officeAsync(item.cc, "getAsync");
    var bcc = optional(officeAsync(item.bcc, "getAsync"), []);
    var subject = optional(officeAsync(item.subject, "getAsync"), "");
    var headers = optional(officeAsync(item.internetHeaders, "getAsync", [demailHeaderNames()]), {});
    return Promise.all([from, to, cc, bcc, subject, headers]).then(function (v) {
      return buildInput({ from: v[0], to: addresses(v[1]), cc: addresses(v[2]), bcc: addresses(v[3]), subject: v[4], headers: v[5] });
    });
  }

  /** UTF-8 length without TextEncoder (the handler's runtime has none). */
  function utf8Length(text) {
    return unescape(encodeURIComponent(String(text || ""))).length;
  }

  /**
   * Rough wire size, as the Thunderbird add-in estimates it (addin/thunderbird/lib/compose.js
   * estimateSize; a test holds both equal): headers, body, attachments base64-encoded.
   */
  function estimateSize(body, attachments) {
    var n = 2048 + utf8Length(body);
    (attachments || []).forEach(function (a) { n += Math.ceil(((a && a.size || 0) * 4) / 3) + 256; });
    return n;
  }

  /** The message's size: its body (HTML) and attachments (Mailbox 1.8); null when unknown. */
  function messageSize(office) {
    var item = office.context.mailbox.item;
    var html = office.CoercionType && office.CoercionType.Html ? office.CoercionType.Html : "html";
    var body = officeAsync(item.body, "getAsync", [html]);
    var attachments = officeAsync(item, "getAttachmentsAsync");
    return Promise.all([body, attachments]).then(function (v) { return estimateSize(v[0], v[1]); }, function () { return null; });
  }

  /**
   * The core's verdict on the item; for a message to De-Mail recipients with its size too
   * (the size limit is a De-Mail limit, so only then are body and attachments read).
   */
  function checkItem(office) {
    return gather(office).then(function (input) {
      var first = unwrap(core("check", input));
      if (!first.demail_recipients || !first.demail_recipients.length) return first;
      return messageSize(office).then(function (size) {
        if (size === null) return first;
        return unwrap(core("check", Object.assign({}, input, { size: size })));
      });
    });
  }

  /** Plain values → the core's check input; header and subject reading is the core's. */
  function buildInput(p) {
    var chosen = [];
    var marked = false;
    var privateId = null;
    var pairs = Object.keys(p.headers || {}).map(function (k) { return [k, String(p.headers[k])]; });
    if (pairs.length) {
      var c = unwrap(core("classify.headers", { headers: pairs }));
      chosen = chosen.concat(c.options || []);
      marked = c.kind !== "email";
      privateId = c.private_id || null;
    }
    if (p.subject) {
      var s = unwrap(core("subject.parse", String(p.subject)));
      chosen = chosen.concat(s.options || []);
      marked = marked || Boolean(s.demail);
    }
    return {
      from: p.from || "",
      to: p.to,
      cc: p.cc,
      bcc: p.bcc,
      options: options().filter(function (o) { return chosen.indexOf(o) >= 0; }),
      marked: marked,
      private_id: privateId,
    };
  }

  function clip(text, max) {
    return text.length <= max ? text : text.slice(0, max - 1) + "…";
  }

  function isGerman(office) {
    var l = office && office.context && office.context.displayLanguage;
    return !(typeof l === "string" && l && !/^de\b/i.test(l));
  }

  /** German first; English after it when it fits (the dialog has room for 500 characters). */
  function alertText(reasons, german) {
    var first = reasons.map(function (r) { return german ? r.message : r.message_en; }).join("\n\n");
    var second = reasons.map(function (r) { return german ? r.message_en : r.message; }).join("\n\n");
    var both = first + "\n\n" + second;
    return both.length <= MAX_ALERT ? both : clip(first, MAX_ALERT);
  }

  /**
   * The core's verdict → Smart Alerts completion. `blocked` stops the message;
   * `confirm` asks (PromptUser, Mailbox 1.14; where unsupported the client blocks).
   */
  function decide(result, german, prompt) {
    var sev = function (s) {
      var list = result.reasons.filter(function (r) { return r.severity === s; });
      return list.length ? list : [INTERNAL];
    };
    if (result.verdict === "blocked") {
      return { allowEvent: false, errorMessage: alertText(sev("block"), german) };
    }
    if (result.verdict === "confirm") {
      var o = { allowEvent: false, errorMessage: alertText(sev("confirm"), german) };
      if (prompt !== undefined) o.sendModeOverride = prompt;
      return o;
    }
    return { allowEvent: true };
  }

  function supports(office, version) {
    var r = office.context && office.context.requirements;
    return Boolean(r && typeof r.isSetSupported === "function" && r.isSetSupported("Mailbox", version));
  }

  function onMessageSend(event, office) {
    office = office || Office;
    var german = isGerman(office);
    return checkItem(office)
      .then(function (result) {
        var d = decide(result, german, office.MailboxEnums && office.MailboxEnums.SendModeOverride ? office.MailboxEnums.SendModeOverride.PromptUser : undefined);
        if (!d.allowEvent && supports(office, "1.14")) {
          d.cancelLabel = german ? OPEN_PANE.de : OPEN_PANE.en;
          d.commandId = "demailComposeButton";
        }
        event.completed(d);
        return d;
      })
      .then(null, function (e) {
        var r = e && e.reason && e.reason.message ? e.reason : INTERNAL;
        var d = { allowEvent: false, errorMessage: alertText([r], german) };
        event.completed(d);
        return d;
      });
  }

  /** Early warning in the notification bar; the send check stays the guard. */
  function onRecipientsChanged(event, office) {
    office = office || Office;
    var german = isGerman(office);
    var item = office.context.mailbox.item;
    var done = function () { event.completed(); };
    return gather(office)
      .then(function (input) {
        var result = unwrap(core("check", input));
        var warn = result.reasons.filter(function (r) { return r.severity === "block" || r.severity === "confirm"; });
        if (!warn.length) return optional(officeAsync(item.notificationMessages, "removeAsync", [NOTICE_KEY]), null).then(function () { return null; });
        var text = clip(german ? warn[0].message : warn[0].message_en, MAX_NOTICE);
        var type = office.MailboxEnums.ItemNotificationMessageType.ErrorMessage;
        return officeAsync(item.notificationMessages, "replaceAsync", [NOTICE_KEY, { type: type, message: text }]).then(function () { return text; });
      })
      .then(function (text) { done(); return text; }, function () { done(); return null; });
  }

  return { onMessageSend: onMessageSend, onRecipientsChanged: onRecipientsChanged, gather: gather, buildInput: buildInput, decide: decide, core: core, demailHeaderNames: demailHeaderNames, options: options, estimateSize: estimateSize };
})();

function onMessageSendHandler(event) {
  DemailSend.onMessageSend(event);
}

function onMessageRecipientsChangedHandler(event) {
  DemailSend.onRecipientsChanged(event);
}

// Event-based activation looks the handlers up by the names in the manifest.
if (typeof Office !== "undefined" && Office.actions && typeof Office.actions.associate === "function") {
  Office.actions.associate("onMessageSendHandler", onMessageSendHandler);
  Office.actions.associate("onMessageRecipientsChangedHandler", onMessageRecipientsChangedHandler);
}
