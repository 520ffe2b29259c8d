#![no_main]
//! RFC 5322 address lists and the send check built on them never panic.
use demail_core::address::parse_address_list;
use demail_core::check::{check, CheckInput};
use demail_core::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(list) = parse_address_list(s) {
        for m in &list {
            assert!(m.address.contains('@'));
            assert!(!m.address.contains(['\r', '\n']));
        }
    }
    let input = CheckInput { from: "a@musterstadt.de".into(), to: vec![s.to_string()], ..Default::default() };
    let _ = check(&input, &Policy::default());
});
