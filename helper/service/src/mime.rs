//! Turning a submit request into the message that goes to the gateway.
//!
//! Every De-Mail decision comes from the core: the send check (`check`), the header
//! lines and private-id (`api::headers`), subject tags (`subject::parse`/`format`) and
//! option headers in raw MIME (`options::options_from_headers`). This module only does
//! MIME plumbing: building with mail-builder, splitting and rewriting a header block,
//! and refusing anything that could inject header lines.

use crate::code;
use crate::config::Dialect;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::http::StatusCode;
use demail_core::address::parse_address_list;
use demail_core::api::{self, Env};
use demail_core::check::{check, CheckInput, CheckResult, Verdict};
use demail_core::headers::PRIVATE_ID;
use demail_core::options::{apply_rules, options_from_headers};
use demail_core::reason::Severity;
use demail_core::submission::{dropped_from_submission, new_message_id};
use demail_core::{subject, OptionSet, Policy, Reason};
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::text::Text;
use mail_builder::headers::Header;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use serde::Deserialize;
use serde_json::json;

/// `POST /v1/messages` with a JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitRequest {
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    pub options: Vec<String>,
    pub private_id: Option<String>,
    /// Optional own Message-ID (without or with `<>`); generated when absent.
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// The message answers or forwards a received De-Mail.
    pub forwarded_demail: bool,
    /// The user confirmed a `confirm` verdict of the check.
    pub confirmed: bool,
    /// A complete RFC 5322 message, base64; then only `options`, `private_id`,
    /// `confirmed` and `forwarded_demail` may accompany it.
    pub raw: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    /// Content, base64.
    pub data: String,
}

/// The finished message in two parts, so a large raw message is never copied as a
/// whole: the (new) header block and the unchanged body, a slice of the request buffer.
#[derive(Debug, Clone, Default)]
pub struct Mime {
    pub head: Vec<u8>,
    pub body: Bytes,
}

impl Mime {
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One contiguous copy (tests, small messages).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.head);
        v.extend_from_slice(&self.body);
        v
    }
}

/// A message ready for the outbox.
#[derive(Debug)]
pub struct Prepared {
    pub mime: Mime,
    /// Without angle brackets.
    pub message_id: String,
    pub private_id: String,
    pub private_id_generated: bool,
    /// Envelope sender (addr-spec).
    pub sender: String,
    /// Envelope recipients (To, Cc and Bcc).
    pub recipients: Vec<String>,
    /// Subject without De-Mail tags.
    pub subject: String,
    pub options: OptionSet,
    pub check: CheckResult,
}

/// Largest single header value we accept from a client (the core caps address lists itself).
const MAX_FIELD: usize = 16 * 1024;

fn crlf(field: &str) -> ApiError {
    ApiError::new(
        code::SUBMIT_CRLF,
        format!("Das Feld „{field}“ enthält Zeilenumbrüche oder Steuerzeichen; das ist nicht erlaubt."),
        format!("The field \"{field}\" contains line breaks or control characters, which is not allowed."),
    )
    .with_details(json!({ "field": field }))
}

/// Refuse CR, LF, NUL and other control characters (TAB is fine) in a header-bound value.
fn header_safe(field: &str, v: &str) -> Result<(), ApiError> {
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(crlf(field));
    }
    if v.len() > MAX_FIELD {
        return Err(ApiError::invalid(field, "zu lang.", "too long."));
    }
    Ok(())
}

/// The core's refusal, passed on with the reason also in `details.reasons`.
fn reason_error(status: StatusCode, r: Reason) -> ApiError {
    let details = json!({ "reasons": [&r] });
    ApiError::core(status, r).with_details(details)
}

/// Turn the core's verdict into "go on" or a refusal with the core's reasons.
fn judge(result: &CheckResult, confirmed: bool) -> Result<(), ApiError> {
    // The first reason of that weight says why, under the helper's code.
    let refuse = |code: code::ApiCode, sev: Severity, de: &str, en: &str| {
        let e = match result.reasons.iter().find(|r| r.severity == Some(sev)) {
            Some(r) => ApiError::wrap(code, r.clone()),
            None => ApiError::new(code, de, en),
        };
        Err(e.with_details(json!({ "check": result })))
    };
    match result.verdict {
        Verdict::Blocked => refuse(
            code::SUBMIT_BLOCKED,
            Severity::Block,
            "Diese Nachricht darf nicht als De-Mail versendet werden.",
            "This message must not be sent as De-Mail.",
        ),
        Verdict::Confirm if !confirmed => refuse(
            code::SUBMIT_CONFIRM_REQUIRED,
            Severity::Confirm,
            "Bitte bestätigen Sie den Versand als De-Mail.",
            "Please confirm sending as De-Mail.",
        ),
        Verdict::Email => Err(ApiError::new(
            code::SUBMIT_NOT_DEMAIL,
            "Diese Nachricht hat keinen De-Mail-Empfänger; sie gehört nicht in den De-Mail-Postausgang.",
            "This message has no De-Mail recipient; it does not belong in the De-Mail outbox.",
        )
        .with_details(json!({ "check": result }))),
        _ => Ok(()),
    }
}

