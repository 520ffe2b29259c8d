//! Property tests.
//!
//! 1. Subject round trip: for any subject without CR/LF and any option set,
//!    `parse(format(s, o))` gives back `o`, marks the message as De-Mail and yields
//!    the subject `parse(s)` yields (blanks at the very ends aside: `format` writes
//!    one blank after the tag). `format` is idempotent.
//! 2. No panics: subject parsing, address lists, classification of arbitrary bytes
//!    and header-like text, the send check, policy loading and the JSON boundary.
//!
//! Case counts keep the whole file well under 20 s in a debug build.

use demail_core::address::parse_address_list;
use demail_core::api::{self, Env};
use demail_core::check::{check, CheckInput};
use demail_core::classify::{classify_headers, classify_raw};
use demail_core::subject::{self, Vocabulary};
use demail_core::{DeMailOption, OptionSet, Policy};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

fn option_set() -> impl Strategy<Value = OptionSet> {
    (0u8..32).prop_map(|bits| {
        DeMailOption::ALL.into_iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, o)| o).collect()
    })
}

/// Pieces that make subjects interesting for the tag parser.
const SUBJECT_PIECES: &[&str] = &[
    "[P]",
    "[p]",
    "[VB]",
    "[EB, AB]",
    "[A]",
    "[De-Mail]",
    "[Persönlich]",
    "[Persoenlich]",
    "[Delivery confirmation]",
    "[Confirmed by sender]",
    "[P, VB]",
    "[P,XY]",
    "[XY]",
    "[Ticket#123]",
    "[]",
    "[ ]",
    "[,]",
    "[[P]]",
    "[P",
    "P]",
    "[",
    "]",
    ",",
    ";",
    ":",
    "AW:",
    "Re:",
    "WG:",
    "Fwd:",
    "RE :",
    "Sv:",
    "Antw:",
    " ",
    "  ",
    "\t",
    "Antrag",
    "Frage zur KFZ-Zulassung",
    "ä",
    "ß",
    "🎉",
    "日本",
    "\u{200b}",
    "\u{a0}",
    "\u{2028}",
    "x",
];

/// Subjects without CR/LF: either free text or a concatenation of tag-like pieces.
fn subject_no_crlf() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\r\n]{0,60}",
        proptest::collection::vec(select(SUBJECT_PIECES), 0..10).prop_map(|v| v.concat()),
        proptest::collection::vec(select(SUBJECT_PIECES), 0..6).prop_map(|v| v.join(" ")),
    ]
}

/// Any subject, CR/LF and control characters included.
fn subject_any() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        subject_no_crlf(),
        proptest::collection::vec(
            prop_oneof![select(SUBJECT_PIECES).prop_map(str::to_string), "[\r\n\u{0}]{1,2}".prop_map(|s| s)],
            0..10
        )
        .prop_map(|v| v.concat()),
    ]
}

const ADDRESS_PIECES: &[&str] = &[
    "peter",
    "pn_hans",
    "@",
    "@@",
    "stadt.de-mail.de",
    "de-mail.de",
    "bürgeramt.de-mail.de",
    "xn--brgeramt-65a.de-mail.de",
    "xn--",
    "example.org",
    "<",
    ">",
    "\"",
    "\\",
    "(",
    ")",
    ",",
    ";",
    ":",
    ".",
    "..",
    " ",
    "=?UTF-8?Q?M=C3=BCller?=",
    "=?utf-8?B?",
    "?=",
    "Müller, Peter",
    "Amt:",
    "[1.2.3.4]",
    "[",
    "]",
    "\r\n",
    "\n",
    "\u{0}",
    "é",
    "🎉",
];

fn address_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), proptest::collection::vec(select(ADDRESS_PIECES), 0..14).prop_map(|v| v.concat()),]
}

const HEADER_NAMES: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "Content-Type",
    "MIME-Version",
    "Content-Transfer-Encoding",
    "X-de-mail-private",
    "x-DE-MAIL-authoritative",
    "X-de-mail-confirmation-of-dispatch",
    "X-de-mail-confirmation-of-receipt",
    "X-de-mail-confirmation-of-retrieve",
    "X-de-mail-private-id",
    "X-de-mail-message-type",
    "X-de-mail-notification-type",
    "X-de-mail-auth-level",
    "X-de-mail-sender",
    "X-de-mail-chosen-recipient",
    "X-de-mail-actual-recipient",
    "X-de-mail-message-id",
    "X-de-mail-integrity",
    "X-de-mail-version",
    "X-de-mail-",
    "X-",
    "",
];

