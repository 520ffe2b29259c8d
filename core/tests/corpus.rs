//! The fixture corpus: every `tests/corpus/**/NAME.eml` is classified and compared
//! with `NAME.json` next to it (see `support::matches`). Fails when it ran zero cases.
//! `tests/corpus/integrity/` holds integrity fixtures instead (written by its gen.py, an
//! independent implementation): each is verified under that directory's policy at the
//! runners' fixed time and compared with its JSON.

mod support;

use demail_core::classify::classify_raw;
use demail_core::Policy;
use std::path::Path;

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("corpus dir readable") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(p);
        }
    }
}

#[test]
fn corpus_matches_expected_json() {
    let root = support::repo_root().join("tests/corpus");
    let policy_src = std::fs::read_to_string(root.join("policy.toml")).expect("tests/corpus/policy.toml");
    let policy = Policy::from_toml(&policy_src).expect("corpus policy valid");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.retain(|f| !f.starts_with(root.join("integrity")));
    files.sort();
    let mut failures = Vec::new();
    let mut ran = 0;
    for eml in &files {
        let raw = std::fs::read(eml).expect("read eml");
        let expected_path = eml.with_extension("json");
        let Ok(text) = std::fs::read_to_string(&expected_path) else {
            failures.push(format!("{}: no expected .json next to it", eml.display()));
            continue;
        };
        let expected: serde_json::Value = serde_json::from_str(&text).expect("expected json parses");
        let actual = serde_json::to_value(classify_raw(&raw, &policy)).expect("serialisable");
        let mut diffs = Vec::new();
        support::matches(&expected, &actual, "$", &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{}:\n  {}\n  actual: {actual}", eml.display(), diffs.join("\n  ")));
        }
        ran += 1;
    }
    assert!(ran > 0, "the corpus runner ran zero cases");
    eprintln!("corpus: {ran} messages checked");
    assert!(failures.is_empty(), "{} of {ran} corpus cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn integrity_fixtures_match_expected_json() {
    let root = support::repo_root().join("tests/corpus/integrity");
    let policy_src = std::fs::read_to_string(root.join("policy.toml")).expect("integrity policy");
    let policy = Policy::from_toml(&policy_src).expect("integrity policy valid");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut failures = Vec::new();
    for eml in &files {
        let raw = std::fs::read(eml).expect("read eml");
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(eml.with_extension("json")).expect("json")).expect("parses");
        let now = 1_795_775_532_000;
        let verdict = demail_core::api::integrity_verify(&raw, &policy, now, None).expect("verdict");
        // The add-in's way: the checks' results passed in (the second call does not hash the
        // body again) must give the same verdict.
        let results: Vec<bool> =
            demail_core::api::integrity_prepare(&raw, &policy, now).checks.iter().map(demail_core::cert::run).collect();
        let given = demail_core::api::integrity_verify(&raw, &policy, now, Some(&results)).expect("verdict");
        assert_eq!(given, verdict, "{}", eml.display());
        let actual = serde_json::to_value(verdict).expect("serialisable");
        let mut diffs = Vec::new();
        support::matches(&expected, &actual, "$", &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{}:\n  {}\n  actual: {actual}", eml.display(), diffs.join("\n  ")));
        }
    }
    assert!(files.len() >= 20, "integrity fixtures missing");
    assert!(
        failures.is_empty(),
        "{} of {} integrity fixtures failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
