//! Bounces (RFC 3464 delivery status notifications) in German and English, built with mail-builder.

use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;

/// A DSN for a De-Mail that could not be delivered to some or all recipients.
/// `failed` holds each refused recipient with the provider's reason; `delivered` the
/// recipients it did reach (a partial refusal), so the sender knows exactly who is missing.
pub fn build(
    postmaster: &str,
    reporting_host: &str,
    to: &str,
    failed: &[(String, String)],
    delivered: &[String],
    original: &[u8],
) -> Vec<u8> {
    // Only the original's header block goes back (RFC 3462 text/rfc822-headers).
    let headers_end =
        original.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 2).unwrap_or(original.len().min(64 * 1024));
    let orig_headers = String::from_utf8_lossy(&original[..headers_end]).to_string();
    let subject = mail_parser::MessageParser::default()
        .parse(original)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default();
    let list: String = failed.iter().map(|(r, why)| format!("  {r}: {}\r\n", why.replace(['\r', '\n'], " "))).collect();
    let (rest_de, rest_en) = if delivered.is_empty() {
        ("Die Nachricht wurde nicht versandt.".to_string(), "The message was not sent.".to_string())
    } else {
        let d = delivered.join(", ");
        (
            format!("An die übrigen Empfänger wurde sie zugestellt: {d}"),
            format!("It was delivered to the other recipients: {d}"),
        )
    };
    let text = format!(
        "Ihre De-Mail „{subject}“ konnte an folgende Empfänger nicht zugestellt werden:\r\n\
         {list}\
         {rest_de}\r\n\
         Bitte prüfen Sie die Angaben oder wenden Sie sich an Ihre IT.\r\n\
         \r\n\
         Your De-Mail \"{subject}\" could not be delivered to these recipients:\r\n\
         {list}\
         {rest_en}\r\n\
         Please check the details or contact your IT department.\r\n"
    );
    let mut status = format!("Reporting-MTA: dns; {reporting_host}\r\n\r\n");
    for (r, why) in failed {
        status.push_str(&format!(
            "Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; {}\r\n\r\n",
            why.replace(['\r', '\n'], " ")
        ));
    }
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", text),
            MimePart::new("message/delivery-status", status),
            MimePart::new("text/rfc822-headers", orig_headers),
        ],
    );
    MessageBuilder::new()
        .from(("De-Mail-Gateway", postmaster))
        .to(to)
        .subject(format!("Unzustellbar / Undeliverable: {subject}"))
        .header("Auto-Submitted", mail_builder::headers::raw::Raw::new("auto-replied"))
        .body(body)
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn dsn_is_a_parseable_report() {
        let orig = b"From: a@x.de-mail.de\r\nSubject: Antrag\r\n\r\nText\r\n";
        let d = super::build(
            "postmaster@stadt.de",
            "gw",
            "peter@stadt.de",
            &[("b@y.de-mail.de".into(), "550 5.1.1 unknown".into())],
            &["c@y.de-mail.de".into()],
            orig,
        );
        let m = mail_parser::MessageParser::default().parse(&d).unwrap();
        assert_eq!(m.subject(), Some("Unzustellbar / Undeliverable: Antrag"));
        let s = String::from_utf8_lossy(&d);
        assert!(s.contains("multipart/report"));
        assert!(s.contains("report-type"));
        assert!(s.contains("Final-Recipient: rfc822; b@y.de-mail.de"));
        assert!(!s.contains("Final-Recipient: rfc822; c@y.de-mail.de"));
        assert!(s.contains("It was delivered to the other recipients: c@y.de-mail.de"));
    }
}
