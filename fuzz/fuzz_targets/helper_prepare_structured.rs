#![no_main]
//! The helper's structured path (`prepare_structured`, the add-in's JSON): never a panic;
//! what it accepts has CRLF line ends only and no NUL, re-parses with mail-parser, has
//! exactly the headers the request asked for (each once; X-de-mail lines only those the
//! core writes for its options), no Bcc, and no Bcc address in the header block.
use base64::Engine;
use demail_core::Policy;
use demail_helper::config::Dialect;
use demail_helper::mime::{prepare_structured, Attachment, SubmitRequest};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "helper_oracle.rs"]
mod oracle;

const OPTIONS: [&str; 5] =
    ["private", "confirmation-of-dispatch", "confirmation-of-receipt", "confirmation-of-retrieve", "authoritative"];
/// Realistic values the fuzzer mixes with arbitrary text, so that checks pass often
/// enough to reach the MIME building.
const ADDRESSES: [&str; 6] = [
    "Peter Meier <peter.meier@musterstadt.de>",
    "anna@buerger.de-mail.de",
    "Anna Bürger <anna@buerger.de-mail.de>",
    "\"Akte, Zentral\" <akte@buerger.de-mail.de>",
    "kollege@musterstadt.de",
    "x@example.org",
];

fn text(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 3)? {
        Ok(u.choose(&ADDRESSES)?.to_string())
    } else {
        u.arbitrary()
    }
}

fn list(u: &mut Unstructured) -> Result<Vec<String>> {
    let n = u.int_in_range(0..=3)?;
    (0..n).map(|_| text(u)).collect()
}

fn request(u: &mut Unstructured) -> Result<(SubmitRequest, Dialect)> {
    let bits: u8 = u.arbitrary()?;
    let attachments = (0..u.int_in_range(0..=2)?)
        .map(|_| {
            let data: Vec<u8> = u.arbitrary()?;
            Ok(Attachment {
                filename: u.arbitrary()?,
                content_type: if u.arbitrary()? { "application/pdf".into() } else { u.arbitrary()? },
                data: base64::engine::general_purpose::STANDARD.encode(data),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let req = SubmitRequest {
        from: if u.ratio(3, 4)? { ADDRESSES[0].to_string() } else { text(u)? },
        to: if u.ratio(3, 4)? { vec![u.choose(&ADDRESSES[1..4])?.to_string()] } else { list(u)? },
        cc: list(u)?,
        bcc: list(u)?,
        subject: u.arbitrary()?,
        text: u.arbitrary()?,
        html: u.arbitrary()?,
        attachments,
        options: OPTIONS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, o)| o.to_string()).collect(),
        private_id: u.arbitrary()?,
        message_id: if u.arbitrary()? {
            Some(format!("{}@musterstadt.de", u.arbitrary::<u32>()?))
        } else {
            u.arbitrary()?
        },
        in_reply_to: u.arbitrary()?,
        references: u.arbitrary()?,
        forwarded_demail: u.arbitrary()?,
        confirmed: u.arbitrary()?,
        raw: None,
    };
    Ok((req, if bits & 0x20 != 0 { Dialect::SubjectTags } else { Dialect::Headers }))
}

fuzz_target!(|data: &[u8]| {
    let Ok((req, dialect)) = request(&mut Unstructured::new(data)) else { return };
    let policy = Policy::default();
    let Ok(p) = prepare_structured(&req, &policy, dialect, &oracle::env()) else { return };
    let out = p.mime.to_vec();
    oracle::assert_clean_line_ends(&out);
    assert!(mail_parser::MessageParser::new().parse(&out).is_some(), "output does not parse");

    let mut allowed: Vec<String> =
        ["from", "subject", "message-id", "date", "mime-version", "content-type", "content-transfer-encoding"]
            .map(String::from)
            .to_vec();
    if !req.to.is_empty() {
        allowed.push("to".into());
    }
    if !req.cc.is_empty() {
        allowed.push("cc".into());
    }
    if req.in_reply_to.is_some() {
        allowed.push("in-reply-to".into());
    }
    if !req.references.is_empty() {
        allowed.push("references".into());
    }
    allowed.extend(oracle::core_header_names(&policy, p.options, &p.private_id, &p.sender));
    for (name, n) in oracle::header_names(&out) {
        assert!(allowed.contains(&name), "header {name:?} nobody asked for\n{}", String::from_utf8_lossy(&out));
        assert_eq!(n, 1, "{name} {n} times");
    }
    // A Bcc recipient (who is not also visible) appears in no address field. Free text the
    // caseworker typed (a subject naming the address) may carry it: that is no leak.
    let unfolded = String::from_utf8_lossy(oracle::head(&out)).replace("\r\n ", " ").replace("\r\n\t", " ");
    let head: String = unfolded
        .split("\r\n")
        .filter(|l| {
            let name = l.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
            ["from", "to", "cc", "bcc", "sender", "reply-to"].contains(&name.as_str())
        })
        .collect::<Vec<_>>()
        .join("\n")
        .to_ascii_lowercase();
    let visible =
        [&req.to, &req.cc].iter().flat_map(|l| l.iter()).chain([&req.from]).cloned().collect::<Vec<_>>().join(" ");
    for b in &req.bcc {
        for a in demail_core::address::parse_address_list(b).into_iter().flatten() {
            let addr = a.address.to_ascii_lowercase();
            if !visible.to_ascii_lowercase().contains(&addr) {
                assert!(!head.contains(&addr), "Bcc {addr} in an address field\n{head}");
            }
        }
    }
});
