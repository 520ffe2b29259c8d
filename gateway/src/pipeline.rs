//! Outbound processing of one message. Every De-Mail rule comes from demail-core;
//! this file only gathers the inputs, applies the verdict and rewrites headers.
//! MIME parsing is mail-parser's, header writing mail-builder's.

use demail_core::check::{check, CheckInput, CheckResult, Verdict};
use demail_core::headers::{is_demail_header, PRIVATE_ID};
use demail_core::mapping::MappedVia;
use demail_core::options::{generate_private_id, option_headers, options_from_headers};
use demail_core::reason::Severity;
use demail_core::submission::{client_field, confirmed_codes, new_message_id, Fate, Reach, Rewritten, CONFIRMED};
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
    /// `confirm` reasons of the send check the client did not state as confirmed
    /// ([`CONFIRMED`]); the caller decides (it knows the account).
    pub unconfirmed: Vec<Reason>,
    /// The addresses a kept `Sender:` named (policy `sender_header = "rewrite"`); the
    /// caller checks the account may act as them.
    pub sender_field: Vec<String>,
}

fn reject(code: u16, esc: &str, r: &Reason) -> Reject {
    // The stable code leads, so programs can match it; the text follows.
    Reject::new(code, esc, format!("[{}] {}", r.code, r.message), format!("[{}] {}", r.code, r.message_en))
}

fn reason(code: &str, de: &str, en: &str) -> Reason {
    Reason::new(code, de, en)
}

/// Where an address named in `Sender:` or `Reply-To:` leads: own De-Mail addresses (the
/// mapping's, or in the sender's De-Mail domain), internal e-mail addresses through the
/// mapping, everything else outside. The catch-all does not make an address ours.
fn reach<'a>(policy: &'a Policy, sender_demail: &'a str) -> impl Fn(&str) -> Reach + 'a {
    let own_domain = sender_demail.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    move |addr: &str| {
        let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if policy.is_demail_domain(domain) {
            let mapped = policy.demail_to_email(addr).is_some_and(|m| m.via != MappedVia::CatchAll);
            if mapped || domain.eq_ignore_ascii_case(own_domain) {
                Reach::Own(addr.to_lowercase())
            } else {
                Reach::Outside
            }
        } else if let Some(m) = policy.email_to_demail(addr) {
            Reach::Own(m.address)
        } else if policy.is_internal_domain(domain) {
            Reach::NoDemail
        } else {
            Reach::Outside
        }
    }
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
    let msg = parse(&message)?;
    let sender = header_sender(&msg, envelope_from);
    let asked = requested(&msg, &message, policy)?;
    let checked = send_check(policy, &sender, rcpts, &asked, message.len())?;
    let unconfirmed: Vec<Reason> = checked
        .reasons
        .iter()
        .filter(|r| r.severity == Some(Severity::Confirm) && !asked.confirmed.contains(&r.code))
        .cloned()
        .collect();
    let sender_demail = checked.sender_demail.clone().ok_or_else(no_demail_sender)?;
    let (private_id, private_id_generated) = match asked.private_id.filter(|s| !s.trim().is_empty()) {
        Some(id) => (id, false),
        None => (generate_private_id(now_ms, entropy), true),
    };
    // Every De-Mail gets a Message-ID: it is the key by which a resend after a crash is
    // recognised (by the provider, and by us for a client's retry).
    // The client's only if it gave exactly one that reads as an id: an empty one (`<>`)
    // would make every such message the "same", and of several the provider might key on
    // another than we do.
    let ids = msg.headers().iter().filter(|h| h.name.as_str().trim().eq_ignore_ascii_case("message-id")).count();
    let client_id = msg.message_id().map(str::trim).filter(|m| !m.is_empty() && ids == 1);
    let (message_id, generated_message_id) = match client_id {
        Some(m) => (m.to_string(), false),
        None => (new_message_id(now_ms, entropy, &sender_demail), true),
    };
    let ours = Ours {
        from_name: sender.name.as_deref(),
        sender_demail: &sender_demail,
        subject: asked.new_subject.as_deref(),
        options: checked.options,
        private_id: &private_id,
        message_id: generated_message_id.then_some(message_id.as_str()),
    };
    let (block, sender_field) = new_header_block(&msg, &message, &ours, policy, &sender.address)?;
    // The blank line and body stay byte for byte; only the header block is replaced.
    let body_start = (msg.root_part().offset_body as usize).min(message.len());
    let header_end = msg.headers().iter().map(|h| h.offset_end as usize).max().unwrap_or(0).min(body_start);
    drop(msg);
    message.splice(..header_end, block);

    Ok(Prepared {
        message,
        demail_rcpts: checked.demail_recipients,
        email_rcpts: checked.email_recipients,
        sender_email: sender.address,
        sender_demail,
        private_id,
        private_id_generated,
        options: checked.options,
        cost_unit: checked.cost_unit,
        message_id: Some(message_id),
        unconfirmed,
        sender_field,
    })
}