const HEADER_VALUES: &[&str] = &[
    "yes",
    "no",
    "Yes",
    "",
    " ",
    "normal",
    "high",
    "confirmation of dispatch",
    "confirmation of receipt",
    "confirmation of retrieve",
    "malware-acknowledge",
    "malware-notification",
    "notification",
    "identification",
    "unknown-recipient",
    "closed-account",
    "other",
    "Versandbestaetigung@provider.de-mail.de",
    "*Versandbestätigung* Antrag",
    "Eingangsbestätigung: x",
    "to=a@x.de-mail.de, b@y.de; cc=c@z.de; bcc=",
    "to=;cc=;;",
    "multipart/mixed; boundary=\"b\"",
    "multipart/mixed; boundary=",
    "text/xml; charset=utf-8",
    "application/xml",
    "base64",
    "quoted-printable",
    "<a@b>",
    "=?utf-8?B?w6Q=?=",
    "DM-20261127-103212-0102030405060708",
    "a\u{0}b",
    "ä",
    "🎉",
];

const BODY_PIECES: &[&str] = &[
    "--b\r\n",
    "--b--\r\n",
    "Content-Type: text/xml\r\n\r\n",
    "Content-Type: application/pdf\r\n\r\n",
    "<?xml version=\"1.0\"?>",
    "<Acknowledge-Message xmlns=\"urn:de-mail\">",
    "</Acknowledge-Message>",
    "<Notification-Message xmlns=\"urn:de-mail\">",
    "<Sender>",
    "</Sender>",
    "<Hash>",
    "</Hash>",
    "<Time>2026-11-27T10:32:12Z</Time>",
    "<Metadata><Metadate><Name>X-de-mail-private</Name><Value>yes</Value></Metadate></Metadata>",
    "<Subject>",
    "</Subject>",
    "<",
    ">",
    "&",
    "&#0;",
    "]]>",
    "\r\n",
    "\n",
    "text",
    "=C3=A4",
    "QUJD",
];

/// Something that looks like a message: header lines (sometimes folded), a blank
/// line, a body of MIME/XML fragments.
fn message_text() -> impl Strategy<Value = String> {
    let header = (select(HEADER_NAMES), select(HEADER_VALUES), any::<bool>(), select(&["\r\n", "\n", "\r"][..]))
        .prop_map(|(n, v, fold, eol)| if fold { format!("{n}: {v}{eol} {v}{eol}") } else { format!("{n}: {v}{eol}") });
    (proptest::collection::vec(header, 0..12), any::<bool>(), proptest::collection::vec(select(BODY_PIECES), 0..16))
        .prop_map(|(hs, blank, body)| {
            let mut s = hs.concat();
            if blank {
                s.push_str("\r\n");
            }
            s.push_str(&body.concat());
            s
        })
}

const TOML_PIECES: &[&str] = &[
    "version = 1\n",
    "version = 2\n",
    "[demail]\n",
    "domain_patterns = [\"*.de-mail.de\"]\n",
    "domain_patterns = []\n",
    "extra_domains = [\"bürgerpost.de\"]\n",
    "excluded_domains = [\"x\"]\n",
    "[organisation]\n",
    "internal_domains = [\"stadt.de\", \"*.stadt.de\"]\n",
    "internal_domains = [\"*.de-mail.de\"]\n",
    "[rules]\n",
    "mixed_addressing = \"allow-internal\"\n",
    "mixed_addressing = \"sometimes\"\n",
    "require_marking = \"block\"\n",
    "max_size = \"1 MiB\"\n",
    "max_size = 0\n",
    "max_size = \"99999999999999999999 GiB\"\n",
    "max_size = -1\n",
    "[authorization]\n",
    "default = \"deny\"\n",
    "default_options = [\"private\", \"eilig\"]\n",
    "[[authorization.groups]]\n",
    "name = \"g\"\n",
    "members = [\"*@stadt.de\", \"kaputt\"]\n",
    "[[authorization.senders]]\n",
    "address = \"chef@stadt.de\"\n",
    "demail = false\n",
    "[mapping]\n",
    "catch_all = \"post@stadt.de\"\n",
    "catch_all = \"x@a.de-mail.de\"\n",
    "domains = [{ demail = \"stadt.de-mail.de\", email = \"stadt.de\" }]\n",
    "overrides = [{ demail = \"pn_a@stadt.de-mail.de\", email = \"a@stadt.de\" }]\n",
    "[subject]\n",
    "private = []\n",
    "private = [\"P\", \"p\"]\n",
    "demail = [\"[x]\"]\n",
    "confirmation-of-dispatch = [\"Versand\"]\n",
    "=",
    "[",
    "]",
    "\"",
    "'''",
    "{",
    "}",
    "\n",
    "ä",
    "\u{0}",
];

