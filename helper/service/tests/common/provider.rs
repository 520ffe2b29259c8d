//! The De-Mail provider's part, for receipt tests: stamp and sign what the gateway relayed
//! and write receipts for it the way the provider simulator does (`gateway/src/sim.rs`,
//! reference §2), signed with a key from an openssl-made CA (demail-testkit `qca`).

use demail_core::integrity::{self, Algorithm, SigningKey};
use demail_testkit::qca::{KeyType, QualifiedCa};
use std::path::Path;

pub const HOST: &str = "dmda-test.de-mail.de";

pub struct Provider {
    /// The CA for the policy's `[integrity] trusted_providers`.
    pub ca_pem: String,
    key: SigningKey,
    cert: Vec<u8>,
    algorithm: Algorithm,
}

impl Provider {
    pub fn new(dir: &Path, name: &str) -> Provider {
        let qca = QualifiedCa::generate(dir, name, KeyType::P256);
        let signer = qca.issue("DMDA Test Signatur", KeyType::P256, 365);
        Provider {
            ca_pem: qca.ca.cert_pem.clone(),
            key: SigningKey::from_pem(&signer.key_pem).expect("signing key"),
            cert: demail_core::cert::Cert::from_text(&signer.cert_pem).expect("signing cert").der,
            algorithm: Algorithm::parse("sha256/ec-dsa").expect("algorithm"),
        }
    }

    /// The policy with this provider's CA trusted.
    pub fn policy(&self, policy: &str) -> String {
        format!("{policy}\n[integrity]\ntrusted_providers = ['''\n{}\n''']\n", self.ca_pem.trim())
    }

    /// `raw` with the integrity lines on top, and the integrity value.
    pub fn sign(&self, raw: &[u8]) -> (Vec<u8>, String) {
        let s = integrity::sign(raw, self.algorithm, Some((&self.key, &self.cert))).expect("sign");
        let mut out = s.header.into_bytes();
        out.extend_from_slice(raw);
        (out, s.value)
    }

    /// What the provider stores: its headers on top of the relayed message, signed.
    pub fn stamp(&self, relayed: &[u8]) -> (Vec<u8>, String) {
        let mut m = format!(
            "X-de-mail-message-id: <s1@{HOST}>\r\nX-de-mail-originator-provider: {HOST}\r\nX-de-mail-auth-level: high\r\nX-de-mail-message-type: normal\r\nX-de-mail-version: 1.8\r\n"
        )
        .into_bytes();
        m.extend_from_slice(relayed);
        self.sign(&m)
    }

    /// A receipt for the stored message `stamped` whose integrity value is `hash`, as the
    /// simulator writes it: `Metadata` holds its Message-ID and De-Mail headers.
    pub fn receipt(&self, kind: &str, private_id: &str, receipt_id: &str, xml: &str, signed: bool) -> Vec<u8> {
        let (label, mtype) = match kind {
            "receipt" => ("Eingangsbestaetigung", "confirmation of receipt"),
            "retrieve" => ("Abholbestaetigung", "confirmation of retrieve"),
            _ => ("Versandbestaetigung", "confirmation of dispatch"),
        };
        let m = format!(
            "From: {label}@{HOST}\r\nTo: peter.meier@musterstadt.de-mail.de\r\nSubject: *{label}* Bescheid\r\n\
             Date: Tue, 8 Dec 2026 10:00:00 +0100\r\nMessage-ID: <{receipt_id}@{HOST}>\r\n\
             X-de-mail-message-type: {mtype}\r\nX-de-mail-version: 1.8\r\nX-de-mail-originator-provider: {HOST}\r\n\
             X-de-mail-private-id: {private_id}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIhre De-Mail wurde versandt.\r\n\
             --b1\r\nContent-Type: application/xml\r\nContent-Disposition: attachment; filename=\"Bestaetigung.xml\"\r\n\r\n{xml}\r\n--b1--\r\n"
        );
        if signed {
            self.sign(m.as_bytes()).0
        } else {
            m.into_bytes()
        }
    }
}

/// The receipt XML for `stamped` (integrity value `hash`): its Message-ID and every
/// `X-de-mail-*` header but the integrity lines.
pub fn receipt_xml(stamped: &[u8], hash: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut meta = String::new();
    let mut seen: Vec<String> = Vec::new();
    for (n, v) in demail_core::seal::header_fields(stamped) {
        let l = n.to_ascii_lowercase();
        let wanted =
            (l.starts_with("x-de-mail-") && l != "x-de-mail-integrity" && l != "x-de-mail-signature-certificate")
                || l == "message-id";
        if wanted && !seen.contains(&l) {
            seen.push(l);
            meta.push_str(&format!("    <Metadate><Name>{}</Name><Value>{}</Value></Metadate>\n", esc(&n), esc(&v)));
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Acknowledge-Message xmlns=\"urn:de-mail\">\n  <Metadata>\n{meta}  </Metadata>\n  <Hash>{}</Hash>\n  <Time>2026-12-08T09:00:00Z</Time>\n</Acknowledge-Message>",
        esc(hash)
    )
}
