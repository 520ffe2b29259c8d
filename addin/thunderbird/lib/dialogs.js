// @ts-check
// The dialog window after Send (blocked, confirm, helper unreachable). The window asks
// the background for its view by id (dialog.get) and answers with dialog.answer.

const DIALOG_SIZE = { width: 560, height: 460 };

/** @param {object} ctx the add-in's shared context (lib/addin.js) */
export function createDialogs(ctx) {
  const { messenger, log } = ctx;
  const open = new Map(); // dialogId -> {kind, tabId, view, resolve, windowId}
  let nextId = 1;

  /** Open a dialog; `answered` resolves with the answer, or null when it closes unanswered. */
  async function show(kind, tabId, view, extra = {}) {
    const id = nextId++;
    /** @type {(answer: any) => void} */
    let resolve = () => {};
    const answered = new Promise((r) => (resolve = r));
    open.set(id, { kind, tabId, view, resolve, ...extra });
    try {
      const w = await messenger.windows.create({ type: "popup", url: `dialog/dialog.html?id=${id}`, ...DIALOG_SIZE });
      if (open.has(id)) open.get(id).windowId = w?.id;
    } catch (e) {
      log.error?.("demail: dialog", e);
      resolve(null);
    }
    return { id, answered };
  }

  function closeFor(tabId) {
    for (const [id, d] of open) {
      if (d.tabId === tabId) {
        d.resolve(null);
        if (d.windowId) messenger.windows.remove(d.windowId).catch(() => {});
        open.delete(id);
      }
    }
  }

  /** What dialog.get returns; null for an unknown id. */
  function get(id) {
    const d = open.get(id);
    return d ? { kind: d.kind, tabId: d.tabId, view: d.view } : null;
  }

  function answer(id, value) {
    const d = open.get(id);
    if (d) {
      d.resolve(value);
      open.delete(id);
    }
  }

  /** A fix applied from the dialog: the dialog shows the new state. */
  function setView(id, view) {
    if (open.has(id)) open.get(id).view = view;
  }

  return { open, show, closeFor, get, answer, setView };
}
