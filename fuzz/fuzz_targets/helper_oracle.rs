//! The oracle shared by the helper's MIME targets: what the helper hands to the gateway.
#![allow(dead_code)]

use demail_core::api::Env;
use demail_core::{OptionSet, Policy};
use std::collections::BTreeMap;

pub fn env() -> Env {
    Env { now_millis: 1_795_775_532_000, entropy: vec![7; 16] }
}

/// Lower-case header names of the top-level header block, with how often each occurs,
/// as mail-parser reads them once every line ends in CRLF (as the helper sends it: with
/// bare LF mail-parser's Date parser swallows the next line, fuzz artifact c53dba72).
pub fn header_names(msg: &[u8]) -> BTreeMap<String, usize> {
    let mut crlf = Vec::with_capacity(msg.len() + 64);
    for (i, b) in msg.iter().enumerate() {
        if *b == b'\n' && (i == 0 || msg[i - 1] != b'\r') {
            crlf.push(b'\r');
        }
        crlf.push(*b);
    }
    let mut out = BTreeMap::new();
    if let Some(m) = mail_parser::MessageParser::new().parse_headers(&crlf) {
        for h in m.headers() {
            *out.entry(h.name().to_ascii_lowercase()).or_insert(0) += 1;
        }
    }
    out
}

/// The header lines the core writes for these options (what the request asked for).
pub fn core_header_names(policy: &Policy, options: OptionSet, private_id: &str, sender: &str) -> Vec<String> {
    let h = demail_core::api::headers(policy, options, Some(private_id), Some(sender), &env())
        .expect("the core refused what it accepted before");
    h.headers.into_iter().map(|l| l.name.to_ascii_lowercase()).collect()
}

/// Bytes the gateway refuses (554 5.6.0) or that end SMTP DATA early: never in the output.
pub fn assert_clean_line_ends(out: &[u8]) {
    for (i, b) in out.iter().enumerate() {
        assert_ne!(*b, 0, "NUL at {i}");
        if *b == b'\r' {
            assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        if *b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i}");
        }
    }
}

/// The header block (up to the first empty line).
pub fn head(out: &[u8]) -> &[u8] {
    match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => &out[..p + 2],
        None => out,
    }
}
