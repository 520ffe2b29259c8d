#![no_main]
//! The seal canonicaliser and verifier on any header block: never a panic, and the
//! canonical form of what it parsed is stable (canonicalising twice gives the same).
use demail_core::seal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields = seal::header_fields(data);
    let c = seal::canonical(&fields, "gw1");
    assert_eq!(c, seal::canonical(&fields, "gw1"));
    for v in seal::seal_values(&fields) {
        let _ = seal::parse_header(v);
    }
    let key = seal::public_key("gw1", &[9; 32]);
    let _ = seal::verify(data, std::slice::from_ref(&key), true);
});
