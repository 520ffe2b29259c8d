#![no_main]
//! The core's JSON boundary (what the add-in, the helper and the CLI call) with any
//! operation and any input: never a panic, and always one JSON envelope back.
use demail_core::api::{call_json, Env, OPS};
use libfuzzer_sys::fuzz_target;

/// A policy with mapping, groups and seal keys, so that more code paths run.
const POLICY: &str = r#"
[organisation]
internal_domains = ["stadt.de"]
[authorization]
default = "deny"
[[authorization.groups]]
name = "Bauamt"
members = ["*@stadt.de"]
options = ["private", "confirmation-of-dispatch"]
[mapping]
catch_all = "sammel@stadt.de"
domains = [{ demail = "stadt.de-mail.de", email = "stadt.de" }]
"#;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Ok(input) = std::str::from_utf8(rest) else { return };
    let op = OPS[sel as usize % OPS.len()];
    let policy = if sel & 0x80 != 0 { Some(POLICY) } else { None };
    let env = Env { now_millis: 1_795_775_532_000, entropy: vec![7; 8] };
    let out = call_json(op, policy, input, &env);
    let v: serde_json::Value = serde_json::from_str(&out).expect("the envelope is JSON");
    assert!(v.get("ok").and_then(|o| o.as_bool()).is_some(), "no ok field: {out}");
});
