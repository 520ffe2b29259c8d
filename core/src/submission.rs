//! What a submitted message may carry on its way out (add-in → helper → gateway), and
//! the Message-ID every De-Mail gets. Helper and gateway both rewrite a client's header
//! block with these rules, so a header one of them drops never survives the other.

use crate::headers::{is_demail_header, GATEWAY_SEAL};

/// Is this header field of a client's submission left out when the message is passed on?
///
/// - every `X-de-mail-*`: the options and the private-id are written anew from the
///   checked options; the rest only a provider sets, so a client's are forgeries;
/// - the gateway seal: only the gateway seals, and only inbound mail;
/// - `Bcc`: blind recipients travel in the envelope only;
/// - `Subject`, when the subject tags were taken out (`subject_rewritten`).
///
/// The gateway also replaces `From` with the mapped De-Mail sender; that is a mapping,
/// not a client field it refuses, so it is not part of this rule.
pub fn dropped_from_submission(name: &str, subject_rewritten: bool) -> bool {
    let n = name.trim();
    is_demail_header(n)
        || n.eq_ignore_ascii_case(GATEWAY_SEAL)
        || n.eq_ignore_ascii_case("bcc")
        || (subject_rewritten && n.eq_ignore_ascii_case("subject"))
}

/// A Message-ID (without angle brackets) for a De-Mail that came without one:
/// `<millis in hex>.<entropy in hex>@<domain of the sender>`.
///
/// It is the key by which a resend after a crash is recognised (by the provider, and by
/// the gateway for a client's retry), so every De-Mail gets one before it is queued.
/// The caller supplies clock and entropy; the core does no I/O.
pub fn new_message_id(now_millis: u64, entropy: &[u8], sender: &str) -> String {
    let domain = sender.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.is_empty()).unwrap_or("demail.invalid");
    let hex: String = entropy.iter().map(|b| format!("{b:02x}")).collect();
    format!("{now_millis:x}.{hex}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_fields_that_never_pass() {
        for n in [
            "X-de-mail-private",
            "x-de-mail-message-type",
            "X-DE-MAIL-AUTH-LEVEL",
            "X-de-mail-private-id",
            "X-Demail-Gateway-Seal",
            "bcc",
            " Bcc ",
        ] {
            assert!(dropped_from_submission(n, false), "{n}");
        }
        for n in ["From", "To", "Cc", "Subject", "Message-ID", "X-Other", "X-de-mail"] {
            assert!(!dropped_from_submission(n, false), "{n}");
        }
        assert!(dropped_from_submission("subject", true));
    }

    #[test]
    fn message_ids() {
        let e = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            new_message_id(1_795_775_532_000, &e, "peter@stadt.de-mail.de"),
            "1a21c900be0.0102030405060708@stadt.de-mail.de"
        );
        assert_eq!(new_message_id(0, &[0xff], ""), "0.ff@demail.invalid");
    }
}
