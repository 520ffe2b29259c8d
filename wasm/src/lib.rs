//! Thin wasm-bindgen layer over `demail_core::api`: strings in, JSON envelopes out.
//!
//! Every export returns `{"ok":true,"result":…}` or `{"ok":false,"error":{…}}`;
//! errors never cross the boundary as exceptions. Clock and entropy come from
//! the JS caller, because the core does no I/O.

use demail_core::api::{self, ApiError, Env};
use demail_core::Policy;
use std::cell::RefCell;
use wasm_bindgen::prelude::*;

thread_local! {
    // The add-in passes the same policy text on every call; parse it once.
    static POLICY: RefCell<Option<(String, Policy)>> = const { RefCell::new(None) };
}

#[cfg(all(feature = "host-idn", target_arch = "wasm32"))]
mod host_idn {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_name = URL)]
        type Url;
        #[wasm_bindgen(constructor, catch, js_class = "URL")]
        fn new(url: &str) -> Result<Url, JsValue>;
        #[wasm_bindgen(method, getter)]
        fn hostname(this: &Url) -> String;
    }

    /// WHATWG domain to ASCII; the core makes the strict checks on top.
    fn to_ascii(domain: &str) -> Option<String> {
        Url::new(&format!("http://{domain}/")).ok().map(|u| u.hostname())
    }

    pub fn register() {
        demail_core::idn::set_host_to_ascii(to_ascii);
    }
}

fn with_policy(src: &str, f: impl FnOnce(&Policy) -> String) -> String {
    // Before the policy: its domains go through the IDN codec too.
    #[cfg(all(feature = "host-idn", target_arch = "wasm32"))]
    host_idn::register();
    POLICY.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(s, _)| s.as_str()) != Some(src) {
            match api::load_policy(Some(src)) {
                Ok(p) => *slot = Some((src.to_string(), p)),
                Err(e) => return api::envelope(Err(e)),
            }
        }
        match slot.as_ref() {
            Some((_, p)) => f(p),
            None => api::envelope(Err(ApiError::from(demail_core::Reason::new(
                "internal",
                "Interner Fehler.",
                "Internal error.",
            )))),
        }
    })
}

/// Core version.
#[wasm_bindgen]
pub fn version() -> String {
    demail_core::VERSION.to_string()
}

/// Run a core operation (see docs/core-api.md). `policy` is TOML or JSON text; empty means built-in defaults.
#[wasm_bindgen]
pub fn call(op: &str, policy: &str, input_json: &str, now_millis: f64, entropy: &[u8]) -> String {
    let env = Env { now_millis: now_millis.max(0.0) as u64, entropy: entropy.to_vec() };
    with_policy(policy, |p| api::call_str(op, p, input_json, &env))
}

/// Classify raw message bytes (which need not be UTF-8).
#[wasm_bindgen]
pub fn classify_raw(policy: &str, raw: &[u8]) -> String {
    with_policy(policy, |p| api::envelope(Ok(api::Output::Classification(demail_core::classify::classify_raw(raw, p)))))
}

/// `integrity.prepare` on raw message bytes: everything but the public-key checks, which
/// it lists for WebCrypto (docs/core-api.md). Bytes, not JSON: a 10 MB De-Mail.
#[wasm_bindgen]
pub fn integrity_prepare_raw(policy: &str, raw: &[u8], now_millis: f64) -> String {
    let now = now_millis.max(0.0) as u64;
    with_policy(policy, |p| api::envelope(Ok(api::Output::IntegrityPrepared(api::integrity_prepare(raw, p, now)))))
}

/// `integrity.verify` on raw bytes with the checks' outcomes (one byte each, 1 = verified),
/// in the order `integrity_prepare_raw` listed them. It prepares again (no state between
/// the calls): the hash of the body is done twice, within the 10 MB goal.
#[wasm_bindgen]
pub fn integrity_verify_raw(policy: &str, raw: &[u8], now_millis: f64, results: &[u8]) -> String {
    let now = now_millis.max(0.0) as u64;
    let results: Vec<bool> = results.iter().map(|&r| r != 0).collect();
    with_policy(policy, |p| {
        api::envelope(api::integrity_verify(raw, p, now, Some(&results)).map(api::Output::Integrity))
    })
}
