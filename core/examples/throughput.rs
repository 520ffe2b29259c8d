//! Native peer for `tests/node/bench.mjs`: the same workloads as the wasm benchmark,
//! timed the same way, printed as JSON so the script can compute the ratio.
//! Run: cargo run --release -p demail-core --example throughput -- tests/corpus

use demail_core::check::check;
use demail_core::classify::classify_raw;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

#[path = "../benches/workload.rs"]
mod workload;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "tests/corpus".into());
    let (policy, msgs) = workload::corpus(Path::new(&dir));

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
    let input = workload::recipients(500);
    let start = Instant::now();
    let mut k = 0u64;
    while start.elapsed().as_secs_f64() < 2.0 {
        black_box(check(black_box(&input), &policy));
        k += 1;
    }
    let check500_ms = start.elapsed().as_secs_f64() * 1000.0 / k as f64;

    // The same through the JSON boundary, as the add-in calls it: the wasm module
    // keeps the parsed policy between calls, so this does too.
    let input_json = serde_json::to_string(&input).expect("input serialises");
    let env = demail_core::api::Env::default();
    let start = Instant::now();
    let mut k = 0u64;
    while start.elapsed().as_secs_f64() < 2.0 {
        black_box(demail_core::api::call_str("check", black_box(&policy), &input_json, &env));
        k += 1;
    }
    let check500_json_ms = start.elapsed().as_secs_f64() * 1000.0 / k as f64;
    println!(
        "{{\"messages\": {}, \"classify_per_s\": {classify_per_s:.1}, \"check500_ms\": {check500_ms:.4}, \"check500_json_ms\": {check500_json_ms:.4}}}",
        msgs.len()
    );
}
