// Options page: the settings the user may change; settings IT locked are shown
// read-only with the reason.
import { localize, send, t } from "../ui/i18n.js";
import { el } from "../ui/render.js";
import { OPTION_IDS, OPTION_LABEL_KEYS as LABEL } from "../lib/constants.js";

function markLocked(input, locked) {
  input.disabled = locked;
  const id = `${input.id}-locked`;
  document.getElementById(id)?.remove();
  if (locked) {
    const note = el("span", { class: "locked", id, text: ` ${t("setLocked")}` });
    input.setAttribute("aria-describedby", id);
    (input.closest(".opt") || input).after(note);
  }
}

function render(s) {
  document.getElementById("managed").hidden = !s.managed;
  const pp = document.getElementById("policy-problem");
  pp.hidden = !s.policyProblem;
  pp.textContent = s.policyProblem ? t("policyProblem", [s.policyProblem]) : "";
  const box = document.getElementById("default-options");
  box.replaceChildren();
  const lockedDefaults = s.locked.includes("default_options");
  for (const id of OPTION_IDS) {
    const input = el("input", { type: "checkbox", id: `def-${id}`, "data-option": id });
    input.checked = s.values.default_options.includes(id);
    input.disabled = lockedDefaults;
    input.addEventListener("change", save);
    box.append(el("div", { class: "opt" }, input, el("label", { for: `def-${id}`, text: t(LABEL[id]) })));
  }
  if (lockedDefaults) box.append(el("p", { class: "locked", text: t("setLocked") }));
  for (const input of document.querySelectorAll("[data-key]")) {
    const key = input.dataset.key;
    if (input.type === "checkbox") input.checked = Boolean(s.values[key]);
    else input.value = s.values[key];
    markLocked(input, s.locked.includes(key));
  }
}

async function save() {
  const changes = { default_options: [...document.querySelectorAll("#default-options input:checked")].map((i) => i.dataset.option) };
  for (const input of document.querySelectorAll("[data-key]")) {
    if (input.disabled) continue;
    changes[input.dataset.key] = input.type === "checkbox" ? input.checked : input.value;
  }
  const r = await send("settings.set", { changes });
  render(r);
  document.getElementById("saved").textContent = r.refused.length ? t("setRefused", [r.refused.join(", ")]) : t("setSaved");
}

async function helperStatus() {
  const s = await send("helper.status");
  document.getElementById("helper-status").textContent = s.reachable
    ? t(s.paired ? "helperOkPaired" : "helperOkUnpaired", [s.url])
    : t("helperUnreachable", [s.url || "?"]);
}

async function pair() {
  const r = await browser.runtime.sendMessage({ type: "helper.pair" });
  document.getElementById("helper-status").textContent = r.ok
    ? (r.result.code ? t("helperPairCode", [r.result.code]) : t("helperPaired"))
    : t("helperPairFailed", [r.text || r.error]);
}

async function main() {
  localize();
  render(await send("settings.get"));
  for (const input of document.querySelectorAll("[data-key]")) input.addEventListener("change", save);
  document.getElementById("check-helper").addEventListener("click", helperStatus);
  document.getElementById("pair").addEventListener("click", pair);
  document.getElementById("form").addEventListener("submit", (e) => e.preventDefault());
}
main();
