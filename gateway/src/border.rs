//! The border check: every inbound message's `X-de-mail-integrity` is verified against
//! the providers the policy trusts, and the verdict goes on top as an
//! `Authentication-Results` field (RFC 8601) with this gateway's name, so that every mail
//! client can read it, with or without the add-in. Such fields that arrived with the
//! message under this gateway's name are removed first (RFC 8601 §5): only we write ours.

use demail_core::classify::Kind;
use demail_core::integrity::{Status, Verdict};
use demail_core::Policy;

/// The method name in `Authentication-Results` (our own; not registered with IANA).
pub const METHOD: &str = "demail-integrity";
/// The method for a receipt held against the De-Mail the gateway sent (archived bytes).
pub const RECEIPT_METHOD: &str = "demail-receipt";

/// What the border check made of a message.
#[derive(Debug)]
pub struct Checked {
    pub message: Vec<u8>,
    /// `pass`, `fail`, `neutral`, `none`, `policy` or `permerror`.
    pub result: &'static str,
    /// `Authentication-Results` fields under our name that came with the message.
    pub removed: usize,
    /// For a receipt: `pass` (it confirms exactly what was sent), `fail`, or `none` (no sent
    /// De-Mail with its private-id in the archive).
    pub receipt: Option<&'static str>,
}

/// RFC 8601 result for a verdict: only a valid signature of a trusted provider passes.
pub fn result_of(v: &Verdict) -> &'static str {
    match v.status {
        Status::Valid => "pass",
        Status::Invalid | Status::Expired => "fail",
        Status::HashOnly => "neutral",
        Status::Unsigned => "none",
        Status::UntrustedCertificate => "policy",
    }
}

/// A `quoted-string` of printable ASCII (RFC 5322): what does not fit is dropped.
fn quoted(s: &str) -> String {
    let clean: String =
        s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').filter(|c| *c != '"' && *c != '\\').collect();
    format!("\"{clean}\"")
}

/// The field's value for `authserv_id` (the gateway's host name).
pub fn field_value(authserv_id: &str, v: Option<&Verdict>) -> String {
    let Some(v) = v else {
        return format!("{authserv_id}; {METHOD}=permerror reason=\"integrity.unreadable\"");
    };
    let mut s = format!("{authserv_id}; {METHOD}={}", result_of(v));
    if let Some(r) = v.reasons.first() {
        s.push_str(&format!(" reason={}", quoted(&r.code)));
    }
    if let Some(a) = &v.algorithm {
        s.push_str(&format!(" header.a={}", quoted(a)));
    }
    if let Some(signer) = &v.signer {
        s.push_str(&format!(" policy.signer={}", quoted(signer)));
    }
    s
}

/// Byte ranges of `Authentication-Results` fields whose authserv-id is ours.
fn ours(raw: &[u8], authserv_id: &str) -> Vec<std::ops::Range<usize>> {
    let Some(m) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    m.headers()
        .iter()
        .filter(|h| h.name.as_str().trim().eq_ignore_ascii_case("Authentication-Results"))
        .filter(|h| {
            let end = (h.offset_end as usize).min(raw.len());
            let start = (h.offset_start as usize).min(end);
            let value = String::from_utf8_lossy(&raw[start..end]);
            // The authserv-id is the first token, possibly after comments or folding.
            let id = value.trim_start().split(|c: char| c == ';' || c.is_whitespace()).next().unwrap_or("");
            id.eq_ignore_ascii_case(authserv_id)
        })
        .map(|h| h.offset_field as usize..h.offset_end as usize)
        .collect()
}

/// The receipt part of our field: what [`demail_core::proof::receipt`] found against the
/// archived De-Mail (`sent`: its archive seq and exact bytes as relayed to the provider).
fn receipt_part(raw: &[u8], policy: &Policy, sent: Option<(i64, &[u8])>) -> Option<(&'static str, String)> {
    let check = demail_core::proof::receipt(raw, sent.map(|(_, b)| b), policy)?;
    let (result, reason) = match check.matches_sent {
        Some(true) => ("pass", "receipt.matches_sent".to_string()),
        Some(false) => ("fail", check.reasons.first().map_or_else(String::new, |r| r.code.clone())),
        None => ("none", "receipt.sent_unknown".to_string()),
    };
    let mut part = format!("{RECEIPT_METHOD}={result} reason={}", quoted(&reason));
    if let Some((seq, _)) = sent {
        part.push_str(&format!(" policy.archive-seq={seq}"));
    }
    Some((result, part))
}

