//! Native throughput of the core. `tests/node/bench.mjs` runs the same workloads in
//! wasm and prints the wasm/native ratio against `examples/throughput.rs`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use demail_core::check::{check, CheckInput};
use demail_core::classify::classify_raw;
use demail_core::{OptionSet, Policy};
use std::hint::black_box;
use std::path::{Path, PathBuf};

fn corpus() -> (Policy, Vec<Vec<u8>>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let policy = Policy::from_toml(&std::fs::read_to_string(root.join("policy.toml")).unwrap()).unwrap();
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else if p.extension().is_some_and(|x| x == "eml") {
                out.push(std::fs::read(&p).unwrap())
            }
        }
    }
    walk(&root, &mut out);
    (policy, out)
}

pub fn recipients(n: usize) -> CheckInput {
    let to = (0..n)
        .map(|i| match i % 3 {
            0 => format!("Bürger {i} <buerger{i}@buerger.de-mail.de>"),
            1 => format!("kollege{i}@musterstadt.de"),
            _ => format!("\"Extern, Nr. {i}\" <extern{i}@example.org>"),
        })
        .collect::<Vec<_>>();
    CheckInput {
        from: "peter.meier@musterstadt.de".into(),
        to,
        options: OptionSet::parse_ids(["private", "confirmation-of-dispatch"]).unwrap(),
        size: Some(50_000),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let (policy, msgs) = corpus();
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("corpus", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(classify_raw(black_box(m), &policy));
            }
        })
    });
    g.finish();
    let input = recipients(500);
    c.bench_function("check_500_recipients", |b| b.iter(|| black_box(check(black_box(&input), &policy))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
