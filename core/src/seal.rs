//! Gateway seal: lets an add-in tell a De-Mail that came through the organisation's
//! gateway from internet mail carrying forged `X-de-mail-*` headers.
//!
//! The gateway signs, with Ed25519, a canonical form of the headers that make a
//! De-Mail a De-Mail (`Message-ID`, `From`, `Date`, every `X-de-mail-*`) and writes
//! `X-Demail-Gateway-Seal: v=1; kid=<key id>; s=<base64 signature>`. Readers verify
//! with the public keys from the policy (`[seal]`). Pure: no I/O, keys are passed in.

use crate::reason::Reason;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The seal header's name.
use crate::headers::GATEWAY_SEAL as HEADER;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A public key from the policy: `"<kid>:<base64 of the 32-byte Ed25519 key>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealKey {
    pub kid: String,
    pub key: [u8; 32],
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn key_error(s: &str, de: &str, en: &str) -> Reason {
    let q = crate::reason::quote(s);
    Reason::new("policy.seal_key_invalid", format!("Siegel-Schlüssel „{q}“: {de}"), format!("Seal key \"{q}\": {en}"))
}

impl SealKey {
    pub fn parse(s: &str) -> Result<SealKey, Reason> {
        let (kid, b64) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| key_error(s, "erwartet „Schlüssel-ID:Base64“.", "expected \"key-id:base64\"."))?;
        if !valid_kid(kid) {
            return Err(key_error(
                s,
                "die Schlüssel-ID darf nur A–Z, a–z, 0–9, „.“, „_“ und „-“ enthalten (1–64 Zeichen).",
                "the key id may only contain A-Z, a-z, 0-9, '.', '_' and '-' (1-64 characters).",
            ));
        }
        let bytes = B64.decode(b64.trim()).map_err(|_| key_error(s, "kein gültiges Base64.", "not valid base64."))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| key_error(s, "ein Ed25519-Schlüssel hat 32 Byte.", "an Ed25519 key has 32 bytes."))?;
        // Not decompressed here, so native and wasm builds judge a policy alike; a key
        // that is no curve point simply never verifies (seal.bad_signature).
        Ok(SealKey { kid: kid.to_string(), key })
    }
}

impl std::fmt::Display for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kid, B64.encode(self.key))
    }
}

impl Serialize for SealKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SealKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SealKey::parse(&s).map_err(|r| serde::de::Error::custom(crate::reason::encode_reason(&r)))
    }
}

/// The parsed `X-Demail-Gateway-Seal` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealHeader {
    pub v: String,
    pub kid: String,
    /// Base64 signature as written.
    pub s: String,
}

/// Is this header one the seal covers?
pub fn is_sealed_header(name: &str) -> bool {
    let n = name.trim();
    n.eq_ignore_ascii_case("message-id")
        || n.eq_ignore_ascii_case("from")
        || n.eq_ignore_ascii_case("date")
        || crate::headers::is_demail_header(n)
}

/// Every header of a raw header block (or whole message) in order: name as written,
/// value unfolded and trimmed. Parsing is mail-parser's.
pub fn header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let Some(m) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    m.headers()
        .iter()
        .map(|h| {
            let v = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or(b"");
            let v = String::from_utf8_lossy(v).replace("\r\n", "").replace('\n', "");
            (h.name.as_str().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The signed text: a line binding version and key id, then `name:value` of the topmost
/// occurrence of each sealed header, names lower-cased and sorted, each line ending CRLF.
pub fn canonical(fields: &[(String, String)], kid: &str) -> String {
    let mut picked: Vec<(String, &str)> = Vec::new();
    for (n, v) in fields {
        if !is_sealed_header(n) {
            continue;
        }
        let n = n.trim().to_ascii_lowercase();
        if !picked.iter().any(|(p, _)| *p == n) {
            picked.push((n, v.as_str()));
        }
    }
    picked.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!("x-demail-gateway-seal:v=1; kid={kid}\r\n");
    for (n, v) in picked {
        out.push_str(&n);
        out.push(':');
        out.push_str(v);
        out.push_str("\r\n");
    }
    out
}

fn reason(code: &str, de: &str, en: &str) -> Reason {
    Reason::new(code, de, en)
}

/// Parse `v=1; kid=<kid>; s=<b64>` (tags in any order, unknown tags ignored).
pub fn parse_header(value: &str) -> Result<SealHeader, Reason> {
    let (mut v, mut kid, mut s) = (None, None, None);
    for part in value.split(';') {
        let Some((k, val)) = part.split_once('=') else { continue };
        let val: String = val.chars().filter(|c| !c.is_whitespace()).collect();
        match k.trim() {
            "v" => v = Some(val),
            "kid" => kid = Some(val),
            "s" => s = Some(val),
            _ => {}
        }
    }
    match (v, kid, s) {
        (Some(v), Some(kid), Some(s)) if v == "1" && valid_kid(&kid) && !s.is_empty() => Ok(SealHeader { v, kid, s }),
        _ => Err(reason(
            "seal.malformed",
            "Das Gateway-Siegel ist beschädigt oder hat ein unbekanntes Format.",
            "The gateway seal is damaged or has an unknown format.",
        )),
    }
}

/// The outcome of a verification: data, never an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub sealed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `seal.valid`, `seal.missing`, `seal.multiple`, `seal.malformed`, `seal.unknown_key`,
    /// `seal.bad_signature`, `seal.unsupported`.
    #[serde(flatten)]
    pub reason: Reason,
    /// The policy demands a seal: an unsealed message's `X-de-mail-*` headers are not to be trusted.
    pub required: bool,
}

/// The seal headers found (value of each occurrence).
pub fn seal_values(fields: &[(String, String)]) -> Vec<&str> {
    fields.iter().filter(|(n, _)| n.trim().eq_ignore_ascii_case(HEADER)).map(|(_, v)| v.as_str()).collect()
}

/// Locate and parse the one seal header; the reason when there is none or several.
pub fn find(fields: &[(String, String)]) -> Result<SealHeader, Reason> {
    match seal_values(fields).as_slice() {
        [] => Err(reason(
            "seal.missing",
            "Die Nachricht trägt kein Gateway-Siegel; sie kam nicht über das De-Mail-Gateway.",
            "The message carries no gateway seal; it did not come through the De-Mail gateway.",
        )),
        [one] => parse_header(one),
        _ => Err(reason(
            "seal.multiple",
            "Die Nachricht trägt mehrere Gateway-Siegel; das ist nicht zulässig.",
            "The message carries several gateway seals; that is not allowed.",
        )),
    }
}

/// Verify the seal of a raw header block (or whole message) against the policy's keys.
pub fn verify(raw: &[u8], keys: &[SealKey], required: bool) -> Verification {
    verify_fields(&header_fields(raw), keys, required)
}

pub fn verify_fields(fields: &[(String, String)], keys: &[SealKey], required: bool) -> Verification {
    let fail = |kid: Option<String>, r: Reason| Verification { sealed: false, kid, reason: r, required };
    let h = match find(fields) {
        Ok(h) => h,
        Err(r) => return fail(None, r),
    };
    let Some(key) = keys.iter().find(|k| k.kid == h.kid) else {
        return fail(
            Some(h.kid.clone()),
            reason(
                "seal.unknown_key",
                "Das Gateway-Siegel nennt einen Schlüssel, den die Richtlinie nicht kennt.",
                "The gateway seal names a key the policy does not know.",
            ),
        );
    };
    match check_signature(&canonical(fields, &h.kid), &h.s, &key.key) {
        Ok(()) => Verification {
            sealed: true,
            kid: Some(h.kid),
            reason: reason(
                "seal.valid",
                "Das Gateway-Siegel ist gültig: die Nachricht kam über das De-Mail-Gateway.",
                "The gateway seal is valid: the message came through the De-Mail gateway.",
            ),
            required,
        },
        Err(r) => fail(Some(h.kid), r),
    }
}

#[cfg(feature = "seal-verify")]
fn bad_signature() -> Reason {
    reason(
        "seal.bad_signature",
        "Das Gateway-Siegel passt nicht zur Nachricht (gefälscht oder verändert).",
        "The gateway seal does not match the message (forged or altered).",
    )
}

#[cfg(feature = "seal-verify")]
fn check_signature(canonical: &str, sig_b64: &str, key: &[u8; 32]) -> Result<(), Reason> {
    let sig = B64.decode(sig_b64).map_err(|_| bad_signature())?;
    let sig = ed25519_dalek::Signature::from_slice(&sig).map_err(|_| bad_signature())?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| bad_signature())?;
    vk.verify_strict(canonical.as_bytes(), &sig).map_err(|_| bad_signature())
}

/// Without the verifier (the add-in's wasm build) the caller verifies with WebCrypto
/// over [`canonical`]; this answers honestly that it did not.
#[cfg(not(feature = "seal-verify"))]
fn check_signature(_canonical: &str, _sig_b64: &str, _key: &[u8; 32]) -> Result<(), Reason> {
    Err(reason(
        "seal.unsupported",
        "Diese Ausgabe prüft Siegel nicht selbst; bitte „seal.canonical“ verwenden.",
        "This build does not verify seals itself; use \"seal.canonical\".",
    ))
}

/// Sign a message's headers: the value for [`HEADER`]. The caller removes any
/// existing seal header first (it is not covered, but two seals do not verify).
#[cfg(feature = "seal-sign")]
pub fn sign(raw: &[u8], kid: &str, secret: &[u8; 32]) -> Result<String, Reason> {
    use ed25519_dalek::Signer;
    if !valid_kid(kid) {
        return Err(reason(
            "seal.kid_invalid",
            "Die Schlüssel-ID des Siegels ist ungültig.",
            "The seal key id is invalid.",
        ));
    }
    let sk = ed25519_dalek::SigningKey::from_bytes(secret);
    let sig = sk.sign(canonical(&header_fields(raw), kid).as_bytes());
    Ok(format!("v=1; kid={kid}; s={}", B64.encode(sig.to_bytes())))
}

/// The public key (`kid:base64`, the policy's form) for a secret key.
#[cfg(feature = "seal-sign")]
pub fn public_key(kid: &str, secret: &[u8; 32]) -> SealKey {
    SealKey { kid: kid.to_string(), key: ed25519_dalek::SigningKey::from_bytes(secret).verifying_key().to_bytes() }
}

#[cfg(all(test, feature = "seal-sign", feature = "seal-verify"))]
mod tests {
    use super::*;

    const SK: [u8; 32] = [7; 32];

    fn sealed(raw: &str) -> String {
        let v = sign(raw.as_bytes(), "gw1", &SK).unwrap();
        format!("{HEADER}: {v}\r\n{raw}")
    }

    #[test]
    fn roundtrip_and_tamper() {
        let keys = [public_key("gw1", &SK)];
        let raw = "From: a@b.de-mail.de\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\nMessage-ID: <1@b>\r\nX-de-mail-auth-level: high\r\nSubject: x\r\n\r\nbody";
        let m = sealed(raw);
        let v = verify(m.as_bytes(), &keys, true);
        assert!(v.sealed, "{v:?}");
        // The subject is not covered; a changed sealed header breaks it.
        assert!(verify(m.replace("Subject: x", "Subject: y").as_bytes(), &keys, true).sealed);
        let t = verify(m.replace("auth-level: high", "auth-level: normal").as_bytes(), &keys, true);
        assert_eq!(t.reason.code, "seal.bad_signature");
        // A forged X-de-mail header added on top wins over the signed one: broken.
        let t = verify(format!("X-de-mail-auth-level: low\r\n{m}").as_bytes(), &keys, true);
        assert_eq!(t.reason.code, "seal.bad_signature");
        // Folding does not matter.
        let folded = m.replace("From: a@b.de-mail.de", "From:\r\n a@b.de-mail.de");
        assert!(verify(folded.as_bytes(), &keys, true).sealed);
        assert_eq!(verify(raw.as_bytes(), &keys, false).reason.code, "seal.missing");
        let other = [public_key("gw2", &[9; 32])];
        assert_eq!(verify(m.as_bytes(), &other, true).reason.code, "seal.unknown_key");
        let twice = format!("{HEADER}: v=1; kid=gw1; s=AAAA\r\n{m}");
        assert_eq!(verify(twice.as_bytes(), &keys, true).reason.code, "seal.multiple");
        // Same kid, wrong key.
        let wrong = [public_key("gw1", &[9; 32])];
        assert_eq!(verify(m.as_bytes(), &wrong, true).reason.code, "seal.bad_signature");
    }

    #[test]
    fn key_parse_errors() {
        let k = public_key("gw1", &SK).to_string();
        assert_eq!(SealKey::parse(&k).unwrap().kid, "gw1");
        for bad in ["nokid", "gw 1:AAAA", "gw1:***", "gw1:AAAA"] {
            assert_eq!(SealKey::parse(bad).unwrap_err().code, "policy.seal_key_invalid", "{bad}");
        }
        assert_eq!(parse_header("v=2; kid=a; s=x").unwrap_err().code, "seal.malformed");
    }
}
