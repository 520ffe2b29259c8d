//! Native peer for `tests/node/bench.mjs`: the same workloads as the wasm benchmark,
//! timed the same way, printed as JSON so the script can compute the ratio.
//! Run: cargo run --release -p demail-core --example throughput -- tests/corpus

use demail_core::check::{check, CheckInput};
use demail_core::classify::classify_raw;
use demail_core::{OptionSet, Policy};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

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

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "tests/corpus".into());
    let root = Path::new(&dir);
    let policy = Policy::from_toml(&std::fs::read_to_string(root.join("policy.toml")).expect("policy")).expect("valid");
    let mut msgs = Vec::new();
    walk(root, &mut msgs);

    // Classification: repeat the corpus for at least 2 s.
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < 2.0 {
        for m in &msgs {
            black_box(classify_raw(black_box(m), &policy));
            n += 1;
        }
    }
    let classify_per_s = n as f64 / start.elapsed().as_secs_f64();

    // Send check with 500 recipients.
    let to: Vec<String> = (0..500)
        .map(|i| match i % 3 {
            0 => format!("Bürger {i} <buerger{i}@buerger.de-mail.de>"),
            1 => format!("kollege{i}@musterstadt.de"),
            _ => format!("\"Extern, Nr. {i}\" <extern{i}@example.org>"),
        })
        .collect();
    let input = CheckInput {
        from: "peter.meier@musterstadt.de".into(),
        to,
        options: OptionSet::parse_ids(["private", "confirmation-of-dispatch"]).expect("ids"),
        size: Some(50_000),
        ..Default::default()
    };
    let start = Instant::now();
    let mut k = 0u64;
    while start.elapsed().as_secs_f64() < 2.0 {
        black_box(check(black_box(&input), &policy));
        k += 1;
    }
    let check500_ms = start.elapsed().as_secs_f64() * 1000.0 / k as f64;

    // The same through the JSON boundary, as the add-in calls it.
    let policy_json = serde_json::to_string(&policy).expect("policy serialises");
    let input_json = serde_json::to_string(&input).expect("input serialises");
    let env = demail_core::api::Env::default();
    let start = Instant::now();
    let mut k = 0u64;
    while start.elapsed().as_secs_f64() < 2.0 {
        black_box(demail_core::api::call_json("check", Some(black_box(&policy_json)), &input_json, &env));
        k += 1;
    }
    let check500_json_ms = start.elapsed().as_secs_f64() * 1000.0 / k as f64;
    println!(
        "{{\"messages\": {}, \"classify_per_s\": {classify_per_s:.1}, \"check500_ms\": {check500_ms:.4}, \"check500_json_ms\": {check500_json_ms:.4}}}",
        msgs.len()
    );
}
