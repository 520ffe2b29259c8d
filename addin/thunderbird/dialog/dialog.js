// @ts-check
// The dialog after Send: "blocked" (with one-click fixes), "confirm" (send anyway?)
// and "helper" (De-Mail could not be handed to the helper). The compose window stays
// open and intact behind it.
import { localize, send, t } from "../ui/i18n.js";
import { el, renderExplanation, renderFixes, renderGroups } from "../ui/render.js";

const id = Number(new URLSearchParams(location.search).get("id"));
let d = null;

function render() {
  const v = d.view;
  document.body.dataset.kind = d.kind;
  document.getElementById("heading").textContent = t({ blocked: "dialogBlockedHeading", confirm: "dialogConfirmHeading", helper: "dialogHelperHeading" }[d.kind]);
  renderExplanation(document.getElementById("explanation"), v.explanation);
  renderFixes(document.getElementById("fixes"), d.kind === "blocked" ? v.fixes : [], fix);
  renderGroups(document.getElementById("groups"), v.groups);
  const b = document.getElementById("buttons");
  b.replaceChildren();
  if (d.kind === "confirm") {
    b.append(
      el("button", { type: "button", class: "primary", id: "btn-send", text: t("dialogSendAnyway"), onclick: () => answer("send") }),
      el("button", { type: "button", id: "btn-cancel", text: t("dialogBack"), onclick: () => answer("cancel") }),
    );
  } else {
    b.append(el("button", { type: "button", id: "btn-close", text: t("dialogBack"), onclick: () => answer("close") }));
  }
  document.body.dataset.ready = "1";
  /** @type {HTMLElement|null} */ (document.querySelector("#fixes button") || document.querySelector("#buttons button"))?.focus();
}

async function fix(fixId) {
  const v = await send("compose.fix", { tabId: d.tabId, fix: fixId, dialogId: id });
  d.view = { ...v, fixes: [] };
  render();
  document.getElementById("after").textContent = t("dialogFixed");
}

async function answer(a) {
  await send("dialog.answer", { id, answer: a });
  window.close();
}

async function main() {
  localize();
  d = await send("dialog.get", { id });
  render();
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") answer(d.kind === "confirm" ? "cancel" : "close"); });
  window.addEventListener("beforeunload", () => { browser.runtime.sendMessage({ type: "dialog.answer", id, answer: "cancel" }); });
}

main().catch((e) => { document.getElementById("explanation").textContent = String(e.message || e); });
