// @ts-check
// Start-up shared by both panes: wait for Office, load the wasm core with the
// organisation's policy (policy.js, written by scripts/build-outlook), fill static texts.
import { loadCore } from "../../shared/demail-core.js";
import { language, optionLabels, strings } from "./strings.js";

export async function boot() {
  const office = globalThis.Office;
  if (!office) throw new Error("Office.js fehlt / Office.js missing");
  await office.onReady();
  const lang = language(office.context && office.context.displayLanguage);
  const t = strings(lang);
  document.documentElement.lang = lang;
  for (const el of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll("[data-s]"))) el.textContent = t[el.dataset.s] || "";
  const core = await loadCore(typeof globalThis.DEMAIL_POLICY === "string" ? globalThis.DEMAIL_POLICY : "");
  return { office, core, lang, t, labels: optionLabels(core.optionList(), lang) };
}

export function fatal(text) {
  document.getElementById("loading").hidden = true;
  const el = document.getElementById("fatal");
  el.textContent = text;
  el.hidden = false;
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
