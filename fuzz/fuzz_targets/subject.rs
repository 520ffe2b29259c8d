#![no_main]
//! Subject tags: parsing never panics, and formatting what was parsed round-trips.
use demail_core::subject::{format, parse, Vocabulary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let v = Vocabulary::default();
    let p = parse(s, &v);
    if p.errors.is_empty() {
        if let Ok(f) = format(s, p.options, &v) {
            let again = parse(&f, &v);
            assert!(again.demail);
            assert_eq!(again.options, p.options);
        }
    }
});
