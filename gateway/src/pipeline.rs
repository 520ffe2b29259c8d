//! Outbound processing of one message. Every De-Mail rule comes from demail-core;
//! this file only gathers the inputs, applies the verdict and rewrites headers.
//! MIME parsing is mail-parser's, header writing mail-builder's.

use demail_core::check::{check, CheckInput, Verdict};
use demail_core::reason::Severity;
use demail_core::headers::{is_demail_header, PRIVATE_ID};
use demail_core::options::{generate_private_id, option_headers, options_from_headers};
use demail_core::submission::{dropped_from_submission, new_message_id};
use demail_core::{subject, OptionSet, Policy, Reason};
use demail_smtp::Reject;
use mail_builder::headers::address::Address as MbAddress;
use mail_builder::headers::text::Text;
use mail_builder::headers::Header;
use mail_parser::{Address, MessageParser};

/// A message ready for the provider queue.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub message: Vec<u8>,
    pub demail_rcpts: Vec<String>,
    /// Internal e-mail recipients allowed by the mixed-addressing rule.
    pub email_rcpts: Vec<String>,
    pub sender_email: String,
    pub sender_demail: String,
    pub private_id: String,
    pub private_id_generated: bool,
    pub options: OptionSet,
    pub cost_unit: Option<String>,
    pub message_id: Option<String>,
}

fn reject(code: u16, esc: &str, r: &Reason) -> Reject {
    // The stable code leads, so programs can match it; the text follows.
    Reject::new(code, esc, format!("[{}] {}", r.code, r.message), format!("[{}] {}", r.code, r.message_en))
}

fn reason(code: &str, de: &str, en: &str) -> Reason {
    Reason::new(code, de, en)
}

/// The client's fields that do not pass: the core's submission rule, plus `From`, which
/// the gateway writes anew with the mapped De-Mail sender.
fn replaced(name: &str, rewrite_subject: bool) -> bool {
    dropped_from_submission(name, rewrite_subject) || name.trim().eq_ignore_ascii_case("from")
}

fn header_line(name: &str, value: impl Header) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // Writing to a Vec cannot fail.
    let _ = value.write_header(&mut out, name.len() + 2);
    out
}