fn toml_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), proptest::collection::vec(select(TOML_PIECES), 0..16).prop_map(|v| v.concat()),]
}

fn check_input() -> impl Strategy<Value = CheckInput> {
    let list = || proptest::collection::vec(address_text(), 0..4);
    (
        address_text(),
        list(),
        list(),
        list(),
        option_set(),
        any::<bool>(),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        proptest::option::of(prop_oneof![any::<String>(), "x{1020,1030}"]),
    )
        .prop_map(|(from, to, cc, bcc, options, marked, size, forwarded_demail, private_id)| CheckInput {
            from,
            to,
            cc,
            bcc,
            options,
            marked,
            size,
            forwarded_demail,
            private_id,
        })
}

fn policies() -> Vec<Policy> {
    vec![
        Policy::default(),
        Policy::from_toml(
            r#"
[demail]
extra_domains = ["behoerden-post.de"]
excluded_domains = ["test.de-mail.de"]
[organisation]
internal_domains = ["stadt.de", "*.stadt.de"]
[rules]
mixed_addressing = "allow-internal"
require_marking = "confirm"
forwarded_demail_to_email = "block"
max_size = "1 MiB"
[authorization]
default = "deny"
[[authorization.groups]]
name = "Amt"
members = ["*@stadt.de"]
options = ["private"]
[mapping]
catch_all = "post@stadt.de"
domains = [{ demail = "stadt.de-mail.de", email = "stadt.de" }]
overrides = [{ demail = "pn_a@stadt.de-mail.de", email = "a@stadt.de" }]
"#,
        )
        .expect("test policy is valid"),
    ]
}

// ---------------------------------------------------------------------------
// 1. Subject round trip
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(Config { cases: 3000, ..Config::default() })]

    #[test]
    fn subject_format_then_parse_round_trips(s in subject_no_crlf(), opts in option_set()) {
        let vocab = Vocabulary::default();
        let before = subject::parse(&s, &vocab);
        let formatted = subject::format(&s, opts, &vocab);
        if !before.errors.is_empty() {
            // An unknown tag is shown to the user; format refuses rather than dropping it.
            prop_assert!(formatted.is_err(), "format accepted {:?} although parse reported {:?}", s, before.errors);
            return Ok(());
        }
        let formatted = formatted.map_err(|e| TestCaseError::fail(format!("format({s:?}) failed: {}", e.code)))?;
        let after = subject::parse(&formatted, &vocab);
        prop_assert!(after.errors.is_empty(), "{:?} -> {:?}: errors {:?}", s, formatted, after.errors);
        prop_assert!(after.demail, "{:?} -> {:?} not De-Mail", s, formatted);
        prop_assert_eq!(after.options, opts, "{:?} -> {:?}", s, formatted);
        // Blanks at the very ends are not kept (format writes exactly one after the tag);
        // everything else is.
        let expected = if s.trim() == s { before.subject.as_str() } else { before.subject.trim() };
        prop_assert_eq!(after.subject.as_str(), expected, "{:?} -> {:?}", s, formatted);
        // Formatting again changes nothing.
        let again = subject::format(&formatted, opts, &vocab);
        prop_assert_eq!(again.as_deref().ok(), Some(formatted.as_str()));
    }

    #[test]
    fn subject_format_refuses_crlf(
        a in "[^\r\n]{0,20}",
        b in "[^\r\n]{0,20}",
        brk in select(&["\r\n", "\n", "\r"][..]),
        opts in option_set(),
    ) {
        let e = subject::format(&format!("{a}{brk}{b}"), opts, &Vocabulary::default()).unwrap_err();
        prop_assert_eq!(e.code.as_str(), "subject.crlf");
    }
}