fn parse_options(ids: &[String]) -> Result<OptionSet, ApiError> {
    OptionSet::parse_ids(ids.iter().map(String::as_str)).map_err(|r| reason_error(StatusCode::BAD_REQUEST, r))
}

/// A Message-ID given by a client: `local@domain` from atext and dots, at most 250 bytes.
fn clean_message_id(field: &str, v: &str) -> Result<String, ApiError> {
    header_safe(field, v)?;
    let id = v.trim().trim_start_matches('<').trim_end_matches('>');
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-@[]".contains(c);
    let valid = id.len() <= 250
        && id.matches('@').count() == 1
        && !id.starts_with('@')
        && !id.ends_with('@')
        && id.chars().all(ok_char);
    if !valid {
        return Err(ApiError::invalid(
            field,
            "ist keine gültige Message-ID (lokal@domain).",
            "is not a valid Message-ID (local@domain).",
        ));
    }
    Ok(id.to_string())
}

/// The header lines for the options and the private-id, from the core.
/// Header lines, the private-id, and whether it was generated.
type DemailHeaders = (Vec<(String, String)>, String, bool);

fn demail_headers(
    policy: &Policy,
    options: OptionSet,
    private_id: Option<&str>,
    sender: &str,
    env: &Env,
) -> Result<DemailHeaders, ApiError> {
    let h = api::headers(policy, options, private_id, Some(sender), env)
        .map_err(|e| reason_error(StatusCode::UNPROCESSABLE_ENTITY, e.reason))?;
    let lines = h.headers.into_iter().map(|l| (l.name, l.value)).collect();
    Ok((lines, h.private_id, h.private_id_generated))
}

/// The subject and header lines for the gateway's dialect.
fn dialect_view(
    dialect: Dialect,
    subject_text: &str,
    options: OptionSet,
    lines: Vec<(String, String)>,
    policy: &Policy,
) -> Result<(String, Vec<(String, String)>), ApiError> {
    match dialect {
        Dialect::Headers => Ok((subject_text.to_string(), lines)),
        Dialect::SubjectTags => {
            let s = subject::format(subject_text, options, &policy.subject)
                .map_err(|r| reason_error(StatusCode::UNPROCESSABLE_ENTITY, r))?;
            // The gateway reads options from the tags only; the reference still travels as header.
            let keep = lines.into_iter().filter(|(n, _)| n.eq_ignore_ascii_case(PRIVATE_ID)).collect();
            Ok((s, keep))
        }
    }
}

/// Tags typed into a subject count like ticked options (as at the gateway).
fn subject_options(subject_text: &str, policy: &Policy) -> Result<(String, OptionSet), ApiError> {
    let parsed = subject::parse(subject_text, &policy.subject);
    if let Some(e) = parsed.errors.into_iter().next() {
        return Err(reason_error(StatusCode::UNPROCESSABLE_ENTITY, e));
    }
    Ok((parsed.subject, if parsed.demail { parsed.options } else { OptionSet::EMPTY }))
}

fn mailbox_addr(m: &demail_core::address::Mailbox) -> Address<'static> {
    Address::new_address(m.name.clone(), m.address.clone())
}

fn address_list(field: &str, entries: &[String]) -> Result<Vec<Address<'static>>, ApiError> {
    let mut out = Vec::new();
    for e in entries {
        let list = parse_address_list(e).map_err(|r| {
            let details = json!({ "field": field, "reasons": [&r] });
            ApiError::core(StatusCode::UNPROCESSABLE_ENTITY, r).with_details(details)
        })?;
        out.extend(list.iter().map(mailbox_addr));
    }
    Ok(out)
}

fn valid_content_type(ct: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty() && s.len() <= 127 && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    match ct.split_once('/') {
        Some((t, s)) => token(t) && token(s),
        None => false,
    }
}