/// Check and rewrite an outbound message. The header block is replaced in place,
/// so a large message is not copied.
pub fn prepare(
    policy: &Policy,
    envelope_from: &str,
    rcpts: &[String],
    mut message: Vec<u8>,
    now_ms: u64,
    entropy: &[u8],
) -> Result<Prepared, Reject> {
    let raw: &[u8] = &message;
    // RFC 5322 field names are printable ASCII without ':'; binary junk parses as one long "name".
    let valid_name =
        |n: &str| !n.is_empty() && n.len() <= 998 && n.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    let msg = MessageParser::default()
        .parse_headers(raw)
        .filter(|m| m.headers().iter().any(|h| valid_name(h.name.as_str())))
        .ok_or_else(|| {
            reject(
                554,
                "5.6.0",
                &reason(
                    "mime.unparseable",
                    "Die Nachricht ist kein lesbares Internet-Nachrichtenformat.",
                    "The message is not a readable Internet message.",
                ),
            )
        })?;

    // Raw header values (unfolded) for the core's header readers.
    let raw_headers: Vec<(String, String)> = msg
        .headers()
        .iter()
        .map(|h| {
            let v = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or(b"");
            let v = String::from_utf8_lossy(v).replace("\r\n", "").replace('\n', "");
            (h.name.as_str().to_string(), v.trim().to_string())
        })
        .collect();

    let (from_name, from_addr) = match msg.from() {
        Some(Address::List(l)) if l.len() == 1 => {
            (l[0].name.as_deref().map(str::to_string), l[0].address.as_deref().unwrap_or("").to_string())
        }
        _ => (None, String::new()),
    };
    let from_addr = if from_addr.is_empty() { envelope_from.to_string() } else { from_addr };

    // Subject tags (the fallback for clients without the add-in).
    let subj = msg.subject().unwrap_or("").to_string();
    let parsed = subject::parse(&subj, &policy.subject);
    if let Some(e) = parsed.errors.iter().find(|e| e.code != "subject.crlf") {
        return Err(reject(550, "5.6.0", e));
    }
    let tags_stripped = parsed.subject != subj;

    // Options from headers (the add-in and helper path).
    let ho = options_from_headers(raw_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    if let Some(e) = ho.problems.iter().find(|e| e.code == "header.invalid_value") {
        return Err(reject(550, "5.6.0", e));
    }
    let private_id =
        raw_headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(PRIVATE_ID)).map(|(_, v)| v.clone());
    let has_demail_header = raw_headers.iter().any(|(n, _)| is_demail_header(n));

    let input = CheckInput {
        from: from_addr.clone(),
        to: rcpts.to_vec(),
        options: parsed.options.union(ho.options),
        marked: parsed.demail || has_demail_header,
        size: Some(raw.len() as u64),
        private_id: private_id.clone(),
        ..CheckInput::default()
    };
    let result = check(&input, policy);
    match result.verdict {
        Verdict::Blocked => {
            let blocks: Vec<&Reason> = result.reasons.iter().filter(|r| r.severity == Some(Severity::Block)).collect();
            let (code, esc) =
                if blocks.iter().any(|r| r.code == "size.exceeded") { (552, "5.3.4") } else { (550, "5.7.1") };
            let de = blocks.iter().map(|r| format!("[{}] {}", r.code, r.message)).collect::<Vec<_>>().join(" ");
            let en = blocks.iter().map(|r| format!("[{}] {}", r.code, r.message_en)).collect::<Vec<_>>().join(" ");
            return Err(Reject::new(code, esc, de, en));
        }
        Verdict::Email => {
            return Err(reject(
                550,
                "5.1.1",
                &reason(
                    "gateway.no_demail_recipient",
                    "Diese Nachricht hat keinen De-Mail-Empfänger; normale E-Mail nimmt das De-Mail-Gateway nicht an.",
                    "This message has no De-Mail recipient; the De-Mail gateway does not take ordinary e-mail.",
                ),
            ))
        }
        // A confirmation was the client's to ask; what reaches the gateway was confirmed.
        Verdict::Demail | Verdict::Confirm => {}
    }
    let sender_demail = result.sender_demail.clone().ok_or_else(|| {
        reject(
            550,
            "5.7.1",
            &reason(
                "sender.no_demail_address",
                "Für den Absender ist keine De-Mail-Adresse eingerichtet.",
                "No De-Mail address is set up for the sender.",
            ),
        )
    })?;

    let (private_id, generated) = match private_id.filter(|s| !s.trim().is_empty()) {
        Some(id) => (id, false),
        None => (generate_private_id(now_ms, entropy), true),
    };

    // New header block: ours first, then the client's in order, minus the replaced ones.
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let from_value = match &from_name {
        Some(n) => MbAddress::new_address(Some(n.as_str()), sender_demail.as_str()),
        None => MbAddress::new_address(None::<&str>, sender_demail.as_str()),
    };
    out.extend(header_line("From", from_value));
    if tags_stripped {
        out.extend(header_line("Subject", Text::new(parsed.subject.as_str())));
    }
    for (n, v) in option_headers(result.options, Some(&private_id)) {
        if v.is_ascii() {
            out.extend(format!("{n}: {v}\r\n").as_bytes());
        } else {
            out.extend(header_line(&n, Text::new(v.as_str())));
        }
    }
    // Every De-Mail gets a Message-ID: it is the key by which a resend after a crash is
    // recognised (by the provider, and by us for a client's retry).
    let message_id = msg.message_id().map(str::to_string);
    let message_id = match message_id {
        Some(m) => Some(m),
        None => {
            let m = new_message_id(now_ms, entropy, &sender_demail);
            out.extend(format!("Message-ID: <{m}>\r\n").as_bytes());
            Some(m)
        }
    };
    let root = msg.root_part();
    for h in msg.headers() {
        if replaced(h.name.as_str(), tags_stripped) {
            continue;
        }
        if let Some(field) = raw.get(h.offset_field as usize..h.offset_end as usize) {
            out.extend_from_slice(field);
        }
    }
    // The blank line and body stay byte for byte; only the header block is replaced.
    let body_start = (root.offset_body as usize).min(raw.len());
    let header_end = msg.headers().iter().map(|h| h.offset_end as usize).max().unwrap_or(0).min(body_start);
    drop(msg);
    message.splice(..header_end, out);

    Ok(Prepared {
        message,
        demail_rcpts: result.demail_recipients.clone(),
        email_rcpts: result.email_recipients.clone(),
        sender_email: from_addr,
        sender_demail,
        private_id,
        private_id_generated: generated,
        options: result.options,
        cost_unit: result.cost_unit.clone(),
        message_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::parse(
            r#"
[organisation]
internal_domains = ["stadt.de"]
[authorization]
default = "deny"
[[authorization.senders]]
address = "peter@stadt.de"
options = ["private", "confirmation-of-dispatch"]
cost_unit = "KST-1"
[mapping]
catch_all = "sammel@stadt.de"
domains = [{ demail = "stadt.de-mail.de", email = "stadt.de" }]
"#,
        )
        .unwrap()
    }

    const E: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    #[test]
    fn tags_become_headers_and_sender_is_mapped() {
        let raw = b"From: Peter Meier <peter@stadt.de>\r\nTo: anna@buerger.de-mail.de\r\nSubject: [P, VB] Antrag\r\nBcc: geheim@stadt.de\r\nX-Other: keep\r\n\r\nText\r\n";
        let p = prepare(
            &policy(),
            "peter@stadt.de",
            &["anna@buerger.de-mail.de".into()],
            raw.to_vec(),
            1_795_775_532_000,
            &E,
        )
        .unwrap();
        let s = String::from_utf8(p.message.clone()).unwrap();
        assert!(s.starts_with("From: \"Peter Meier\" <peter@stadt.de-mail.de>\r\nSubject: Antrag\r\n"), "{s}");
        assert!(s.contains("X-de-mail-private: yes\r\n"));
        assert!(s.contains("X-de-mail-confirmation-of-dispatch: yes\r\n"));
        assert!(s.contains("X-de-mail-private-id: DM-20261127-103212-0102030405060708\r\n"));
        assert!(s.contains("X-Other: keep\r\n"));
        assert!(!s.contains("Bcc"));
        assert!(!s.contains("[P, VB]"));
        assert!(s.ends_with("\r\n\r\nText\r\n"));
        assert_eq!(p.cost_unit.as_deref(), Some("KST-1"));
        // No Message-ID from the client: one is generated (the idempotency key).
        assert_eq!(p.message_id.as_deref(), Some("1a21c900be0.0102030405060708@stadt.de-mail.de"));
        assert!(s.contains("Message-ID: <1a21c900be0.0102030405060708@stadt.de-mail.de>\r\n"));
    }

    #[test]
    fn refusals_carry_code_and_reason() {
        // (raw message, envelope recipients, SMTP code, reason code in the English text)
        let cases: [(&[u8], &[&str], u16, &str); 5] = [
            (
                b"From: peter@stadt.de\r\nSubject: x\r\n\r\nT\r\n",
                &["a@b.de-mail.de", "x@example.org"],
                550,
                "[mixed.rejected]",
            ),
            (b"From: eve@stadt.de\r\nSubject: x\r\n\r\nT\r\n", &["a@b.de-mail.de"], 550, "[sender.not_authorized]"),
            (
                b"From: peter@stadt.de\r\nSubject: [P, XY] x\r\n\r\nT\r\n",
                &["a@b.de-mail.de"],
                550,
                "[subject.unknown_tag]",
            ),
            (
                b"From: peter@stadt.de\r\nSubject: [AB] x\r\n\r\nT\r\n",
                &["a@b.de-mail.de"],
                550,
                "[sender.option_not_authorized]",
            ),
            (b"\x00\x01garbage", &["a@b.de-mail.de"], 554, "[mime.unparseable]"),
        ];
        for (raw, rcpts, code, reason) in cases {
            let rcpts: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
            let r = prepare(&policy(), "", &rcpts, raw.to_vec(), 0, &E).unwrap_err();
            assert_eq!(r.code, code, "{reason}: {r}");
            assert!(r.text_en.contains(reason), "{reason}: {r}");
        }
    }

    /// `prepare` for one De-Mail recipient, which must succeed.
    fn prepare_one(raw: &[u8]) -> Prepared {
        prepare(&policy(), "", &["a@b.de-mail.de".into()], raw.to_vec(), 0, &E).unwrap()
    }

    #[test]
    fn provider_only_headers_and_seals_from_clients_are_dropped() {
        let raw = b"From: peter@stadt.de\r\nX-de-mail-message-id: <f@evil>\r\nX-de-mail-originator-provider: evil.de\r\nX-de-mail-auth-level: high\r\nX-De-Mail-Integrity: c=simple/simple; b=x\r\nX-de-mail-message-type: confirmation of receipt\r\nX-de-mail-sender: chef@stadt.de-mail.de\r\nX-Demail-Gateway-Seal: v=1; kid=a; s=AAAA\r\nX-de-mail-private: yes\r\nSubject: x\r\n\r\nT\r\n";
        let p = prepare_one(raw);
        let s = String::from_utf8(p.message).unwrap().to_ascii_lowercase();
        for h in [
            "message-id: <f@evil>",
            "originator-provider",
            "auth-level",
            "integrity",
            "message-type",
            "x-de-mail-sender",
            "gateway-seal",
        ] {
            assert!(!s.contains(h), "{h} survived: {s}");
        }
        // What the client may ask for stays (rewritten by the gateway).
        assert!(s.contains("x-de-mail-private: yes\r\n"), "{s}");
    }

    #[test]
    fn existing_private_id_is_kept_and_folded_headers_survive() {
        let raw = b"From: peter@stadt.de\r\nX-de-mail-private-id: AZ 4711\r\nX-Long: a\r\n b\r\nSubject: Bescheid\r\n\r\nT\r\n";
        let p = prepare_one(raw);
        let s = String::from_utf8(p.message).unwrap();
        assert_eq!(p.private_id, "AZ 4711");
        assert!(!p.private_id_generated);
        assert_eq!(s.matches("X-de-mail-private-id").count(), 1);
        assert!(s.contains("X-Long: a\r\n b\r\nSubject: Bescheid\r\n\r\nT\r\n"), "{s}");
    }
}
