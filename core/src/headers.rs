//! Header names as the TR spells them (PVD-IO §3.1), and the values that are fixed.
//!
//! Names are matched case-insensitively everywhere; these spellings are what we write.
//! Helper, gateway, provider simulator and tests use these constants, never literals.

/// Shipping options (`yes`/`no`).
pub const CONFIRMATION_OF_DISPATCH: &str = "X-de-mail-confirmation-of-dispatch";
pub const CONFIRMATION_OF_RECEIPT: &str = "X-de-mail-confirmation-of-receipt";
pub const CONFIRMATION_OF_RETRIEVE: &str = "X-de-mail-confirmation-of-retrieve";
pub const AUTHORITATIVE: &str = "X-de-mail-authoritative";
pub const PRIVATE: &str = "X-de-mail-private";

/// The sender's own reference, copied into every receipt.
pub const PRIVATE_ID: &str = "X-de-mail-private-id";
pub const PRIVATE_ID_MAX: usize = 1024;

/// Set by the provider.
pub const MESSAGE_TYPE: &str = "X-de-mail-message-type";
pub const NOTIFICATION_TYPE: &str = "X-de-mail-notification-type";
pub const AUTH_LEVEL: &str = "X-de-mail-auth-level";
pub const AUTH_MECHANISM: &str = "X-de-mail-auth-mechanism";
pub const SENDER: &str = "X-de-mail-sender";
pub const CHOSEN_RECIPIENT: &str = "X-de-mail-chosen-recipient";
pub const ACTUAL_RECIPIENT: &str = "X-de-mail-actual-recipient";
pub const DEMAIL_MESSAGE_ID: &str = "X-de-mail-message-id";
pub const ORIGINATOR_PROVIDER: &str = "X-de-mail-originator-provider";
pub const INTEGRITY: &str = "X-de-mail-integrity";
pub const SIGNATURE_CERTIFICATE: &str = "X-de-mail-signature-certificate";
pub const VERSION: &str = "X-de-mail-version";
pub const ACCOUNT_HOLDER: &str = "X-de-mail-account-holder";

/// `X-de-mail-message-type` values (with spaces, as on the wire).
pub mod message_type {
    pub const NORMAL: &str = "normal";
    pub const CONFIRMATION_OF_DISPATCH: &str = "confirmation of dispatch";
    pub const CONFIRMATION_OF_RECEIPT: &str = "confirmation of receipt";
    pub const CONFIRMATION_OF_RETRIEVE: &str = "confirmation of retrieve";
    pub const MALWARE_ACKNOWLEDGE: &str = "malware-acknowledge";
    pub const MALWARE_NOTIFICATION: &str = "malware-notification";
    pub const NOTIFICATION: &str = "notification";
    pub const IDENTIFICATION: &str = "identification";
}

/// The organisation gateway's own mark on inbound mail (see [`crate::seal`]).
pub const GATEWAY_SEAL: &str = "X-Demail-Gateway-Seal";

/// True for any `X-de-mail-*` header name, in any case.
pub fn is_demail_header(name: &str) -> bool {
    name.len() > 10 && name.as_bytes()[..10].eq_ignore_ascii_case(b"x-de-mail-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constant_is_a_demail_header() {
        for h in [
            CONFIRMATION_OF_DISPATCH,
            CONFIRMATION_OF_RECEIPT,
            CONFIRMATION_OF_RETRIEVE,
            AUTHORITATIVE,
            PRIVATE,
            PRIVATE_ID,
            MESSAGE_TYPE,
            NOTIFICATION_TYPE,
            AUTH_LEVEL,
            AUTH_MECHANISM,
            SENDER,
            CHOSEN_RECIPIENT,
            ACTUAL_RECIPIENT,
            DEMAIL_MESSAGE_ID,
            ORIGINATOR_PROVIDER,
            INTEGRITY,
            SIGNATURE_CERTIFICATE,
            VERSION,
            ACCOUNT_HOLDER,
        ] {
            assert!(is_demail_header(h), "{h}");
            assert!(is_demail_header(&h.to_ascii_uppercase()), "{h}");
        }
        assert!(!is_demail_header(GATEWAY_SEAL));
        assert!(!is_demail_header("X-de-mail-"));
    }
}