/// Build a De-Mail from structured JSON.
pub fn prepare_structured(
    req: &SubmitRequest,
    policy: &Policy,
    dialect: Dialect,
    env: &Env,
) -> Result<Prepared, ApiError> {
    header_safe("from", &req.from)?;
    for (field, list) in [("to", &req.to), ("cc", &req.cc), ("bcc", &req.bcc)] {
        for v in list {
            header_safe(field, v)?;
        }
    }
    header_safe("subject", &req.subject)?;
    if let Some(p) = &req.private_id {
        header_safe("private_id", p)?;
    }
    for a in &req.attachments {
        header_safe("attachments.filename", &a.filename)?;
        header_safe("attachments.content_type", &a.content_type)?;
        if !valid_content_type(a.content_type.trim()) {
            return Err(ApiError::invalid(
                "attachments.content_type",
                "ist kein MIME-Typ (typ/untertyp).",
                "is not a MIME type (type/subtype).",
            ));
        }
        if a.filename.trim().is_empty() {
            return Err(ApiError::invalid("attachments.filename", "darf nicht leer sein.", "must not be empty."));
        }
    }
    let message_id = match &req.message_id {
        Some(m) => Some(clean_message_id("message_id", m)?),
        None => None,
    };
    let in_reply_to = match &req.in_reply_to {
        Some(m) => Some(clean_message_id("in_reply_to", m)?),
        None => None,
    };
    let references = req.references.iter().map(|m| clean_message_id("references", m)).collect::<Result<Vec<_>, _>>()?;

    let (clean_subject, tag_options) = subject_options(&req.subject, policy)?;
    let options = parse_options(&req.options)?.union(tag_options);

    let input = CheckInput {
        from: req.from.clone(),
        to: req.to.clone(),
        cc: req.cc.clone(),
        bcc: req.bcc.clone(),
        options,
        marked: true,
        size: None,
        forwarded_demail: req.forwarded_demail,
        private_id: req.private_id.clone(),
    };
    let result = check(&input, policy);
    judge(&result, req.confirmed)?;

    let sender_list = parse_address_list(&req.from).map_err(|r| reason_error(StatusCode::UNPROCESSABLE_ENTITY, r))?;
    let Some(sender) = sender_list.first() else {
        return Err(ApiError::invalid("from", "fehlt.", "is missing."));
    };
    let (lines, private_id, generated) =
        demail_headers(policy, result.options, req.private_id.as_deref(), &sender.address, env)?;
    let (subject_out, lines) = dialect_view(dialect, &clean_subject, result.options, lines, policy)?;
    let message_id = message_id.unwrap_or_else(|| new_message_id(env.now_millis, &env.entropy, &sender.address));

    let mut b = MessageBuilder::new()
        .from(mailbox_addr(sender))
        .subject(Text::new(subject_out))
        .message_id(MessageId::new(message_id.clone()))
        .date(Date::new((env.now_millis / 1000) as i64));
    let to = address_list("to", &req.to)?;
    if !to.is_empty() {
        b = b.to(Address::new_list(to));
    }
    let cc = address_list("cc", &req.cc)?;
    if !cc.is_empty() {
        b = b.cc(Address::new_list(cc));
    }
    // Bcc recipients go into the envelope only.
    if let Some(r) = in_reply_to {
        b = b.in_reply_to(MessageId::new(r));
    }
    if !references.is_empty() {
        b = b.references(MessageId::new_list(references.iter().map(String::as_str)));
    }
    for (name, value) in lines {
        b = b.header(name, Text::new(value));
    }
    match (&req.text, &req.html) {
        (None, None) => b = b.text_body(String::new()),
        (text, html) => {
            if let Some(t) = text {
                b = b.text_body(body_text("text", t)?);
            }
            if let Some(h) = html {
                b = b.html_body(body_text("html", h)?);
            }
        }
    }
    use base64::Engine;
    for a in &req.attachments {
        let data = base64::engine::general_purpose::STANDARD
            .decode(a.data.trim())
            .map_err(|_| ApiError::invalid("attachments.data", "ist kein gültiges Base64.", "is not valid base64."))?;
        let ct = a.content_type.trim().to_ascii_lowercase();
        if raw_text_would_break(&ct, &data) {
            let part = MimePart::new(ContentType::new(ct), BodyPart::Binary(base64_lines(&data).into()))
                .attachment(a.filename.clone())
                .transfer_encoding("base64");
            b.attachments.get_or_insert_with(Vec::new).push(part);
        } else {
            b = b.attachment(ContentType::new(ct), a.filename.clone(), data);
        }
    }
    let mime = b.write_to_vec().map_err(ApiError::internal)?;

    finish(
        Mime { head: mime, body: Bytes::new() },
        &input,
        policy,
        req.confirmed,
        message_id,
        private_id,
        generated,
        clean_subject,
    )
}

