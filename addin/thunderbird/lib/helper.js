// @ts-check
// Client of the local De-Mail helper (docs/protocol.md, protocol version 1, /v1/ on
// loopback): envelopes {ok, result} / {ok:false, error:{code, message, message_en,
// details}}, a bearer token from pairing, discovery through the native-messaging host.

const TIMEOUT_MS = 4000;
// The helper's deadline when it does not tell (api.request_timeout's default), seconds.
const DEFAULT_DEADLINE_S = 60;

export class HelperError extends Error {
  constructor(code, message, message_en, status, details) {
    super(message_en || message || code);
    this.code = code;
    this.message_de = message || "";
    this.message_en = message_en || "";
    this.status = status || 0;
    this.details = details || null;
  }

  /**
   * True when the helper could not take the message at all (not running, not paired,
   * its store unavailable): the IT policy for an unreachable helper applies. False
   * when the helper refused this message (blocked, too large, …): show its reason.
   */
  get unavailable() {
    if (this.code.startsWith("helper.") || this.code.startsWith("auth.")) return true;
    return this.status === 0 || this.status >= 500 || this.status === 401 || this.status === 408 || this.status === 429;
  }
}

export class HelperClient {
  /**
   * @param {object} p
   * @param {object} p.messenger the WebExtension API (runtime.sendNativeMessage, storage)
   * @param {Function} p.fetch fetch implementation
   * @param {object} p.settings merged settings values (helper_discovery, helper_url, helper_native_host)
   * @param {string} [p.token] provisioned token (IT) — otherwise read from storage.local
   */
  constructor({ messenger, fetch, settings, token }) {
    this.messenger = messenger;
    this.fetch = fetch;
    this.settings = settings;
    this.provisionedToken = token || null;
    this.baseUrl = null;
    this.deadlineS = null; // the helper's own deadline per request (request_timeout)
  }

  /** Where the helper listens: native host first (auto/native), else the configured URL. */
  async discover() {
    const mode = this.settings.helper_discovery;
    if (mode === "auto" || mode === "native") {
      try {
        const r = await this.messenger.runtime.sendNativeMessage(this.settings.helper_native_host, { action: "discover" });
        if (r && r.ok && r.result && r.result.url) {
          this.baseUrl = r.result.url;
          if (r.result.request_timeout) this.deadlineS = Number(r.result.request_timeout);
          return this.baseUrl;
        }
        if (mode === "native") throw new HelperError(r?.error?.code || "helper.not_running", r?.error?.message, r?.error?.message_en);
      } catch (e) {
        if (mode === "native") throw e instanceof HelperError ? e : new HelperError("helper.native_host", "", String(e?.message || e));
      }
    }
    this.baseUrl = this.settings.helper_url;
    return this.baseUrl;
  }

  async token() {
    if (this.provisionedToken) return this.provisionedToken;
    const s = await this.messenger.storage.local.get("helperToken");
    return s.helperToken || null;
  }

  async request(method, path, body, { auth = true, timeout = TIMEOUT_MS, contentType = "application/json", raw = false } = {}) {
    if (!this.baseUrl) await this.discover();
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = contentType;
    if (auth) {
      const t = await this.token();
      if (!t) throw new HelperError("helper.not_paired", "", "The add-in is not paired with the helper.");
      headers.Authorization = `Bearer ${t}`;
    }
    const ctl = typeof AbortController !== "undefined" ? new AbortController() : null;
    const timer = ctl ? setTimeout(() => ctl.abort(), timeout) : null;
    let resp;
    try {
      resp = await this.fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
        signal: ctl?.signal,
      });
    } catch (e) {
      throw new HelperError("helper.unreachable", "", String(e?.message || e));
    } finally {
      if (timer) clearTimeout(timer);
    }
    if (raw && resp.ok) return new Uint8Array(await resp.arrayBuffer());
    let json = null;
    try {
      json = await resp.json();
    } catch {
      throw new HelperError("helper.protocol", "", `HTTP ${resp.status} without JSON`, resp.status);
    }
    if (!json || json.ok !== true) {
      const e = json?.error || {};
      if (auth && e.code === "auth.invalid" && !this.provisionedToken) await this.forgetToken();
      throw new HelperError(e.code || `http.${resp.status}`, e.message, e.message_en, resp.status, e.details);
    }
    return json.result;
  }

  /**
   * The stored token expired or was revoked: forget it, so the add-in pairs again (native
   * host, else the guided page; see lib/addin.js).
   */
  async forgetToken() {
    await this.messenger.storage.local.remove(["helperToken", "helperPairing", "pairAttemptAt", "firstRunShown"]);
  }

  health() {
    return this.request("GET", "/v1/health", undefined, { auth: false, timeout: 1500 });
  }

  /**
   * Pairing (protocol §3): native auto-approval when IT allows it, else the interactive
   * route: POST /v1/pairing gives a code the user approves in the helper; the token
   * is stored at once and becomes valid with the approval (pairingStatus polls).
   */
  async pair(client = "Thunderbird De-Mail-Add-in") {
    try {
      const r = await this.messenger.runtime.sendNativeMessage(this.settings.helper_native_host, { action: "pair", client });
      if (r && r.ok && r.result?.token) {
        await this.messenger.storage.local.set({ helperToken: r.result.token });
        return { status: r.result.status || "approved", code: null };
      }
    } catch {
      // no native host: fall through
    }
    // The id lets the user see in the helper's window which add-in asks.
    const body = { client, ...(this.messenger.runtime?.id ? { addon_id: this.messenger.runtime.id } : {}) };
    const r = await this.request("POST", "/v1/pairing", body, { auth: false });
    await this.messenger.storage.local.set({ helperToken: r.token, helperPairing: { id: r.pairing_id, code: r.code, expires_at: r.expires_at } });
    return { status: r.status, code: r.code, hint: r.approve_hint, expiresAt: r.expires_at };
  }

  /** {pairing_id, client, status}; throws auth.invalid once denied, revoked or expired. */
  pairingStatus() {
    return this.request("GET", "/v1/pairing");
  }

  /** The helper's deadline per request in seconds (native `discover`, else GET /v1/health). */
  async deadline() {
    if (!this.deadlineS) {
      const h = await this.health().catch(() => null);
      this.deadlineS = Number(h?.request_timeout) || DEFAULT_DEADLINE_S;
    }
    return this.deadlineS;
  }

  /**
   * Hand a De-Mail over; resolves once the helper has stored it durably ("accepted").
   * `message.message_id` makes it one De-Mail however often it is sent (docs/protocol.md,
   * idempotency). The add-in waits longer than the helper's own deadline, so it does not
   * give up on an answer still coming; after a 408 or a lost answer the message may be
   * stored already, so it is sent once more with the same id: the helper answers with the
   * stored entry or stores it now, never a second De-Mail.
   */
  async submit(message) {
    const timeout = ((await this.deadline()) + 10) * 1000;
    try {
      return await this.request("POST", "/v1/messages", message, { timeout });
    } catch (e) {
      const lost = e instanceof HelperError && (e.status === 408 || (e.status === 0 && e.code === "helper.unreachable"));
      if (!lost || !message.message_id) throw e;
      return await this.request("POST", "/v1/messages", message, { timeout });
    }
  }

  /** The stored message exactly as it goes to the gateway (bytes), for the Sent folder. */
  outboxRaw(id) {
    return this.request("GET", `/v1/outbox/${encodeURIComponent(id)}/raw`, undefined, { raw: true });
  }

  journal(privateId) {
    return this.request("GET", `/v1/journal?private_id=${encodeURIComponent(privateId)}`);
  }
}