/// Verify and mark one inbound message (the provider's bytes as received). A receipt is
/// also held against `sent`, the De-Mail it names as archived.
pub fn check(raw: Vec<u8>, policy: &Policy, authserv_id: &str, now_millis: u64, sent: Option<(i64, &[u8])>) -> Checked {
    let verdict = demail_core::api::integrity_verify(&raw, policy, now_millis, None).ok();
    let ranges = ours(&raw, authserv_id);
    let removed = ranges.len();
    let mut value = field_value(authserv_id, verdict.as_ref());
    let receipt = receipt_part(&raw, policy, sent).map(|(result, part)| {
        value.push_str(&format!(";\r\n {part}"));
        result
    });
    let rest = crate::seal::remove(&raw, &ranges);
    // Lines that start the message folded would continue our field (and put the sender's
    // words into our result): ours goes after them.
    let clean = crate::seal::put_field(&rest, crate::seal::orphan_lines(&rest), "Authentication-Results", &value);
    let result = verdict.as_ref().map_or("permerror", result_of);
    Checked { message: clean, result, removed, receipt }
}

/// Exchange shows a message's `Keywords` field as its categories (MS-OXCMAIL), so Outlook,
/// OWA and phones colour a De-Mail without any add-in: the kind the core classified and a
/// warning when the provider's signature did not pass. `Keywords` fields that came with the message are removed first: only the
/// gateway's words stand there. Other kinds (plain e-mail) get a warning only if due.
pub fn keywords(raw: Vec<u8>, kind: Kind, result: &str) -> Vec<u8> {
    use mail_builder::headers::{text::Text, Header};
    let mut words: Vec<&str> = match kind {
        Kind::Demail => vec!["De-Mail"],
        Kind::Receipt => vec!["De-Mail-Bestätigung"],
        Kind::Notification | Kind::Malware => vec!["De-Mail-Meldung"],
        Kind::Email => vec![],
    };
    if !matches!(result, "pass" | "neutral") {
        words.push("De-Mail-Warnung");
    }
    let rest = crate::seal::remove(&raw, &crate::seal::field_ranges(&raw, "Keywords"));
    if words.is_empty() {
        return rest;
    }
    // Each phrase on its own, encoded where it is not ASCII (RFC 2047 via mail-builder).
    let phrases: Vec<String> = words
        .iter()
        .map(|w| {
            let mut b = Vec::new();
            let _ = Text::new(*w).write_header(&mut b, "Keywords: ".len());
            String::from_utf8_lossy(&b).trim_end().to_string()
        })
        .collect();
    crate::seal::put_field(&rest, crate::seal::orphan_lines(&rest), "Keywords", &phrases.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsigned_message_says_none_and_a_forged_field_under_our_name_goes() {
        let raw = b"Authentication-Results: gw.stadt.de; demail-integrity=pass\r\nAuthentication-Results: mx.other.de; dkim=pass\r\nFrom: a@b.de\r\nSubject: x\r\n\r\nText\r\n".to_vec();
        let c = check(raw, &Policy::default(), "gw.stadt.de", 0, None);
        let text = String::from_utf8(c.message).unwrap();
        assert_eq!(c.result, "none");
        assert_eq!(c.removed, 1);
        assert!(
            text.starts_with(
                "Authentication-Results: gw.stadt.de; demail-integrity=none reason=\"integrity.missing\"\r\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("gw.stadt.de;").count(), 1, "{text}");
        assert!(text.contains("Authentication-Results: mx.other.de; dkim=pass\r\n"), "others' results stay: {text}");
        assert!(text.ends_with("\r\n\r\nText\r\n"));
    }

    #[test]
    fn a_folded_first_line_cannot_continue_our_field() {
        let raw = b" demail-integrity=pass\r\nFrom: a@b.de\r\n\r\nText\r\n".to_vec();
        let text = String::from_utf8(check(raw, &Policy::default(), "gw.stadt.de", 0, None).message).unwrap();
        let ours = text.lines().position(|l| l.starts_with("Authentication-Results: gw.stadt.de;")).unwrap();
        let next = text.lines().nth(ours + 1).unwrap();
        assert!(!next.starts_with([' ', '\t']), "{text}");
        assert!(text.contains("demail-integrity=none"), "{text}");
    }

    #[test]
    fn quoted_values_stay_inside_their_quotes() {
        assert_eq!(quoted("CN=\"x\"\r\nBcc: y"), "\"CN=xBcc: y\"");
    }

    #[test]
    fn keywords_name_the_kind_and_a_warning_and_replace_what_came() {
        let raw = b"Keywords: Wichtig\r\nFrom: a@b.de\r\nSubject: x\r\n\r\nText\r\n".to_vec();
        let out = keywords(raw.clone(), Kind::Receipt, "fail");
        let m = mail_parser::MessageParser::default().parse(&out).unwrap();
        let k: Vec<String> =
            m.keywords().as_text_list().map(|v| v.iter().map(|s| s.to_string()).collect()).unwrap_or_default();
        assert_eq!(k, ["De-Mail-Bestätigung", "De-Mail-Warnung"]);
        assert!(!String::from_utf8_lossy(&out).contains("Wichtig"));
        let ok = keywords(raw, Kind::Demail, "pass");
        assert!(ok.starts_with(b"Keywords: De-Mail\r\nFrom: a@b.de\r\n"), "{}", String::from_utf8_lossy(&ok));
    }
}
