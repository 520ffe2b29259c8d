//! Gateway seal fixtures: every `tests/seal/NAME.eml` is verified with `seal.verify`
//! under `tests/seal/policy.toml` and compared with `NAME.json`; where the JSON holds
//! `canonical` (written by an independent implementation, tests/seal/gen.py), the
//! core's `seal.canonical` must produce exactly that text. Plus `[seal]` policy errors.

mod support;

use demail_core::api::{call, Env};
use demail_core::Policy;
use serde_json::{json, Value};

fn fixtures() -> (Policy, Vec<(String, Vec<u8>, Value)>) {
    let dir = support::repo_root().join("tests/seal");
    let policy = Policy::parse(&std::fs::read_to_string(dir.join("policy.toml")).unwrap()).unwrap();
    let mut v = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "eml") {
            let expected: Value =
                serde_json::from_str(&std::fs::read_to_string(p.with_extension("json")).unwrap()).unwrap();
            v.push((p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap(), expected));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(v.len() >= 10, "seal fixtures missing");
    (policy, v)
}

#[cfg(feature = "seal-verify")]
#[test]
fn seal_fixtures_verify_as_expected() {
    let (policy, cases) = fixtures();
    let mut failures = Vec::new();
    for (name, raw, expected) in &cases {
        let mut expected = expected.clone();
        expected.as_object_mut().unwrap().remove("canonical");
        let input = Value::String(String::from_utf8_lossy(raw).to_string());
        let actual = call("seal.verify", &policy, &input, &Env::default()).unwrap();
        let mut diffs = Vec::new();
        support::matches(&expected, &actual, "$", &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{name}: {}\n  actual: {actual}", diffs.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn canonical_form_matches_the_independent_implementation() {
    let (policy, cases) = fixtures();
    let mut ran = 0;
    for (name, raw, expected) in &cases {
        let input = Value::String(String::from_utf8_lossy(raw).to_string());
        let out = call("seal.canonical", &policy, &input, &Env::default()).unwrap();
        if let Some(c) = expected.get("canonical") {
            assert_eq!(&out["canonical"], c, "{name}");
            assert_eq!(out["seal"]["kid"], "gw-test", "{name}");
            assert!(out["public_key"].as_str().unwrap().starts_with("gw-test:"));
            ran += 1;
        }
    }
    assert!(ran >= 2);
    let none = call("seal.canonical", &policy, &json!("From: a@b.de\r\n\r\n"), &Env::default()).unwrap();
    assert_eq!(none["code"], "seal.missing");
    assert_eq!(none["canonical"], Value::Null);
}

#[test]
fn seal_policy_errors_name_code_line_and_field() {
    let key = "gw-test:iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=";
    // (policy source, expected code, expected line when TOML)
    let cases: [(String, &str, Option<usize>); 6] = [
        (
            format!("version = 1\n[seal]\npublic_keys = [\"{key}\", \"gw-test:AAAA\"]\n"),
            "policy.seal_key_invalid",
            Some(3),
        ),
        ("version = 1\n\n[seal]\npublic_keys = [\"keinDoppelpunkt\"]\n".into(), "policy.seal_key_invalid", Some(4)),
        ("version = 1\n[seal]\npublic_keys = [\"gw test:AAAA\"]\n".into(), "policy.seal_key_invalid", Some(3)),
        ("version = 1\n[seal]\nrequired = true\n".into(), "policy.seal_no_keys", None),
        (format!("version = 1\n[seal]\npublic_keys = [\"{key}\", \"{key}\"]\n"), "policy.seal_duplicate_kid", Some(3)),
        ("version = 1\n[seal]\nrequire = true\n".into(), "policy.unknown_field", Some(3)),
    ];
    for (src, code, line) in &cases {
        let e = Policy::parse(src).unwrap_err();
        assert_eq!(e.reason.code, *code, "{src}: {e:?}");
        if let Some(l) = line {
            assert_eq!(e.line, Some(*l), "{src}: {e:?}");
        }
        assert!(
            e.field
                .as_deref()
                .is_some_and(|f| f.contains("seal") || f.contains("public_keys") || f.contains("require")),
            "{src}: {e:?}"
        );
        assert!(!e.reason.message.contains('\u{1f}'), "{e:?}");
    }
    // JSON: same codes, with a line.
    let e = Policy::parse("{\n \"seal\": {\n  \"public_keys\": [\"gw:zz\"]\n }\n}").unwrap_err();
    assert_eq!(e.reason.code, "policy.seal_key_invalid");
    assert_eq!(e.line, Some(3));
    let ok = Policy::parse(&format!("{{\"seal\": {{\"public_keys\": [\"{key}\"], \"required\": true}}}}")).unwrap();
    assert!(ok.seal.required && ok.seal.public_keys[0].kid == "gw-test");
    // An unset [seal] leaves the policy output as it was.
    let plain = demail_core::api::policy_check("version = 1\n");
    assert!(serde_json::to_value(&plain).unwrap()["policy"].get("seal").is_none());
}
