#![no_main]
//! The helper's raw-MIME path (`prepare_raw`, API and SMTP listener): never a panic; what
//! it accepts has CRLF line ends only and no NUL, re-parses with mail-parser, carries no
//! header the input did not have except the ones the helper adds on purpose (Message-ID
//! when missing, a rewritten Subject, the core's X-de-mail lines for the options the
//! input asked for), no header more often than the input, and never a Bcc.
use bytes::Bytes;
use demail_core::Policy;
use demail_helper::config::Dialect;
use demail_helper::mime::{prepare_raw, RawExtras};
use libfuzzer_sys::fuzz_target;

#[path = "helper_oracle.rs"]
mod oracle;

const OPTIONS: [&str; 5] =
    ["private", "confirmation-of-dispatch", "confirmation-of-receipt", "confirmation-of-retrieve", "authoritative"];

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, raw)) = data.split_first() else { return };
    let options: Vec<String> =
        OPTIONS.iter().enumerate().filter(|(i, _)| ctl & (1 << i) != 0).map(|(_, o)| o.to_string()).collect();
    let dialect = if ctl & 0x20 != 0 { Dialect::SubjectTags } else { Dialect::Headers };
    let rcpts = ["anna@buerger.de-mail.de".to_string(), "b@example.org".to_string()];
    let extras = RawExtras {
        options: &options,
        private_id: (ctl & 0x40 != 0).then_some("AZ-4711"),
        confirmed: true,
        forwarded_demail: false,
        envelope_rcpts: (ctl & 0x80 != 0).then_some(&rcpts[..1]),
    };
    let policy = Policy::default();
    let Ok(p) = prepare_raw(Bytes::copy_from_slice(raw), &extras, &policy, dialect, &oracle::env()) else { return };
    let out = p.mime.to_vec();
    oracle::assert_clean_line_ends(&out);
    assert!(mail_parser::MessageParser::new().parse(&out).is_some(), "output does not parse");

    let input = oracle::header_names(raw);
    let output = oracle::header_names(&out);
    let mut allowed_new = vec!["message-id".to_string(), "subject".to_string()];
    allowed_new.extend(oracle::core_header_names(&policy, p.options, &p.private_id, &p.sender));
    for (name, n) in &output {
        assert_ne!(name, "bcc", "Bcc reached the gateway");
        if allowed_new.contains(name) {
            assert_eq!(*n, 1, "{name} {n} times");
            continue;
        }
        let had = input.get(name).copied().unwrap_or(0);
        assert!(*n <= had, "header {name:?}: {n} in the output, {had} in the input\n{}", String::from_utf8_lossy(&out));
    }
});
