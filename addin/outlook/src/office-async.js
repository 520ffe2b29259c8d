// @ts-check
// Office.js callback APIs as promises. A failed AsyncResult becomes an Error carrying
// Office's error code, so callers can show a German message and keep going.

export function officeAsync(target, method, ...args) {
  return new Promise((resolve, reject) => {
    if (!target || typeof target[method] !== "function") {
      reject(Object.assign(new Error(`Office API ${method} is not available`), { code: "office.unavailable" }));
      return;
    }
    target[method](...args, (res) => {
      if (res && res.status === "succeeded") resolve(res.value);
      else {
        const err = res && res.error ? res.error : {};
        reject(Object.assign(new Error(err.message || `${method} failed`), { code: err.code || err.name || "office.failed" }));
      }
    });
  });
}

/** EmailAddressDetails[] → plain addresses (the core needs nothing else). */
export function addressesOf(list) {
  return (list || []).map((r) => (r && r.emailAddress ? String(r.emailAddress) : "")).filter((a) => a.trim() !== "");
}

/** The sender: item.from (Mailbox 1.7), else the signed-in user's address. */
export async function senderAddress(office, item) {
  try {
    const f = await officeAsync(item.from, "getAsync");
    if (f && f.emailAddress) return String(f.emailAddress);
  } catch (e) {
    // older clients: fall through to the mailbox owner
  }
  const p = office.context.mailbox.userProfile;
  return p && p.emailAddress ? String(p.emailAddress) : "";
}
