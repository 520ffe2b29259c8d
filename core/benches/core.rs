//! Native throughput of the core (criterion). `tests/node/bench.mjs` runs the same
//! workloads in wasm against `examples/throughput.rs` and prints the ratio.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use demail_core::check::check;
use demail_core::classify::classify_raw;
use std::hint::black_box;
use std::path::PathBuf;

mod workload;

fn bench(c: &mut Criterion) {
    let (policy, msgs) = workload::corpus(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus"));
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
    let input = workload::recipients(500);
    c.bench_function("check_500_recipients", |b| b.iter(|| black_box(check(black_box(&input), &policy))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