/// The header block, or `mime.unparseable`.
fn parse(raw: &[u8]) -> Result<mail_parser::Message<'_>, Reject> {
    // RFC 5322 field names are printable ASCII without ':'; binary junk parses as one long "name".
    let valid_name =
        |n: &str| !n.is_empty() && n.len() <= 998 && n.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    MessageParser::default()
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
        })
}

/// Who sends: the header `From` when it names one mailbox, else the envelope sender.
struct Sender {
    name: Option<String>,
    address: String,
}

fn header_sender(msg: &mail_parser::Message<'_>, envelope_from: &str) -> Sender {
    let (name, address) = match msg.from() {
        Some(Address::List(l)) if l.len() == 1 => {
            (l[0].name.as_deref().map(str::to_string), l[0].address.as_deref().unwrap_or("").to_string())
        }
        _ => (None, String::new()),
    };
    Sender { name, address: if address.is_empty() { envelope_from.to_string() } else { address } }
}

/// What the client asked for, from subject tags (clients without the add-in) and
/// `X-de-mail-*` headers (the add-in and helper path).
struct Asked {
    options: OptionSet,
    /// The subject without its tags, when it had any.
    new_subject: Option<String>,
    private_id: Option<String>,
    /// A tag or an `X-de-mail-*` header: the client meant De-Mail.
    marked: bool,
    /// Reason codes the client states the person confirmed ([`CONFIRMED`]).
    confirmed: Vec<String>,
}

fn requested(msg: &mail_parser::Message<'_>, raw: &[u8], policy: &Policy) -> Result<Asked, Reject> {
    let subj = msg.subject().unwrap_or("");
    let parsed = subject::parse(subj, &policy.subject);
    if let Some(e) = parsed.errors.iter().find(|e| e.code != "subject.crlf") {
        return Err(reject(550, "5.6.0", e));
    }
    let new_subject = (parsed.subject != subj).then_some(parsed.subject);

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
    let ho = options_from_headers(raw_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    if let Some(e) = ho.problems.iter().find(|e| e.code == "header.invalid_value") {
        return Err(reject(550, "5.6.0", e));
    }
    Ok(Asked {
        options: parsed.options.union(ho.options),
        new_subject,
        private_id: raw_headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(PRIVATE_ID)).map(|(_, v)| v.clone()),
        marked: parsed.demail || raw_headers.iter().any(|(n, _)| is_demail_header(n)),
        confirmed: raw_headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(CONFIRMED))
            .flat_map(|(_, v)| confirmed_codes(v))
            .collect(),
    })
}

/// The core's send check with every envelope recipient. Only a De-Mail passes: blocked
/// is refused with the check's reasons, plain e-mail does not belong on this path.
fn send_check(
    policy: &Policy,
    sender: &Sender,
    rcpts: &[String],
    asked: &Asked,
    size: usize,
) -> Result<CheckResult, Reject> {
    let input = CheckInput {
        from: sender.address.clone(),
        to: rcpts.to_vec(),
        options: asked.options,
        marked: asked.marked,
        size: Some(size as u64),
        private_id: asked.private_id.clone(),
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
            Err(Reject::new(code, esc, de, en))
        }
        Verdict::Email => Err(reject(
            550,
            "5.1.1",
            &reason(
                "gateway.no_demail_recipient",
                "Diese Nachricht hat keinen De-Mail-Empfänger; normale E-Mail nimmt das De-Mail-Gateway nicht an.",
                "This message has no De-Mail recipient; the De-Mail gateway does not take ordinary e-mail.",
            ),
        )),
        // The gateway cannot ask: the caller weighs `confirm` reasons against what the
        // client states as confirmed and against the account (Prepared::unconfirmed).
        Verdict::Demail | Verdict::Confirm => Ok(result),
    }
}

fn no_demail_sender() -> Reject {
    reject(
        550,
        "5.7.1",
        &reason(
            "sender.no_demail_address",
            "Für den Absender ist keine De-Mail-Adresse eingerichtet.",
            "No De-Mail address is set up for the sender.",
        ),
    )
}

