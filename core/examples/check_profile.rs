//! Profiling aid: runs the 500-recipient send check through the JSON boundary N times
//! (for valgrind --tool=callgrind). Run: cargo run --release --example check_profile -- 50
use demail_core::api::{call_json, Env};
use demail_core::{OptionSet, Policy};
fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let to: Vec<String> = (0..500)
        .map(|i| match i % 3 {
            0 => format!("Bürger {i} <buerger{i}@buerger.de-mail.de>"),
            1 => format!("kollege{i}@musterstadt.de"),
            _ => format!("\"Extern, Nr. {i}\" <extern{i}@example.org>"),
        })
        .collect();
    let input = demail_core::check::CheckInput {
        from: "peter.meier@musterstadt.de".into(),
        to,
        options: OptionSet::parse_ids(["private"]).expect("ids"),
        ..Default::default()
    };
    let input = serde_json::to_string(&input).expect("json");
    let policy = serde_json::to_string(&Policy::default()).expect("json");
    let env = Env::default();
    for _ in 0..n {
        std::hint::black_box(call_json("check", Some(&policy), &input, &env));
    }
}
