// @ts-check
// Message display script: a banner above a De-Mail, a receipt or a notification.
// The background classifies the displayed message with the core and sends the data.
//
// The message is written by its sender, so nothing in it may hide or fake the banner:
// the banner is inserted every time (never skipped because the page has some element),
// lives in a closed shadow root with its own styles (page CSS cannot select into it, and
// the page's class names mean nothing there), and is shown in the top layer (a popover),
// above anything the message can position. An in-flow spacer keeps the message's first
// lines below it. Inline `!important` styles on the two elements the page can see win
// over the message's style sheets.
(async () => {
  // The banner's look, inside the shadow root only.
  const CSS = `
  :host { all: initial; }
  .banner { display: block; font: message-box; font-size: 13px; margin: 8px 0 10px; padding: 8px 12px; text-align: start;
    border-left: 6px solid #C2185B; background: #FCE4EC; color: #1f1f1f; border-radius: 4px; box-shadow: 0 1px 3px rgba(0,0,0,.25); }
  .banner.receipt { border-color: #00796B; background: #E0F2F1; }
  .banner.notification, .banner.malware { border-color: #5D4037; background: #EFEBE9; }
  .banner.untrusted { border-color: #B00020; background: #FDECEA; }
  .title { display: block; font-size: 14px; margin-bottom: 4px; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
  dt { font-weight: 600; }
  dd { margin: 0; }
  .row { display: contents; }
  .link { margin-top: 6px; font: inherit; cursor: pointer; }
  .warning { margin: 4px 0 0; color: #8a4b00; font-size: 12px; }
  .seal-warning { margin: 2px 0 4px; font-weight: 600; color: #8B0015; }
  .integrity { margin: 2px 0 4px; font-weight: 600; }
  .integrity.valid { color: #1B5E20; }
  .integrity.warning { color: #8B0015; }
  .timeline { display: block; margin-top: 6px; }
  .timeline ol { margin: 2px 0 0; padding-left: 20px; }
  .timeline li.pending { color: #5f5f5f; }
  .timeline li.done::marker { color: #00796B; }
  .timeline ul.checks { margin: 1px 0 2px; padding-left: 16px; list-style: none; }
  .timeline li.check.ok { color: #00695C; }
  .timeline li.check.warn { color: #8B0015; font-weight: 600; }
  `;

  const t = (k, s) => browser.i18n.getMessage(k, s) || k;
  let r;
  try {
    r = await browser.runtime.sendMessage({ type: "display.info" });
  } catch {
    return;
  }
  const info = r && r.ok ? r.result : null;
  // A banner of ours from an earlier run in this document goes (kept in this script's
  // own global, which the page cannot see).
  globalThis.demailBanner?.remove();
  if (!info) return;

  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of kids) if (c) e.append(c);
    return e;
  };
  const row = (label, value, key) => el("div", { class: "row", "data-field": key }, el("dt", { text: label }), el("dd", { text: value }));

  const b = el("aside", { class: `banner ${info.kind}`, role: "note", "aria-label": info.labels.title, "data-kind": info.kind, "data-demail-banner": "1" });
  b.append(el("strong", { class: "title", text: info.labels.title }));
  const dl = el("dl");
  if (info.kind === "demail") {
    dl.append(row(t("bannerOptions"), info.labels.options.length ? info.labels.options.join(", ") : t("bannerNoOptions"), "options"));
    if (info.labels.authLevel) dl.append(row(t("bannerAuthLevel"), info.labels.authLevel, "auth-level"));
  }
  if (info.labels.sealWarning) b.append(el("p", { class: "seal-warning", "data-field": "seal", text: info.labels.sealWarning }));
  // The provider's signature, in words (with a sign), announced to screen readers.
  const ig = info.labels.integrity;
  if (ig) b.append(el("p", { class: `integrity ${ig.state}`, "data-field": "integrity", "data-state": ig.state, role: "status", text: ig.detail ? `${ig.text} ${ig.detail}` : ig.text }));
  if (info.receipt && info.kind === "receipt") {
    dl.append(row(t("bannerReceiptType"), info.labels.receiptType, "receipt-type"));
    if (info.receipt.originalSubject) dl.append(row(t("bannerConfirms"), info.receipt.originalSubject, "confirms"));
    if (info.receipt.time) dl.append(row(t("bannerTime"), new Date(info.receipt.time).toLocaleString(), "time"));
  }
  if (info.labels.notificationType) dl.append(row(t("bannerNotificationType"), info.labels.notificationType, "notification-type"));
  // What an unconfirmed message claims about itself is not shown as fact.
  if (info.kind !== "untrusted") {
    if (info.privateId) dl.append(row(t("bannerPrivateId"), info.privateId, "private-id"));
    if (info.sender) dl.append(row(t("bannerSender"), info.sender, "sender"));
  }
  b.append(dl);
  if (info.labels.timeline) {
    // A sent De-Mail: its progress from the helper's journal (sent → receipts).
    const box = el("section", { class: "timeline", "data-field": "timeline", "data-status": info.timeline.status, "aria-label": t("bannerTimeline") });
    box.append(el("strong", { text: `${t("bannerTimeline")}: ${info.labels.timelineStatus}` }));
    const ol = el("ol");
    for (const st of info.labels.timeline) {
      const when = st.done ? (st.time ? new Date(st.time).toLocaleString() : "✓") : t("timelinePending");
      const li = el("li", { "data-step": st.type, "data-done": st.done ? "1" : "0", class: st.done ? "done" : "pending", text: `${st.label}: ${when}` });
      // Each receipt's check in words, with a sign beside it (never colour alone).
      if (st.checks?.length) {
        const ul = el("ul", { class: "checks" });
        for (const x of st.checks) ul.append(el("li", { class: `check ${x.counts ? "ok" : "warn"}`, "data-check": x.check, text: `${x.counts ? "✓" : "⚠"} ${x.text}` }));
        li.append(ul);
      }
      ol.append(li);
    }
    box.append(ol);
    b.append(box);
  }
  if (info.original) {
    const a = el("button", { type: "button", class: "link", "data-field": "open-original", text: t("bannerOpenOriginal", [info.original.subject || ""]) });
    a.addEventListener("click", () => browser.runtime.sendMessage({ type: "display.open", messageId: info.original.id }));
    b.append(a);
  }
  for (const w of info.labels.warnings || []) b.append(el("p", { class: "warning", text: w }));

  // What the page can see: two bare elements, styled inline with !important.
  const pin = (e, css) => {
    for (const [k, v] of Object.entries(css)) e.style.setProperty(k, v, "important");
  };
  const BASE = { all: "initial", visibility: "visible", opacity: "1", transform: "none", filter: "none", "clip-path": "none", mask: "none", "pointer-events": "auto", "box-sizing": "border-box" };
  const host = document.createElement("div");
  const root = host.attachShadow({ mode: "closed" });
  const style = document.createElement("style");
  style.textContent = CSS;
  root.append(style, b);
  host.setAttribute("popover", "manual");
  pin(host, { ...BASE, display: "block", position: "absolute", inset: "0 0 auto 0", margin: "0", padding: "0 8px", border: "none", background: "transparent", width: "auto", height: "auto", overflow: "visible", "z-index": "2147483647" });
  const spacer = document.createElement("div");
  pin(spacer, { ...BASE, display: "block", margin: "0", padding: "0", height: "0px" });
  // The host after the body (hiding the body hides the message too); the spacer first in it.
  document.documentElement.append(host);
  (document.body || document.documentElement).prepend(spacer);
  try {
    host.showPopover();
  } catch {
    // Without the Popover API the banner stays an absolutely positioned element on top.
  }
  const fit = () => pin(spacer, { height: `${Math.ceil(host.getBoundingClientRect().height) + 4}px` });
  new ResizeObserver(fit).observe(host);
  fit();
  globalThis.demailBanner = { remove: () => { host.remove(); spacer.remove(); } };
})();