/// The header fields the gateway writes itself.
struct Ours<'a> {
    /// The client's display name, kept with the mapped De-Mail sender.
    from_name: Option<&'a str>,
    sender_demail: &'a str,
    /// The subject without its tags, when it had any.
    subject: Option<&'a str>,
    options: OptionSet,
    private_id: &'a str,
    /// Generated because the client sent none.
    message_id: Option<&'a str>,
}

/// Ours first, then the client's fields in order as the core's submission rule says:
/// kept byte for byte, dropped, rewritten, or the message refused. `From` is ours.
/// Also returns the addresses a kept `Sender` named.
fn new_header_block(
    msg: &mail_parser::Message<'_>,
    raw: &[u8],
    ours: &Ours<'_>,
    policy: &Policy,
    from: &str,
) -> Result<(Vec<u8>, Vec<String>), Reject> {
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    out.extend(header_line("From", MbAddress::new_address(ours.from_name, ours.sender_demail)));
    if let Some(s) = ours.subject {
        out.extend(header_line("Subject", Text::new(s)));
    }
    for (n, v) in option_headers(ours.options, Some(ours.private_id)) {
        if v.is_ascii() {
            out.extend(format!("{n}: {v}\r\n").as_bytes());
        } else {
            out.extend(header_line(&n, Text::new(v.as_str())));
        }
    }
    if let Some(m) = ours.message_id {
        out.extend(format!("Message-ID: <{m}>\r\n").as_bytes());
    }
    let reach = reach(policy, ours.sender_demail);
    let mut sender_field = Vec::new();
    for h in msg.headers() {
        let name = h.name.as_str();
        // The client's Message-ID fields go when we write ours (none was usable): two
        // would leave the provider's idempotency key to chance.
        let unusable_id = ours.message_id.is_some() && name.trim().eq_ignore_ascii_case("message-id");
        if name.trim().eq_ignore_ascii_case("from") || unusable_id {
            continue;
        }
        let value = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or(b"");
        let value = String::from_utf8_lossy(value).replace("\r\n", "").replace('\n', "");
        match client_field(name, value.trim(), ours.subject.is_some(), policy.rules.field_rules(), from, &reach) {
            Fate::Keep => {
                if let Some(field) = raw.get(h.offset_field as usize..h.offset_end as usize) {
                    out.extend_from_slice(field);
                }
            }
            Fate::Drop => {}
            Fate::Rewrite(list) => {
                if name.trim().eq_ignore_ascii_case("sender") {
                    sender_field.extend(list.iter().map(|r| r.named.clone()));
                }
                out.extend(header_line(&canonical_name(name), mailboxes(&list)));
            }
            Fate::Refuse(r) => return Err(reject(550, "5.7.1", &r)),
        }
    }
    Ok((out, sender_field))
}

/// `Sender` / `Reply-To` in their usual spelling for a rewritten field.
fn canonical_name(name: &str) -> String {
    if name.trim().eq_ignore_ascii_case("sender") {
        "Sender".into()
    } else {
        "Reply-To".into()
    }
}

