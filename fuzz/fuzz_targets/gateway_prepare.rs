#![no_main]
//! The gateway's outbound rewrite (`pipeline::prepare`) and its inbound re-seal on
//! arbitrary bytes. The first byte picks the policy variant and the recipients; the rest
//! is the message.
//!
//! Oracle for `prepare`: never a panic; on Ok, mail-parser reads the output's header
//! block, and every field in it is one the input had, or one the gateway writes itself
//! (From, Message-ID, the option headers and the private-id). Bcc, the gateway seal, the
//! confirmation statement and every other `X-de-mail-*` never survive; there is one From,
//! one Message-ID and one private-id. Oracle for `reseal`: on Ok, the output carries
//! exactly one seal and it verifies, or (a malformed message) none at all.
use demail_core::headers::{
    is_demail_header, AUTHORITATIVE, CONFIRMATION_OF_DISPATCH, CONFIRMATION_OF_RECEIPT, CONFIRMATION_OF_RETRIEVE,
    GATEWAY_SEAL, PRIVATE, PRIVATE_ID,
};
use demail_core::submission::CONFIRMED;
use demail_core::Policy;
use demail_gateway::pipeline::prepare;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const BASE: &str = r#"
[organisation]
internal_domains = ["stadt.de"]
[authorization]
default = "allow"
[mapping]
catch_all = "sammel@stadt.de"
domains = [{ demail = "stadt.de-mail.de", email = "stadt.de" }]
"#;

/// Four variants: the defaults; Sender rewritten and Reply-To kept; mixed addressing
/// allowed internally; mixed addressing `warn` with marking to confirm.
fn policies() -> &'static [Policy; 4] {
    static P: OnceLock<[Policy; 4]> = OnceLock::new();
    P.get_or_init(|| {
        let with = |rules: &str| Policy::parse(&format!("[rules]\n{rules}\n{BASE}")).unwrap();
        [
            with(""),
            with("sender_header = \"rewrite\"\nreply_to = \"keep\""),
            with("mixed_addressing = \"allow-internal\"\nreply_to = \"drop\""),
            with("mixed_addressing = \"warn\"\nrequire_marking = \"confirm\"\nsender_header = \"rewrite\""),
        ]
    })
}

fn names(raw: &[u8]) -> Vec<String> {
    mail_parser::MessageParser::default()
        .parse_headers(raw)
        .map(|m| m.headers().iter().map(|h| h.name.as_str().trim().to_ascii_lowercase()).collect())
        .unwrap_or_default()
}

fn check_prepare(sel: u8, input: &[u8]) {
    let policy = &policies()[(sel & 3) as usize];
    let mut rcpts = vec!["anna@buerger.de-mail.de".to_string()];
    if sel & 4 != 0 {
        rcpts.push("kollegin@stadt.de".into());
    }
    if sel & 8 != 0 {
        rcpts.push("x@example.org".into());
    }
    let Ok(p) = prepare(policy, "peter@stadt.de", &rcpts, input.to_vec(), 1_795_775_532_000, &[7; 8]) else {
        return;
    };
    let before = names(input);
    let after = names(&p.message);
    let ours: Vec<String> = [
        "from",
        "message-id",
        CONFIRMATION_OF_DISPATCH,
        CONFIRMATION_OF_RECEIPT,
        CONFIRMATION_OF_RETRIEVE,
        AUTHORITATIVE,
        PRIVATE,
        PRIVATE_ID,
    ]
    .iter()
    .map(|n| n.to_ascii_lowercase())
    .collect();
    for n in &after {
        assert!(
            ours.contains(n) || (before.contains(n) && !is_demail_header(n)),
            "header {n:?} appeared that the input did not ask for\ninput: {before:?}\noutput: {after:?}"
        );
        for never in ["bcc", &GATEWAY_SEAL.to_ascii_lowercase(), &CONFIRMED.to_ascii_lowercase()] {
            assert_ne!(n, never, "{never} survived");
        }
    }
    let count = |v: &[String], n: &str| v.iter().filter(|x| *x == n).count();
    assert_eq!(count(&after, "from"), 1, "{after:?}");
    assert_eq!(count(&after, "message-id"), 1, "{before:?} -> {after:?}");
    assert_eq!(count(&after, &PRIVATE_ID.to_ascii_lowercase()), 1, "{after:?}");
}

fn check_reseal(input: &[u8]) {
    const KEY: [u8; 32] = [9; 32];
    let Ok(r) = demail_gateway::seal::reseal(input, "gw", &KEY) else {
        return;
    };
    let seals = names(&r.message).iter().filter(|n| **n == GATEWAY_SEAL.to_ascii_lowercase()).count();
    let keys = [demail_core::seal::public_key("gw", &KEY)];
    if r.sealed {
        assert_eq!(seals, 1, "one seal, ours");
        assert!(demail_core::seal::verify(&r.message, &keys, true).sealed, "our own seal does not verify");
    } else {
        assert_eq!(seals, 0, "unsealed, and no foreign seal left");
        assert!(!well_formed(input), "a well-formed message went out unsealed");
    }
}

/// A plain header block: `Name: value` lines of printable ASCII (continuations after a
/// field), each ending in CRLF, then an empty line.
fn well_formed(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let mut lines = raw[..end].split(|b| *b == b'\n').peekable();
    if lines.peek().is_none_or(|l| l.first().is_none_or(|b| *b == b' ' || *b == b'\t')) {
        return false;
    }
    lines.all(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let printable = l.iter().all(|b| (32..127).contains(b) || *b == b'\t');
        let field = match l.iter().position(|b| *b == b':') {
            Some(i) => i > 0 && l[..i].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
            None => false,
        };
        printable && !l.contains(&b'\r') && (field || l.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    check_prepare(sel, input);
    if sel & 16 != 0 {
        check_reseal(input);
    }
});