/// The size rule needs the finished message: run the check once more with its size.
#[allow(clippy::too_many_arguments)]
fn finish(
    mime: Mime,
    input: &CheckInput,
    policy: &Policy,
    confirmed: bool,
    message_id: String,
    private_id: String,
    generated: bool,
    subject: String,
) -> Result<Prepared, ApiError> {
    let mut sized = input.clone();
    sized.size = Some(mime.len() as u64);
    let result = check(&sized, policy);
    let too_large = result.reasons.iter().find(|r| r.code == code::CORE_SIZE_EXCEEDED);
    if let (Verdict::Blocked, Some(r)) = (result.verdict, too_large) {
        return Err(ApiError::wrap(code::SUBMIT_TOO_LARGE, r.clone()).with_details(json!({ "check": result })));
    }
    judge(&result, confirmed)?;
    // The envelope sender is the e-mail address; the gateway maps it to the De-Mail address.
    let sender =
        parse_address_list(&input.from).ok().and_then(|l| l.first().map(|m| m.address.clone())).unwrap_or_default();
    Ok(Prepared {
        mime,
        message_id,
        private_id,
        private_id_generated: generated,
        sender,
        recipients: result.recipients.iter().map(|r| r.address.clone()).collect(),
        subject,
        options: result.options,
        check: result,
    })
}

// ---------------------------------------------------------------- raw MIME

/// One header field as it stood in the message.
struct Field {
    name: String,
    /// Unfolded value, trimmed.
    value: String,
    /// The field's bytes including continuation lines and the final CRLF.
    raw: Vec<u8>,
}

fn mime_invalid(de: &str, en: &str) -> ApiError {
    ApiError::new(
        code::SUBMIT_MIME_INVALID,
        format!("Die Nachricht ist kein gültiges RFC-5322-Format: {de}"),
        format!("The message is not valid RFC 5322: {en}"),
    )
}

/// mail-builder writes a `text/*` attachment as 7bit when it finds nothing to encode, and
/// it does not count a NUL or a lone CR as such (found by fuzzing): the gateway would refuse
/// the message. Such an attachment goes as base64.
fn raw_text_would_break(content_type: &str, data: &[u8]) -> bool {
    content_type.starts_with("text/")
        && data.iter().enumerate().any(|(i, &b)| b == 0 || (b == b'\r' && data.get(i + 1) != Some(&b'\n')))
}

/// Base64 in lines of 76 characters with CRLF (RFC 2045 §6.8), mail-builder's encoder.
fn base64_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 4);
    // Writing into a Vec cannot fail.
    let _ = mail_builder::encoders::base64::base64_encode_mime(data, &mut out, false);
    out
}

/// A bare CR or a NUL anywhere in the message: the gateway refuses both (554 5.6.0, with
/// the same texts), so the helper refuses them when they are submitted, not after the
/// caseworker's window has closed.
fn bare_cr_or_nul(raw: &[u8]) -> Result<(), ApiError> {
    for i in memchr::memchr2_iter(b'\r', 0, raw) {
        if raw[i] == 0 {
            return Err(ApiError::new(
                code::SUBMIT_NUL,
                "Die Nachricht enthält NUL-Bytes.",
                "The message contains NUL bytes.",
            ));
        }
        if raw.get(i + 1) != Some(&b'\n') {
            return Err(ApiError::new(
                code::SUBMIT_BARE_CR,
                "Die Nachricht enthält ein CR ohne LF (bare CR).",
                "The message contains a bare CR.",
            ));
        }
    }
    Ok(())
}

/// A text or HTML body for mail-builder with CRLF line ends only: a lone CR or LF becomes
/// CRLF (mail-builder passes a bare LF after a tab through quoted-printable; found by
/// fuzzing), a NUL is refused; either would make the gateway refuse the whole message.
fn body_text(field: &str, v: &str) -> Result<String, ApiError> {
    if v.contains('\0') {
        return Err(ApiError::new(
            code::SUBMIT_NUL,
            format!("Das Feld „{field}“ enthält NUL-Zeichen."),
            format!("The field \"{field}\" contains NUL characters."),
        )
        .with_details(json!({ "field": field })));
    }
    let mut out = String::with_capacity(v.len() + v.len() / 50);
    let mut it = v.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\r' => {
                out.push_str("\r\n");
                if it.peek() == Some(&'\n') {
                    it.next();
                }
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// CRLF everywhere (bare LF becomes CRLF). A message that has only CRLF already is not copied.
fn to_crlf(raw: Bytes) -> Bytes {
    let has_bare_lf = raw.iter().enumerate().any(|(i, b)| *b == b'\n' && (i == 0 || raw[i - 1] != b'\r'));
    if !has_bare_lf {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50);
    let mut prev = 0u8;
    for &b in raw.iter() {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    Bytes::from(out)
}

fn split_header(msg: &[u8]) -> Result<(Vec<Field>, usize), ApiError> {
    let end = msg.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        mime_invalid("keine Leerzeile zwischen Kopf und Text.", "no blank line between header and body.")
    })?;
    let head = &msg[..end + 2];
    let body_start = end + 4;
    let mut fields: Vec<Field> = Vec::new();
    for line in head.split_inclusive(|b| *b == b'\n') {
        let content = &line[..line.len().saturating_sub(2)];
        if content.contains(&b'\r') || content.contains(&0) {
            return Err(mime_invalid("Kopfzeile mit einzelnem CR oder NUL.", "header line with a bare CR or NUL."));
        }
        let text = std::str::from_utf8(content)
            .map_err(|_| mime_invalid("Kopfzeile ist nicht UTF-8.", "header line is not UTF-8."))?;
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            let Some(f) = fields.last_mut() else {
                return Err(mime_invalid(
                    "Fortsetzungszeile ohne Kopfzeile.",
                    "continuation line without a header field.",
                ));
            };
            f.value.push_str(text);
            f.raw.extend_from_slice(line);
            continue;
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(mime_invalid("Kopfzeile ohne Doppelpunkt.", "header line without a colon."));
        };
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(mime_invalid("ungültiger Name einer Kopfzeile.", "invalid header field name."));
        }
        fields.push(Field { name: name.to_string(), value: value.to_string(), raw: line.to_vec() });
    }
    for f in &mut fields {
        f.value = f.value.trim().to_string();
    }
    Ok((fields, body_start))
}

