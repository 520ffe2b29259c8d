// @ts-check
// Compose popup: options, Nachrichten-Kennung, recipients by kind, the core's
// explanation. Every change goes to the background, which asks the core.
import { localize, send } from "../ui/i18n.js";
import { modeBadge, renderExplanation, renderFixes, renderGroups, renderOptions } from "../ui/render.js";

/** An input field of the popup (checkbox or text). */
const field = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));

let tabId = null;
let busy = false;

let lastJson = "";

function render(v) {
  const json = JSON.stringify(v);
  if (json === lastJson) return;
  lastJson = json;
  const focus = document.activeElement?.id;
  document.getElementById("mode-slot").replaceChildren(modeBadge(v.mode));
  document.body.dataset.mode = v.mode;
  document.body.dataset.verdict = v.verdict;
  const pp = document.getElementById("policy-problem");
  pp.hidden = !v.policyProblem;
  pp.textContent = v.policyProblem || "";
  renderExplanation(document.getElementById("explanation"), v.explanation);
  renderFixes(document.getElementById("fixes"), v.fixes, fix);
  renderOptions(document.getElementById("options"), v.options, changed);
  field("marked").checked = v.marked || v.options.some((o) => o.checked);
  field("marked").disabled = v.options.some((o) => o.checked);
  const pid = field("private-id");
  if (document.activeElement !== pid) pid.value = v.privateId;
  renderGroups(document.getElementById("groups"), v.groups);
  // When the caseworker first saw a verdict (epoch ms), for the benchmark.
  if (!document.body.dataset.ready) document.body.dataset.firstVerdictAt = String(Date.now());
  document.body.dataset.ready = "1";
  if (focus && document.activeElement?.id !== focus) document.getElementById(focus)?.focus();
}

function current() {
  const options = [.../** @type {NodeListOf<HTMLInputElement>} */ (document.querySelectorAll("#options input[data-option]"))].filter((i) => i.checked && (!i.disabled || i.dataset.locked === "1")).map((i) => i.dataset.option);
  return { options, marked: field("marked").checked, privateId: field("private-id").value };
}

let pending = null;

/**
 * Send the popup's state as the user left it. Changes made while a request is in
 * flight are collected and sent next; only the answer to the latest state is rendered
 * (so a quick second click is never undone by the first answer).
 */
async function changed() {
  pending = current();
  if (busy) return;
  busy = true;
  try {
    while (pending) {
      const changes = pending;
      pending = null;
      const v = await send("compose.set", { tabId, changes });
      if (!pending) render(v);
    }
  } finally {
    busy = false;
  }
}

async function fix(id) {
  render(await send("compose.fix", { tabId, fix: id }));
}

async function main() {
  localize();
  const [tab] = await browser.tabs.query({ active: true, currentWindow: true });
  tabId = tab.id;
  field("marked").addEventListener("change", changed);
  let t = null;
  field("private-id").addEventListener("input", () => { clearTimeout(t); t = setTimeout(changed, 300); });
  document.getElementById("form").addEventListener("submit", (e) => e.preventDefault());
  render(await send("compose.state", { tabId }));
  // Recipients may change while the popup is open.
  setInterval(async () => { if (!busy) render(await send("compose.state", { tabId })); }, 1500);
}

main().catch((e) => {
  document.getElementById("explanation").textContent = String(e.message || e);
});
