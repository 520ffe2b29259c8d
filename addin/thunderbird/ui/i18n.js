// @ts-check
// Fill elements carrying data-i18n / data-i18n-aria / data-i18n-placeholder with the
// add-in's locale texts (_locales/de is the default, _locales/en the second).
export function t(key, subs) {
  return browser.i18n.getMessage(key, subs) || key;
}
export function localize(root = document) {
  for (const el of /** @type {NodeListOf<HTMLElement>} */ (root.querySelectorAll("[data-i18n]"))) el.textContent = t(el.dataset.i18n);
  for (const el of /** @type {NodeListOf<HTMLElement>} */ (root.querySelectorAll("[data-i18n-aria]"))) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  for (const el of /** @type {NodeListOf<HTMLElement>} */ (root.querySelectorAll("[data-i18n-placeholder]"))) el.setAttribute("placeholder", t(el.dataset.i18nPlaceholder));
  document.documentElement.lang = browser.i18n.getUILanguage().startsWith("en") ? "en" : "de";
}
export async function send(type, data = {}) {
  const r = await browser.runtime.sendMessage({ type, ...data });
  if (!r || !r.ok) throw new Error(r?.error || "no answer");
  return r.result;
}