fn mailboxes(list: &[Rewritten]) -> MbAddress<'_> {
    fn one(r: &Rewritten) -> MbAddress<'_> {
        MbAddress::new_address(r.name.as_deref(), r.demail.as_str())
    }
    match list {
        [r] => one(r),
        _ => MbAddress::new_list(list.iter().map(one).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::parse(&policy_src()).unwrap()
    }

    fn policy_src() -> String {
        String::from(
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
    fn sender_and_reply_to_follow_the_policy() {
        // Defaults: a client's Sender goes, an internal Reply-To becomes its De-Mail address.
        let raw = b"From: peter@stadt.de\r\nSender: Chef <chef@stadt.de>\r\nReply-To: Team <team@stadt.de>,\r\n poststelle@stadt.de-mail.de\r\nSubject: x\r\n\r\nT\r\n";
        let p = prepare_one(raw);
        let s = String::from_utf8(p.message).unwrap();
        assert!(!s.to_ascii_lowercase().contains("sender:") && !s.contains("chef@"), "{s}");
        let unfolded = s.replace("\r\n\t", " ").replace("\r\n ", " ");
        assert!(
            unfolded.contains("Reply-To: \"Team\" <team@stadt.de-mail.de>,  <poststelle@stadt.de-mail.de>\r\n"),
            "{s}"
        );
        assert!(p.sender_field.is_empty());
        // Replies leaving the organisation refuse the message, with the code first.
        for (reply_to, code) in [
            ("privat@gmail.com", "[reply_to.outside]"),
            ("anna@buerger.de-mail.de", "[reply_to.outside]"),
            ("team@stadt.de, x@evil.example", "[reply_to.outside]"),
        ] {
            let raw = format!("From: peter@stadt.de\r\nReply-To: {reply_to}\r\nSubject: x\r\n\r\nT\r\n");
            let r = prepare(&policy(), "", &["a@b.de-mail.de".into()], raw.into_bytes(), 0, &E).unwrap_err();
            assert_eq!((r.code, r.enhanced.as_str()), (550, "5.7.1"), "{reply_to}");
            assert!(r.text_de.starts_with(code) && r.text_en.starts_with(code), "{reply_to}: {r}");
        }
        // "rewrite": the Sender is kept as its De-Mail address and reported for the binding check.
        let src = policy_src()
            .replace("[authorization]", "[rules]\nsender_header = \"rewrite\"\nreply_to = \"drop\"\n[authorization]");
        let pol = Policy::parse(&src).unwrap();
        let p = prepare(&pol, "", &["a@b.de-mail.de".into()], raw.to_vec(), 0, &E).unwrap();
        let s = String::from_utf8(p.message).unwrap();
        assert!(s.contains("Sender: \"Chef\" <chef@stadt.de-mail.de>\r\n"), "{s}");
        assert!(!s.contains("Reply-To"), "{s}");
        assert_eq!(p.sender_field, ["chef@stadt.de"]);
        let raw = b"From: peter@stadt.de\r\nSender: boss@extern.de\r\nSubject: x\r\n\r\nT\r\n";
        let r = prepare(&pol, "", &["a@b.de-mail.de".into()], raw.to_vec(), 0, &E).unwrap_err();
        assert!(r.text_en.starts_with("[sender_field.outside]"), "{r}");
    }

    #[test]
    fn confirm_reasons_go_to_the_caller_unless_the_client_states_them_confirmed() {
        let src = policy_src().replace("[authorization]", "[rules]\nmixed_addressing = \"warn\"\n[authorization]");
        let pol = Policy::parse(&src).unwrap();
        let rcpts: Vec<String> = vec!["a@b.de-mail.de".into(), "x@example.org".into()];
        let raw = b"From: peter@stadt.de\r\nSubject: [P] x\r\n\r\nT\r\n";
        let p = prepare(&pol, "", &rcpts, raw.to_vec(), 0, &E).unwrap();
        let codes: Vec<&str> = p.unconfirmed.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, ["mixed.confirm"]);
        let raw = b"From: peter@stadt.de\r\nX-Demail-Confirmed: mixed.confirm\r\nSubject: [P] x\r\n\r\nT\r\n";
        let p = prepare(&pol, "", &rcpts, raw.to_vec(), 0, &E).unwrap();
        assert!(p.unconfirmed.is_empty());
        assert!(!String::from_utf8(p.message).unwrap().contains("Confirmed"), "the statement stays here");
        // Confirming something else does not count.
        let raw = b"From: peter@stadt.de\r\nX-Demail-Confirmed: demail.not_marked\r\nSubject: [P] x\r\n\r\nT\r\n";
        assert_eq!(prepare(&pol, "", &rcpts, raw.to_vec(), 0, &E).unwrap().unconfirmed.len(), 1);
    }

    /// Fuzz finding (gateway_prepare): an empty `Message-ID:` was kept next to the
    /// generated one, so the message went out with two; `<>` was taken as the idempotency
    /// key (a second such message would have been a "duplicate"); of two fields, the last
    /// was the key while the provider may read the first.
    #[test]
    fn an_unreadable_message_id_is_replaced_not_doubled() {
        for raw in [
            &b"From: peter@stadt.de\r\nSender: sek@stadt.de\r\nReply-To: team@stadt.de\r\nMessage-ID:\r\nSubject: [De-Mail] x\r\n\r\n"[..],
            b"From: peter@stadt.de\r\nMessage-ID: <>\r\nSubject: x\r\n\r\nT\r\n",
            b"From: peter@stadt.de\r\nMessage-ID: <a@x>\r\nMessage-ID:\r\n (kaputt)\r\nSubject: x\r\n\r\nT\r\n",
        ] {
            let p = prepare_one(raw);
            let s = String::from_utf8(p.message).unwrap();
            assert_eq!(s.to_ascii_lowercase().matches("message-id:").count(), 1, "{s}");
            assert!(s.contains(&format!("Message-ID: <{}>\r\n", p.message_id.unwrap())), "{s}");
        }
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
