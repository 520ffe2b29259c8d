// Message display script: a banner above a De-Mail, a receipt or a notification.
// The background classifies the displayed message with the core and sends the data.
(async () => {
  const t = (k, s) => browser.i18n.getMessage(k, s) || k;
  let r;
  try {
    r = await browser.runtime.sendMessage({ type: "display.info" });
  } catch {
    return;
  }
  const info = r && r.ok ? r.result : null;
  if (!info || document.getElementById("demail-banner")) return;

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
  const row = (label, value, key) => el("div", { class: "demail-row", "data-field": key }, el("dt", { text: label }), el("dd", { text: value }));

  const b = el("aside", { id: "demail-banner", class: `demail-banner demail-${info.kind}`, role: "note", "aria-label": info.labels.title, "data-kind": info.kind });
  b.append(el("strong", { class: "demail-title", text: info.labels.title }));
  const dl = el("dl");
  if (info.kind === "demail") {
    dl.append(row(t("bannerOptions"), info.labels.options.length ? info.labels.options.join(", ") : t("bannerNoOptions"), "options"));
    if (info.labels.authLevel) dl.append(row(t("bannerAuthLevel"), info.labels.authLevel, "auth-level"));
  }
  if (info.labels.sealWarning) b.append(el("p", { class: "demail-seal-warning", "data-field": "seal", text: info.labels.sealWarning }));
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
    const box = el("section", { class: "demail-timeline", "data-field": "timeline", "data-status": info.timeline.status, "aria-label": t("bannerTimeline") });
    box.append(el("strong", { text: `${t("bannerTimeline")}: ${info.labels.timelineStatus}` }));
    const ol = el("ol");
    for (const st of info.labels.timeline) {
      const when = st.done ? (st.time ? new Date(st.time).toLocaleString() : "✓") : t("timelinePending");
      ol.append(el("li", { "data-step": st.type, "data-done": st.done ? "1" : "0", class: st.done ? "done" : "pending", text: `${st.label}: ${when}` }));
    }
    box.append(ol);
    b.append(box);
  }
  if (info.original) {
    const a = el("button", { type: "button", class: "demail-link", "data-field": "open-original", text: t("bannerOpenOriginal", [info.original.subject || ""]) });
    a.addEventListener("click", () => browser.runtime.sendMessage({ type: "display.open", messageId: info.original.id }));
    b.append(a);
  }
  for (const w of info.labels.warnings || []) b.append(el("p", { class: "demail-warning", text: w }));
  document.body.prepend(b);
})();