/// The gateway reads the header block with mail-parser. It must find exactly the fields
/// the helper wrote, where the helper wrote them: mail-parser's Date parser, given a date
/// with junk after the zone (`Date: 1 Jan 2026 08:00 +0100+Z`), reads on across the empty
/// line and takes body lines such as `X-de-mail-authoritative: yes` or `Bcc: …` for header
/// fields (found by fuzzing). Such a message is refused, not smuggled.
fn read_alike(head: &[u8], body: &[u8], starts: &[usize]) -> Result<(), ApiError> {
    // Enough of the body to see a field read from it; the header block itself is small.
    let mut probe = Vec::with_capacity(head.len() + 4096);
    probe.extend_from_slice(head);
    probe.extend_from_slice(&body[..body.len().min(4096)]);
    let seen: Vec<usize> = mail_parser::MessageParser::new()
        .parse_headers(&probe[..])
        .map(|m| m.headers().iter().map(|h| h.offset_field as usize).collect())
        .unwrap_or_default();
    if seen != starts {
        return Err(mime_invalid(
            "eine Kopfzeile (etwa ein fehlerhaftes Datum) lesen übliche Programme anders; das Gateway sähe eine andere Nachricht.",
            "a header field (such as a malformed date) is read differently by common software; the gateway would see another message.",
        ));
    }
    Ok(())
}

fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // Text folds long values and encodes non-ASCII (RFC 2047); writing to a Vec cannot fail.
    let _ = Text::new(value).write_header(&mut *out, name.len() + 2);
}

/// Options that come with a raw message in the JSON envelope.
pub struct RawExtras<'a> {
    pub options: &'a [String],
    pub private_id: Option<&'a str>,
    pub confirmed: bool,
    pub forwarded_demail: bool,
    /// SMTP submission: the envelope recipients (`RCPT TO`). They are checked like Bcc
    /// and are the only addresses the message is relayed to.
    pub envelope_rcpts: Option<&'a [String]>,
}

