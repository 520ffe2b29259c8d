//! Table-driven cases: every `tests/cases/*.json` is run through `api::call`.
//!
//! File format (language-neutral; `tests/node` runs the same files against wasm):
//!
//! ```json
//! { "policy": null | "<TOML policy>",
//!   "cases": [ { "name": "...", "op": "<api op>", "input": <json>,
//!                "expect": <subset of the result>            // or
//!                "error": "<code of the expected Err>" } ] }
//! ```
//!
//! `expect` is compared with `support::matches` (expected ⊆ actual). All failures
//! are collected and reported together; zero cases run is a failure too.

mod support;

use demail_core::api::{self, Env};
use serde_json::Value;
use std::collections::BTreeSet;

const CASE_KEYS: [&str; 6] = ["name", "op", "input", "expect", "error", "note"];

fn env() -> Env {
    Env { now_millis: 1_795_775_532_000, entropy: vec![7; 16] }
}

/// Runs one case; returns the problems found (empty = pass).
fn run_case(policy: &demail_core::Policy, case: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(obj) = case.as_object() else {
        return vec!["case is not an object".into()];
    };
    for k in obj.keys() {
        if !CASE_KEYS.contains(&k.as_str()) {
            problems.push(format!("unknown case key {k:?}"));
        }
    }
    let Some(op) = obj.get("op").and_then(Value::as_str) else {
        problems.push("missing \"op\"".into());
        return problems;
    };
    let input = obj.get("input").cloned().unwrap_or(Value::Null);
    let expect = obj.get("expect");
    let error = obj.get("error").map(|e| e.as_str().map(str::to_string).ok_or(e.clone()));
    match (expect, &error) {
        (Some(_), Some(_)) => problems.push("has both \"expect\" and \"error\"".into()),
        (None, None) => problems.push("has neither \"expect\" nor \"error\"".into()),
        _ => {}
    }
    if !problems.is_empty() {
        return problems;
    }
    let out = api::call(op, policy, &input, &env());
    match (out, error) {
        (Ok(actual), None) => {
            support::matches(expect.expect("checked above"), &actual, "$", &mut problems);
            if !problems.is_empty() {
                problems.push(format!("actual: {actual}"));
            }
        }
        (Ok(actual), Some(code)) => {
            problems.push(format!("expected error {code:?}, got Ok: {actual}"));
        }
        (Err(e), None) => problems.push(format!("expected Ok, got error {}: {}", e.reason.code, e.reason.message_en)),
        (Err(e), Some(Ok(code))) => {
            if e.reason.code != code {
                problems.push(format!("expected error {code:?}, got {:?}: {}", e.reason.code, e.reason.message_en));
            }
        }
        (Err(_), Some(Err(v))) => problems.push(format!("\"error\" must be a string, got {v}")),
    }
    problems
}

#[test]
fn table_driven_cases() {
    let dir = support::repo_root().join("tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();

    let mut failures: Vec<String> = Vec::new();
    let mut total = 0usize;
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{file}: unreadable: {e}"));
                continue;
            }
        };
        let doc: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{file}: invalid JSON: {e}"));
                continue;
            }
        };
        let policy_src = match doc.get("policy") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                failures.push(format!("{file}: \"policy\" must be null or a string, got {other}"));
                continue;
            }
        };
        let policy = match api::load_policy(policy_src) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{file}: policy does not load: {} {}", e.reason.code, e.reason.message_en));
                continue;
            }
        };
        let Some(cases) = doc.get("cases").and_then(Value::as_array) else {
            failures.push(format!("{file}: no \"cases\" array"));
            continue;
        };
        let mut names = BTreeSet::new();
        let mut ran = 0usize;
        for (i, case) in cases.iter().enumerate() {
            let name = case.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let label = format!("{file} #{i} {name:?}");
            if name.is_empty() {
                failures.push(format!("{label}: missing \"name\""));
            } else if !names.insert(name.clone()) {
                failures.push(format!("{label}: duplicate name"));
            }
            let problems = run_case(&policy, case);
            if !problems.is_empty() {
                failures.push(format!("{label}:\n    {}", problems.join("\n    ")));
            }
            ran += 1;
        }
        eprintln!("cases: {file}: {ran} cases");
        if ran == 0 {
            failures.push(format!("{file}: zero cases"));
        }
        total += ran;
    }
    eprintln!("cases: {total} cases in {} files", files.len());
    assert!(total > 0, "the case runner ran zero cases (looked in {})", dir.display());
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
}
