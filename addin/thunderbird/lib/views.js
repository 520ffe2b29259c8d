// @ts-check
// What the compose popup and the send dialog show (texts in the UI language, the core's
// reasons), and the changes the popup sends back: options, marker, Kennung, fixes.

import * as compose from "./compose.js";

const FIX_LABEL_KEYS = { "remove-email": "fixRemoveEmail", "remove-external": "fixRemoveExternal", "remove-demail": "fixRemoveDemail", "clear-options": "fixClearOptions", unmark: "fixUnmark" };

/**
 * @param {object} ctx the add-in's shared context (lib/addin.js)
 * @param {object} tracker compose state (lib/tracker.js)
 */
export function createViews(ctx, tracker) {
  const { messenger } = ctx;

  function optionView(o) {
    // Disabled or locked: the core's own reason (e.g. options.private_implied).
    const reason = o.disabled || o.locked ? ctx.text(o.reason) : null;
    return { id: o.id, label: ctx.optionLabel(o.id), checked: o.checked, disabled: o.disabled, locked: o.locked, reason };
  }

  function view(tabId, st, ev) {
    const { i18n, text } = ctx;
    const reasonView = (r) => ({ code: r.code, severity: r.severity || "info", text: text(r) });
    return {
      tabId,
      mode: ev.mode,
      verdict: ev.result.verdict,
      marked: Boolean(st.marked),
      privateId: st.privateId || "",
      origin: st.origin,
      options: (ev.options || []).map(optionView),
      groups: {
        demail: ev.groups.demail.map((r) => ({ address: r.address, name: r.name || "", field: r.field })),
        internal: (ev.groups.internal || []).map((r) => ({ address: r.address, name: r.name || "", field: r.field })),
        external: (ev.groups.external || []).map((r) => ({ address: r.address, name: r.name || "", field: r.field })),
      },
      explanation: [...ev.blocking, ...ev.confirming, ...ev.info].map(reasonView),
      fixes: ev.fixes.map((id) => ({ id, label: i18n(FIX_LABEL_KEYS[id]) })),
      subjectTags: ev.subject ? { demail: ev.subject.demail, options: ev.subject.options } : null,
      policyProblem: ctx.coreError ? text(ctx.coreError) : null,
      unreachableHelper: ctx.settings.values.unreachable_helper,
    };
  }

  async function composeView(tabId) {
    const { st, ev } = await tracker.evaluateTab(tabId);
    await tracker.updateButton(tabId, ev);
    return view(tabId, st, ev);
  }

  async function composeSet(tabId, changes) {
    const st = await tracker.restoreState(tabId);
    if (Array.isArray(changes.options)) st.options = ctx.optionIds().filter((o) => changes.options.includes(o));
    if (typeof changes.marked === "boolean") st.marked = changes.marked;
    if (typeof changes.privateId === "string") st.privateId = changes.privateId;
    st.touched = true;
    await tracker.saveState(tabId, st);
    return composeView(tabId);
  }

  async function composeFix(tabId, fix) {
    const { st, ev } = await tracker.evaluateTab(tabId, null, { withOptionStates: false });
    const lists = compose.recipientsAfterFix(ev.result, fix);
    if (lists) await messenger.compose.setComposeDetails(tabId, lists);
    if (fix === "clear-options") {
      st.options = [];
      st.marked = false;
      st.touched = true;
      await tracker.saveState(tabId, st);
      // Tags the user typed into the subject are options too: the core strips them.
      if (ev.subject && (ev.subject.options.length || ev.subject.demail) && !ev.subject.errors?.length) {
        await messenger.compose.setComposeDetails(tabId, { subject: ev.subject.subject });
      }
    }
    if (fix === "unmark") {
      st.marked = false;
      st.touched = true;
      await tracker.saveState(tabId, st);
    }
    return composeView(tabId);
  }

  return { view, composeView, composeSet, composeFix };
}
