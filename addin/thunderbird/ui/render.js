// @ts-check
// DOM rendering of the compose view (popup and dialog). Text only via textContent.
import { t } from "./i18n.js";

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}
export { el };

export function modeBadge(mode) {
  const label = { none: t("modeNone"), demail: t("modeDemail"), conflict: t("modeConflict") }[mode] || mode;
  return el("span", { class: `badge ${mode}`, id: "mode", "data-mode": mode, text: label });
}

export function renderExplanation(box, explanation) {
  box.replaceChildren();
  for (const r of explanation) {
    box.append(el("p", { class: `explain ${r.severity}`, "data-code": r.code, text: r.text }));
  }
  if (!explanation.length) box.append(el("p", { class: "explain info", "data-code": "email", text: t("explainEmail") }));
}

export function renderGroups(box, groups) {
  box.replaceChildren();
  const part = (key, title) => {
    const list = groups[key] || [];
    const h = el("h2", { id: `grp-${key}-h`, text: `${title} (${list.length})` });
    const body = list.length
      ? el("ul", { "aria-labelledby": `grp-${key}-h`, "data-group": key }, ...list.map((r) => el("li", { text: r.name ? `${r.name} <${r.address}>` : r.address })))
      : el("p", { class: "empty", "data-group": key, text: t("groupEmpty") });
    box.append(h, body);
  };
  part("demail", t("groupDemail"));
  part("internal", t("groupInternal"));
  part("external", t("groupExternal"));
}

export function renderFixes(box, fixes, onFix) {
  box.replaceChildren();
  for (const f of fixes) {
    box.append(el("button", { type: "button", class: f.id === "remove-demail" ? "" : "primary", "data-fix": f.id, text: f.label, onclick: () => onFix(f.id) }));
  }
}

export function renderOptions(box, options, onChange) {
  box.replaceChildren();
  for (const o of options) {
    const id = `opt-${o.id}`;
    const whyId = `${id}-why`;
    const input = el("input", {
      type: "checkbox", id, "data-option": o.id, "data-locked": o.locked ? "1" : null,
      checked: o.checked, disabled: o.disabled || o.locked,
      "aria-describedby": o.reason ? whyId : null,
      onchange: onChange,
    });
    input.checked = o.checked;
    const row = el("div", { class: `opt${o.disabled ? " disabled" : ""}${o.locked ? " locked" : ""}` },
      input, el("label", { for: id, text: o.label }));
    if (o.reason) row.append(el("span", { class: "why", id: whyId, text: o.reason }));
    box.append(row);
  }
}
