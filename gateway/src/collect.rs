//! The Sammelpostfach as the last stop for inbound mail: a De-Mail whose internal recipient
//! the mail server refuses (for good, or for longer than `inbound.collect_after_secs`) is
//! handed to the catch-all mailbox instead of waiting in the gateway's queue. The provider
//! has its 250 already, so legally the De-Mail has arrived; someone must see it.
//!
//! The original goes along unchanged as a `message/rfc822` part, so its provider signature
//! still verifies; a note on top (German, then English) says who it was for and why it is
//! here, and `X-Original-To` (Postfix's name for it) carries each original recipient.

use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;

/// The wrapper for the catch-all mailbox. `refused`: each original recipient with the mail
/// server's answer.
pub fn wrap(postmaster: &str, catch_all: &str, refused: &[(String, String)], original: &[u8]) -> Vec<u8> {
    let parsed = mail_parser::MessageParser::default().parse_headers(original);
    let subject = parsed.as_ref().and_then(|m| m.subject().map(str::to_string)).unwrap_or_default();
    let from = parsed
        .as_ref()
        .and_then(|m| m.from().and_then(|f| f.first()).and_then(|a| a.address().map(str::to_string)))
        .unwrap_or_default();
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    let list: String = refused.iter().map(|(r, why)| format!("  {}: {}\r\n", clean(r), clean(why))).collect();
    let text = format!(
        "Diese De-Mail konnte dem Empfänger im Haus nicht zugestellt werden. Das Gateway legt sie\r\n\
         deshalb im Sammelpostfach ab; der Anbieter hat sie bereits als zugestellt bestätigt.\r\n\
         Bitte leiten Sie die angehängte Original-De-Mail an die zuständige Stelle weiter.\r\n\
         \r\n\
         Absender: {from}\r\n\
         Betreff: {subject}\r\n\
         Vorgesehen für (mit Antwort des Mailservers):\r\n\
         {list}\
         \r\n\
         Die Original-De-Mail ist unverändert angehängt; ihre Signatur bleibt prüfbar.\r\n\
         \r\n\
         This De-Mail could not be delivered to its internal recipient, so the gateway put it in\r\n\
         the catch-all mailbox; the provider has already confirmed its delivery. Please forward\r\n\
         the attached original De-Mail to whoever is responsible.\r\n\
         \r\n\
         Intended for (with the mail server's answer):\r\n\
         {list}",
        from = clean(&from),
        subject = clean(&subject),
    );
    let mut b = MessageBuilder::new()
        .from(Address::new_address(Some("De-Mail-Gateway"), postmaster.to_string()))
        .to(catch_all.to_string())
        .subject(format!("Zur Weiterleitung: {}", clean(&subject)))
        .header("Auto-Submitted", Raw::new("auto-generated"));
    for (r, _) in refused {
        b = b.header("X-Original-To", Raw::new(clean(r)));
    }
    b.body(MimePart::new(
        "multipart/mixed",
        vec![
            MimePart::new("text/plain", text),
            // Raw, never base64 (RFC 2046 §5.2.1): the bytes stay those the provider signed.
            MimePart::new("message/rfc822", original.to_vec()).transfer_encoding(if original.is_ascii() {
                "7bit"
            } else {
                "8bit"
            }),
        ],
    ))
    .write_to_vec()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_original_rides_along_unchanged_under_a_note() {
        let orig = b"From: buerger@web.de-mail.de\r\nTo: weg@musterstadt.de-mail.de\r\nSubject: Widerspruch\r\nX-de-mail-integrity: v=1; b=abc\r\n\r\nText\r\n";
        let w = super::wrap(
            "postmaster@musterstadt.de",
            "sammelpostfach@musterstadt.de",
            &[("weg@musterstadt.de".into(), "550 5.1.1 unknown\r\nX-Evil: 1".into())],
            orig,
        );
        let m = mail_parser::MessageParser::default().parse(&w).unwrap();
        assert_eq!(m.subject(), Some("Zur Weiterleitung: Widerspruch"));
        assert_eq!(m.header_raw("X-Original-To").map(str::trim), Some("weg@musterstadt.de"));
        assert!(m.header_raw("X-Evil").is_none(), "a server's answer cannot add headers");
        let note = m.body_text(0).unwrap();
        assert!(note.contains("weg@musterstadt.de: 550 5.1.1 unknown  X-Evil: 1"), "{note}");
        assert!(note.contains("Absender: buerger@web.de-mail.de"), "{note}");
        let att = m.attachment(0).unwrap();
        assert!(att.message().is_some(), "message/rfc822");
        let raw = std::str::from_utf8(&w).unwrap();
        assert!(raw.contains(std::str::from_utf8(orig).unwrap()), "original bytes intact:\n{raw}");
    }
}
