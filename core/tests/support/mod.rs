//! Shared by the table-driven tests: where the fixtures are, and how an expected
//! JSON value is compared with an actual one. `tests/node/match.mjs` implements the
//! same rule for the wasm runs, so both sides judge by one definition.

#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Expected ⊆ actual: object keys in `expected` must match (extra actual keys are
/// fine); arrays must have the same length and match element-wise; scalars equal.
pub fn matches(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => matches(ev, av, &format!("{path}.{k}"), out),
                    None if ev.is_null() => {}
                    None => out.push(format!("{path}.{k}: missing, expected {ev}")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!("{path}: expected {} items {expected}, got {} items {actual}", e.len(), a.len()));
                return;
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                matches(ev, av, &format!("{path}[{i}]"), out);
            }
        }
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: expected {e}, got {a}")),
    }
}
