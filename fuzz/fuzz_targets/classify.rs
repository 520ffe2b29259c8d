#![no_main]
//! Classification of arbitrary bytes never panics.
use demail_core::classify::classify_raw;
use demail_core::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = classify_raw(data, &Policy::default());
});
