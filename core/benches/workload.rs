//! Workloads shared by the criterion bench and the native peer of tests/node/bench.mjs,
//! so both measure exactly the same thing.

use demail_core::check::CheckInput;
use demail_core::{OptionSet, Policy};
use std::path::Path;

/// The corpus policy and every `.eml` below `dir`, in a stable order.
pub fn corpus(dir: &Path) -> (Policy, Vec<Vec<u8>>) {
    let policy = Policy::from_toml(&std::fs::read_to_string(dir.join("policy.toml")).expect("corpus policy"))
        .expect("corpus policy valid");
    let mut out = Vec::new();
    walk(dir, &mut out);
    (policy, out)
}

fn walk(d: &Path, out: &mut Vec<Vec<u8>>) {
    let mut entries: Vec<_> = std::fs::read_dir(d).expect("corpus dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(std::fs::read(&p).expect("read eml"))
        }
    }
}

/// A send check with `n` recipients: a third each De-Mail, internal, external.
pub fn recipients(n: usize) -> CheckInput {
    let to = (0..n)
        .map(|i| match i % 3 {
            0 => format!("Bürger {i} <buerger{i}@buerger.de-mail.de>"),
            1 => format!("kollege{i}@musterstadt.de"),
            _ => format!("\"Extern, Nr. {i}\" <extern{i}@example.org>"),
        })
        .collect();
    CheckInput {
        from: "peter.meier@musterstadt.de".into(),
        to,
        options: OptionSet::parse_ids(["private", "confirmation-of-dispatch"]).expect("ids"),
        size: Some(50_000),
        ..Default::default()
    }
}