/// Validate a complete message with the core and rewrite its De-Mail header fields
/// for the gateway's dialect.
pub fn prepare_raw(
    raw: Bytes,
    extras: &RawExtras,
    policy: &Policy,
    dialect: Dialect,
    env: &Env,
) -> Result<Prepared, ApiError> {
    bare_cr_or_nul(&raw)?;
    let msg = to_crlf(raw);
    let (fields, body_start) = split_header(&msg)?;
    fn all<'a>(fields: &'a [Field], n: &'static str) -> impl Iterator<Item = &'a Field> + 'a {
        fields.iter().filter(move |f| f.name.eq_ignore_ascii_case(n))
    }
    fn one<'a>(fields: &'a [Field], n: &'static str) -> Result<Option<&'a Field>, ApiError> {
        let mut it = all(fields, n);
        let first = it.next();
        if it.next().is_some() {
            return Err(mime_invalid(
                &format!("„{n}“ kommt mehrfach vor."),
                &format!("\"{n}\" occurs more than once."),
            ));
        }
        Ok(first)
    }
    let from = one(&fields, "From")?.map(|f| f.value.clone()).unwrap_or_default();
    one(&fields, "Subject")?;
    let list = |n: &'static str| all(&fields, n).map(|f| f.value.clone()).collect::<Vec<_>>();
    let (to, cc, bcc) = (list("To"), list("Cc"), list("Bcc"));
    let message_id = match one(&fields, "Message-ID")? {
        Some(f) => Some(clean_message_id("Message-ID", &f.value)?),
        None => None,
    };
    // Decoded subject (encoded words) from mail-parser.
    let parsed = mail_parser::MessageParser::new().parse_headers(&msg[..]);
    let subject_text = parsed.as_ref().and_then(|m| m.subject()).unwrap_or_default().to_string();
    if subject_text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(crlf("Subject"));
    }

    let header_opts = options_from_headers(fields.iter().map(|f| (f.name.as_str(), f.value.as_str())));
    if let Some(p) = header_opts.problems.into_iter().next() {
        return Err(reason_error(StatusCode::UNPROCESSABLE_ENTITY, p));
    }
    let (clean_subject, tag_options) = subject_options(&subject_text, policy)?;
    let options = header_opts.options.union(tag_options).union(parse_options(extras.options)?);
    let (_, contradictions) = apply_rules(options, header_opts.explicit_no, None);
    if let Some(p) = contradictions.into_iter().next() {
        return Err(reason_error(StatusCode::UNPROCESSABLE_ENTITY, p));
    }
    let header_private_id = all(&fields, PRIVATE_ID).next().map(|f| f.value.clone());
    let private_id = extras.private_id.map(str::to_string).or(header_private_id);

    let bcc = match extras.envelope_rcpts {
        Some(env) => env.to_vec(),
        None => bcc,
    };
    let input = CheckInput {
        from: from.clone(),
        to,
        cc,
        bcc,
        options,
        marked: true,
        size: None,
        forwarded_demail: extras.forwarded_demail,
        private_id: private_id.clone(),
    };
    let result = check(&input, policy);
    judge(&result, extras.confirmed)?;
    let sender = parse_address_list(&from)
        .ok()
        .and_then(|l| l.into_iter().next())
        .ok_or_else(|| ApiError::invalid("From", "fehlt.", "is missing."))?;
    let (lines, private_id, generated) =
        demail_headers(policy, result.options, private_id.as_deref(), &sender.address, env)?;
    let rewrite_subject = dialect == Dialect::SubjectTags || clean_subject != subject_text;
    let (subject_out, lines) = dialect_view(dialect, &clean_subject, result.options, lines, policy)?;

    let mut out = Vec::with_capacity(body_start + 1024);
    // Where each field of the new header block starts (for the check below).
    let mut starts = Vec::new();
    let message_id = match message_id {
        Some(m) => m,
        None => {
            let m = new_message_id(env.now_millis, &env.entropy, &sender.address);
            starts.push(out.len());
            out.extend_from_slice(format!("Message-ID: <{m}>\r\n").as_bytes());
            m
        }
    };
    for (n, v) in &lines {
        starts.push(out.len());
        write_field(&mut out, n, v);
    }
    if rewrite_subject {
        starts.push(out.len());
        write_field(&mut out, "Subject", &subject_out);
    }
    for f in &fields {
        if !dropped_from_submission(&f.name, rewrite_subject) {
            starts.push(out.len());
            out.extend_from_slice(&f.raw);
        }
    }
    out.extend_from_slice(b"\r\n");
    let body = msg.slice(body_start..);
    read_alike(&out, &body, &starts)?;
    let mime = Mime { head: out, body };

    let mut prepared =
        finish(mime, &input, policy, extras.confirmed, message_id, private_id, generated, clean_subject)?;
    if let Some(env) = extras.envelope_rcpts {
        let mut rcpts = Vec::new();
        for r in env {
            let a = demail_core::address::normalize_addr_spec(r)
                .map_err(|r| reason_error(StatusCode::UNPROCESSABLE_ENTITY, r))?;
            if !rcpts.contains(&a) {
                rcpts.push(a);
            }
        }
        prepared.recipients = rcpts;
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env { now_millis: 1_795_775_532_000, entropy: vec![1, 2, 3, 4, 5, 6, 7, 8] }
    }

    fn req() -> SubmitRequest {
        SubmitRequest {
            from: "Peter Meier <peter.meier@musterstadt.de>".into(),
            to: vec!["Anna Bürger <anna@buerger.de-mail.de>".into()],
            subject: "Ihr Antrag".into(),
            text: Some("Guten Tag".into()),
            options: vec!["confirmation-of-retrieve".into()],
            ..Default::default()
        }
    }

    #[test]
    fn structured_has_core_headers() {
        let p = prepare_structured(&req(), &Policy::default(), Dialect::Headers, &env()).unwrap();
        let s = String::from_utf8(p.mime.to_vec()).unwrap();
        assert!(s.contains("X-de-mail-confirmation-of-retrieve: yes\r\n"), "{s}");
        assert!(s.contains("X-de-mail-private: yes\r\n"), "retrieve implies private: {s}");
        assert!(s.contains(&format!("X-de-mail-private-id: {}", p.private_id)));
        assert!(p.private_id_generated);
        assert_eq!(p.recipients, vec!["anna@buerger.de-mail.de"]);
    }

    #[test]
    fn subject_tags_dialect_uses_core_formatter() {
        let p = prepare_structured(&req(), &Policy::default(), Dialect::SubjectTags, &env()).unwrap();
        let s = String::from_utf8(p.mime.to_vec()).unwrap();
        assert!(s.contains("Subject: [P, AB] Ihr Antrag\r\n"), "{s}");
        assert!(!s.contains("X-de-mail-private: yes"));
        assert!(s.contains("X-de-mail-private-id:"));
    }

    #[test]
    fn crlf_in_subject_is_refused() {
        let mut r = req();
        r.subject = "Hallo\r\nBcc: evil@example.org".into();
        let e = prepare_structured(&r, &Policy::default(), Dialect::Headers, &env()).unwrap_err();
        assert_eq!(e.code(), "submit.crlf");
    }

    #[test]
    fn raw_is_rewritten() {
        let raw = b"From: peter.meier@musterstadt.de\nTo: anna@buerger.de-mail.de\nBcc: geheim@buerger.de-mail.de\nSubject: [P] Bescheid\nX-de-mail-private: no\nX-DE-MAIL-authoritative: yes\n\nText\n";
        let extras = RawExtras {
            options: &[],
            private_id: Some("AZ-1"),
            confirmed: false,
            forwarded_demail: false,
            envelope_rcpts: None,
        };
        let p = prepare_raw(Bytes::from_static(raw), &extras, &Policy::default(), Dialect::Headers, &env()).unwrap();
        let s = String::from_utf8(p.mime.to_vec()).unwrap();
        assert!(!s.contains("Bcc"), "{s}");
        assert!(s.contains("Subject: Bescheid\r\n"), "{s}");
        assert!(s.contains("X-de-mail-authoritative: yes\r\n"));
        assert!(s.contains("X-de-mail-private: yes\r\n"), "tag P wins over stale header: {s}");
        assert!(s.contains("X-de-mail-private-id: AZ-1\r\n"));
        assert!(s.starts_with("Message-ID: <"));
        assert_eq!(p.recipients.len(), 2);
    }

    #[test]
    fn blocked_mixed_addressing() {
        let mut r = req();
        r.to.push("x@example.org".into());
        let e = prepare_structured(&r, &Policy::default(), Dialect::Headers, &env()).unwrap_err();
        assert_eq!(e.code(), "submit.blocked");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn bare_cr_and_nul_are_refused_anywhere_bare_lf_is_fixed() {
        let extras = RawExtras {
            options: &[],
            private_id: None,
            confirmed: false,
            forwarded_demail: false,
            envelope_rcpts: None,
        };
        let head = "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: x\r\n\r\n";
        let go = |m: String| prepare_raw(Bytes::from(m), &extras, &Policy::default(), Dialect::Headers, &env());
        assert_eq!(go(format!("{head}a\rb\r\n")).unwrap_err().code(), "submit.bare_cr");
        assert_eq!(go(format!("{head}ab\r")).unwrap_err().code(), "submit.bare_cr");
        assert_eq!(go(format!("{head}a\u{0}b\r\n")).unwrap_err().code(), "submit.nul");
        let ok = go(format!("{head}a\nb\n")).unwrap();
        assert!(!ok.mime.to_vec().windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    }

    /// What the structured path builds never holds a bare CR or NUL either, whatever the
    /// text: the gateway would refuse it after the caseworker's window closed.
    #[test]
    fn structured_text_with_cr_or_nul_gives_a_clean_message() {
        // The last: fuzz/artifacts/helper_prepare_structured/crash-0be5a9d1… (a bare LF after
        // a tab came out of mail-builder's quoted-printable unchanged).
        for text in ["Zeile 1\rZeile 2", "a\r\r\nb", "\r", "x\n\ry", "a\t\nb", "a \nb", ".on?i\r\t\net\r\u{11}"] {
            let mut r = req();
            r.text = Some(text.into());
            r.html = Some(format!("<p>{text}</p>"));
            let m = prepare_structured(&r, &Policy::default(), Dialect::Headers, &env()).unwrap().mime.to_vec();
            let bare_lf = m.iter().enumerate().any(|(i, b)| *b == b'\n' && (i == 0 || m[i - 1] != b'\r'));
            assert!(bare_cr_or_nul(&m).is_ok() && !bare_lf, "{text:?}: {}", String::from_utf8_lossy(&m));
        }
        let mut r = req();
        r.text = Some("Text\u{0}mehr".into());
        let e = prepare_structured(&r, &Policy::default(), Dialect::Headers, &env()).unwrap_err();
        assert_eq!((e.code(), e.details.as_ref().map(|d| d["field"].clone())), ("submit.nul", Some(json!("text"))));
    }

    /// A text attachment holding a NUL or a lone CR goes as base64 (fuzz finding: mail-builder
    /// wrote it as 7bit, and the gateway refuses such a message) and comes back unchanged.
    #[test]
    fn a_text_attachment_with_nul_or_lone_cr_goes_as_base64() {
        use base64::Engine;
        for data in [&b"Spalte1\0Spalte2\r\n"[..], b"a\rb", b"\r", b"ok\r\nok\r\n"] {
            let mut r = req();
            r.attachments = vec![Attachment {
                filename: "liste.csv".into(),
                content_type: "text/csv".into(),
                data: base64::engine::general_purpose::STANDARD.encode(data),
            }];
            let m = prepare_structured(&r, &Policy::default(), Dialect::Headers, &env()).unwrap().mime.to_vec();
            assert!(bare_cr_or_nul(&m).is_ok(), "{data:?}: {}", String::from_utf8_lossy(&m));
            let parsed = mail_parser::MessageParser::new().parse(&m).unwrap();
            let att = parsed.attachment(0).expect("the attachment");
            assert_eq!(att.contents(), data, "{}", String::from_utf8_lossy(&m));
            use mail_parser::MimeHeaders;
            assert_eq!(att.attachment_name(), Some("liste.csv"));
        }
    }

    /// Fuzz regressions (fuzz/fuzz_targets/helper_prepare_raw.rs): the helper adds no
    /// header the input did not have, read the same way on both sides (CRLF).
    #[test]
    fn fuzz_raw_inputs_get_no_new_headers() {
        let names = |m: &[u8]| -> Vec<String> {
            let crlf = to_crlf(Bytes::copy_from_slice(m));
            let p = mail_parser::MessageParser::new().parse_headers(&crlf[..]).unwrap();
            p.headers().iter().map(|h| h.name().to_ascii_lowercase()).collect()
        };
        let input = include_bytes!("../tests/data/fuzz/helper_prepare_raw-c53dba72");
        let extras = RawExtras {
            options: &["private".into(), "confirmation-of-dispatch".into()],
            private_id: None,
            confirmed: true,
            forwarded_demail: false,
            envelope_rcpts: None,
        };
        let raw = &input[1..];
        let p =
            prepare_raw(Bytes::copy_from_slice(raw), &extras, &Policy::default(), Dialect::Headers, &env()).unwrap();
        let before = names(raw);
        for n in names(&p.mime.to_vec()) {
            let ours = n == "message-id" || n == "subject" || n.starts_with("x-de-mail-");
            assert!(ours || before.contains(&n), "{n} is new");
        }
        assert!(before.contains(&"ssage-id".to_string()), "the odd header was the input's own");
    }

    /// Fuzz regression (fuzz/artifacts/helper_prepare_raw/crash-46b8dbd4…): a Date with junk
    /// after the zone made mail-parser, and so the gateway, read body lines as header
    /// fields. The helper refuses such a message instead of passing it on.
    #[test]
    fn a_date_that_makes_the_gateway_read_the_body_as_headers_is_refused() {
        let extras = RawExtras {
            options: &[],
            private_id: None,
            confirmed: true,
            forwarded_demail: false,
            envelope_rcpts: None,
        };
        let go =
            |m: &[u8]| prepare_raw(Bytes::copy_from_slice(m), &extras, &Policy::default(), Dialect::Headers, &env());
        let smuggle = b"From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: Bescheid\r\nDate: 1 Jan 2026 08:00 +0100+Z\r\n\r\nX-de-mail-authoritative: yes\r\nBcc: geheim@buerger.de-mail.de\r\n\r\nText\r\n";
        assert_eq!(go(smuggle).unwrap_err().code(), "submit.mime_invalid");
        let found = include_bytes!("../tests/data/fuzz/helper_prepare_raw-46b8dbd4");
        // Its first byte chose: Persönlich, subject tags, the envelope recipient.
        let rcpt = ["anna@buerger.de-mail.de".to_string()];
        let extras = RawExtras { options: &["private".into()], envelope_rcpts: Some(&rcpt), ..extras };
        let r =
            prepare_raw(Bytes::copy_from_slice(&found[1..]), &extras, &Policy::default(), Dialect::SubjectTags, &env());
        assert_eq!(r.unwrap_err().code(), "submit.mime_invalid");
        // A proper date is fine.
        let fine = b"From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: Bescheid\r\nDate: Thu, 1 Jan 2026 08:00:00 +0100\r\n\r\nX-de-mail-authoritative: yes\r\n";
        assert!(go(fine).is_ok());
    }
}
