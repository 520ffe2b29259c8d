//! Whether a reported receipt counts: its own `X-de-mail-integrity` must be valid under the
//! policy's trusted providers, and what it certifies (XML `Hash` bh= and `Metadata`) must be
//! the message this helper handed to the gateway (core `proof::receipt`). Nothing else counts:
//! the gateway's `Authentication-Results` is not under its seal, a fields-only report was
//! checked by no one.

use crate::code;
use demail_core::integrity::Status;
use demail_core::policy::Policy;
use demail_core::Reason;

/// The outcome for the journal; only [`MATCHES`] counts.
pub const MATCHES: &str = "matches";
pub const MISMATCH: &str = "mismatch";
pub const INVALID_SIGNATURE: &str = "invalid-signature";
pub const UNSIGNED: &str = "unsigned";
pub const UNTRUSTED: &str = "untrusted";
pub const UNKNOWN_SENT: &str = "unknown-sent";
pub const UNCHECKED: &str = "unchecked";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub verdict: &'static str,
    pub reasons: Vec<Reason>,
    /// The sent message (`messages.id`) it certifies, for `matches`.
    pub message: Option<String>,
}

fn outcome(verdict: &'static str, reasons: Vec<Reason>) -> Checked {
    Checked { verdict, reasons, message: None }
}

/// Check `raw` (a receipt) against `sent`: the helper's copies `(messages.id, MIME)` of the
/// De-Mails sent with the receipt's private-id, newest first (one private-id, a file
/// number, may serve several De-Mails), at `now_millis`.
pub fn check(raw: &[u8], sent: &[(String, Vec<u8>)], policy: &Policy, now_millis: u64) -> Checked {
    let verdict = match demail_core::api::integrity_verify(raw, policy, now_millis, None) {
        Ok(v) => v,
        Err(e) => return outcome(INVALID_SIGNATURE, vec![e.reason]),
    };
    let failed = match verdict.status {
        Status::Valid => None,
        // A bad signature, or one whose certificate was not valid then: no proof.
        Status::Invalid | Status::Expired => Some(INVALID_SIGNATURE),
        // A bare hash proves nothing about who wrote it.
        Status::Unsigned | Status::HashOnly => Some(UNSIGNED),
        Status::UntrustedCertificate => Some(UNTRUSTED),
    };
    if let Some(v) = failed {
        return outcome(v, verdict.reasons);
    }
    // Why it fits none: the differences from the newest.
    let mut first: Option<Vec<Reason>> = None;
    for (id, mime) in sent {
        match demail_core::proof::receipt(raw, Some(mime), policy) {
            Some(c) if c.matches_sent == Some(true) => {
                return Checked { verdict: MATCHES, reasons: c.reasons, message: Some(id.clone()) }
            }
            Some(c) => {
                first.get_or_insert(c.reasons);
            }
            // The caller classified it as a receipt already; the core disagreeing cannot count.
            None => {
                first.get_or_insert_with(|| vec![sent_unknown()]);
            }
        }
    }
    match first {
        Some(reasons) => outcome(MISMATCH, reasons),
        None => outcome(UNKNOWN_SENT, vec![sent_unknown()]),
    }
}

fn sent_unknown() -> Reason {
    Reason::new(
        code::RECEIPT_SENT_UNKNOWN,
        "Zu dieser Bestätigung kennt der Helfer keine von hier gesendete De-Mail; sie lässt sich nicht prüfen.",
        "The helper knows no De-Mail sent from here for this receipt; it cannot be checked.",
    )
}

/// A report with fields only: nobody verified a signature, so it never counts.
pub fn unchecked() -> Checked {
    Checked {
        verdict: UNCHECKED,
        message: None,
        reasons: vec![Reason::new(
            code::RECEIPT_UNCHECKED,
            "Die Bestätigung wurde ohne die Nachricht selbst gemeldet; ihre Signatur ist nicht geprüft. Sie zählt nicht als Nachweis.",
            "The receipt was reported without the message itself; its signature is not checked. It does not count as proof.",
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_input_is_a_verdict_never_a_panic() {
        let policy = Policy::default();
        let sent = b"Message-ID: <a@b>\r\nX-de-mail-private-id: AZ-1\r\n\r\nText\r\n";
        for raw in [
            &b""[..],
            b"\xff\xfe\x00",
            b"X-de-mail-integrity: a=sha256/rsa; bh=;;; b=\r\n\r\n",
            b"X-de-mail-integrity: \r\nX-de-mail-message-type: confirmation of dispatch\r\n\r\n<Acknowledge-Message",
        ] {
            let c = check(raw, &[("m_1".into(), sent.to_vec())], &policy, 0);
            assert_ne!(c.verdict, MATCHES, "{raw:?}");
            assert!(!c.reasons.is_empty(), "{raw:?}");
        }
        assert_eq!(unchecked().verdict, UNCHECKED);
    }
}