// ---------------------------------------------------------------------------
// 2. No panics
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(Config { cases: 3000, ..Config::default() })]

    #[test]
    fn subject_parse_never_panics(s in subject_any()) {
        let p = subject::parse(&s, &Vocabulary::default());
        // The result never carries a line break into a header.
        prop_assert!(!p.subject.contains(['\r', '\n']));
    }

    #[test]
    fn address_list_never_panics(s in address_text()) {
        if let Ok(list) = parse_address_list(&s) {
            for m in list {
                prop_assert!(m.address.contains('@'), "{:?} gave {:?}", s, m.address);
                prop_assert!(!m.address.contains(['\r', '\n']));
            }
        }
    }

    #[test]
    fn toml_policy_never_panics(src in toml_text()) {
        let _ = Policy::from_toml(&src);
        let _ = Policy::parse(&src);
    }
}

proptest! {
    #![proptest_config(Config { cases: 1500, ..Config::default() })]

    #[test]
    fn classify_raw_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = classify_raw(&raw, &Policy::default());
    }

    #[test]
    fn classify_header_text_never_panics(text in message_text()) {
        let p = Policy::default();
        let _ = classify_raw(text.as_bytes(), &p);
    }

    #[test]
    fn classify_headers_never_panics(
        pairs in proptest::collection::vec((select(HEADER_NAMES), select(HEADER_VALUES)), 0..12),
        xml in proptest::option::of(proptest::collection::vec(select(BODY_PIECES), 0..12).prop_map(|v| v.concat())),
    ) {
        let list: Vec<(String, String)> = pairs.into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let _ = classify_headers(&list, xml.as_deref(), &Policy::default());
    }

    #[test]
    fn check_never_panics(input in check_input()) {
        for policy in policies() {
            let r = check(&input, &policy);
            // Every recipient lands in exactly one list.
            prop_assert_eq!(r.recipients.len(), r.demail_recipients.len() + r.email_recipients.len());
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 1000, ..Config::default() })]

    /// The wasm boundary must never trap: any op, any JSON-ish input.
    #[test]
    fn api_call_never_panics(
        op in select(&api::OPS[..]),
        text in prop_oneof![any::<String>(), subject_any(), message_text(), address_text()],
        shape in 0u8..6,
        opts in option_set(),
    ) {
        use serde_json::json;
        let input = match shape {
            0 => json!(text),
            1 => json!({ "subject": text, "options": opts }),
            2 => json!({ "from": text, "to": [text], "cc": [], "bcc": [text], "options": opts, "private_id": text }),
            3 => json!({ "address": text, "direction": if text.len() % 2 == 0 { "to-demail" } else { "to-email" } }),
            4 => json!({ "headers": [["X-de-mail-private", text]], "xml": text }),
            _ => json!({ "options": opts, "private_id": text, "sender": text }),
        };
        let env = Env { now_millis: 1_795_775_532_000, entropy: vec![7; 16] };
        for policy in policies() {
            let _ = api::call(op, &policy, &input, &env);
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 300, ..Config::default() })]

    /// The wire envelope is all ASCII (non-ASCII as `\u` escapes, astral characters as
    /// surrogate pairs) and means exactly what the typed call returns.
    #[test]
    fn envelope_is_ascii_and_faithful(
        text in prop_oneof![any::<String>(), subject_any(), address_text(), Just("Bürger „Ä“ 😀 \u{7f}\u{80}\u{ffff}".to_string())],
        op in select(&["subject.parse", "check", "map"][..]),
    ) {
        use serde_json::{json, Value};
        let input = match op {
            "subject.parse" => json!(text),
            "check" => json!({ "from": "peter.meier@musterstadt.de", "to": [text] }),
            _ => json!({ "address": text, "direction": "to-demail" }),
        };
        let env = Env { now_millis: 1_795_775_532_000, entropy: vec![7; 16] };
        let policy = Policy::default();
        let wire = api::call_str(op, &policy, &input.to_string(), &env);
        prop_assert!(wire.is_ascii(), "not ASCII: {}", wire);
        let expected = match api::call(op, &policy, &input, &env) {
            Ok(v) => json!({ "ok": true, "result": v }),
            Err(e) => json!({ "ok": false, "error": e }),
        };
        prop_assert_eq!(serde_json::from_str::<Value>(&wire).unwrap(), expected);
    }
}
