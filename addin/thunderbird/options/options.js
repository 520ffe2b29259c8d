// @ts-check
// Options page: the settings the user may change; settings IT locked are shown
// read-only with the reason.
import { localize, send, t } from "../ui/i18n.js";
import { el } from "../ui/render.js";

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
  document.getElementById("policy-source").textContent = t({ managed: "policyFromManaged", helper: "policyFromHelper" }[s.policySource] || "policyBuiltin");
  document.getElementById("policy-source").dataset.source = s.policySource || "builtin";
  const pp = document.getElementById("policy-problem");
  pp.hidden = !s.policyProblem;
  pp.textContent = s.policyProblem ? t("policyProblem", [s.policyProblem]) : "";
  const box = document.getElementById("default-options");
  box.replaceChildren();
  const lockedDefaults = s.locked.includes("default_options");
  // The options, their order and labels come from the core, through the background.
  for (const { id, label } of s.options) {
    const input = el("input", { type: "checkbox", id: `def-${id}`, "data-option": id });
    input.checked = s.values.default_options.includes(id);
    input.disabled = lockedDefaults;
    input.addEventListener("change", save);
    box.append(el("div", { class: "opt" }, input, el("label", { for: `def-${id}`, text: label })));
  }
  if (lockedDefaults) box.append(el("p", { class: "locked", text: t("setLocked") }));
  for (const input of /** @type {NodeListOf<HTMLInputElement>} */ (document.querySelectorAll("[data-key]"))) {
    const key = input.dataset.key;
    if (input.type === "checkbox") input.checked = Boolean(s.values[key]);
    else input.value = s.values[key];
    markLocked(input, s.locked.includes(key));
  }
}

async function save() {
  const changes = { default_options: [.../** @type {NodeListOf<HTMLInputElement>} */ (document.querySelectorAll("#default-options input:checked"))].map((i) => i.dataset.option) };
  for (const input of /** @type {NodeListOf<HTMLInputElement>} */ (document.querySelectorAll("[data-key]"))) {
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

function pair() {
  return startPairing();
}

// Guided pairing: request, show the code, poll until the user approved it in the
// helper (tray or `demail pair approve CODE`), or it was refused or expired.
let polling = null;
async function startPairing() {
  const status = document.getElementById("pair-status");
  const code = document.getElementById("pair-code");
  const section = document.getElementById("pairing");
  section.hidden = false;
  section.dataset.state = "requesting";
  clearTimeout(polling);
  const r = await browser.runtime.sendMessage({ type: "helper.pair" });
  if (!r.ok) {
    section.dataset.state = "failed";
    status.textContent = t("helperPairFailed", [r.text || r.error]);
    return;
  }
  if (r.result.status === "approved") return paired();
  section.dataset.state = "waiting";
  document.getElementById("pair-start").hidden = true;
  code.textContent = r.result.code;
  status.textContent = t("pairWaiting", [r.result.code]);
  const poll = async () => {
    const p = await browser.runtime.sendMessage({ type: "helper.pairStatus" }).catch(() => null);
    if (p?.ok && p.result.status === "approved") return paired();
    if (p?.ok && p.result.status === "denied") {
      section.dataset.state = "denied";
      document.getElementById("pair-start").hidden = false;
      code.textContent = "";
      status.textContent = t("pairDenied");
      document.getElementById("pair-start").focus();
      return;
    }
    polling = setTimeout(poll, 1000);
  };
  polling = setTimeout(poll, 1000);
}

async function paired() {
  const section = document.getElementById("pairing");
  section.dataset.state = "paired";
  document.getElementById("pair-start").hidden = true;
  document.getElementById("pair-code").textContent = "";
  document.getElementById("pair-status").textContent = t("pairDone");
  render(await send("settings.get"));
  helperStatus().catch(() => {});
}

async function main() {
  localize();
  render(await send("settings.get"));
  document.getElementById("pair-start").addEventListener("click", startPairing);
  for (const input of /** @type {NodeListOf<HTMLInputElement>} */ (document.querySelectorAll("[data-key]"))) input.addEventListener("change", save);
  document.getElementById("check-helper").addEventListener("click", helperStatus);
  document.getElementById("pair").addEventListener("click", pair);
  document.getElementById("form").addEventListener("submit", (e) => e.preventDefault());
  const st = await send("helper.status").catch(() => null);
  if (st && st.reachable && !st.paired) {
    document.getElementById("pairing").hidden = false;
    // First run (opened by the add-in): ask right away; otherwise on the button.
    if (new URLSearchParams(location.search).get("firstrun") === "1") startPairing();
    else document.getElementById("pair-start").focus();
  }
}
main();
