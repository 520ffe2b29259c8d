//! X.509 for the integrity value ([`crate::integrity`]): the provider certificate from
//! `X-de-mail-signature-certificate`, the provider CAs the policy trusts, and the
//! public-key checks that remain, described as data ([`Check`]) so that WebCrypto in the
//! add-in and RustCrypto natively run exactly the same checks.
//!
//! The certificate is read by a small DER walk over the fields the check needs (TBS,
//! serial, issuer, validity, subject, key, signature), with OIDs from const-oid. x509-cert's
//! typed decoder does the same but adds ~70 KB to the add-in's wasm module, which has no
//! room for it (docs/development.md); a test holds the walk to x509-cert.

use crate::reason::Reason;
use base64::Engine;
use serde::Serialize;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The hashes the TR allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// The TR's spelling in `a=`.
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }

    pub fn parse(s: &str) -> Option<Hash> {
        match s {
            "sha256" => Some(Hash::Sha256),
            "sha384" => Some(Hash::Sha384),
            "sha512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// WebCrypto's name (`SHA-256`).
    pub fn webcrypto(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
        }
    }

    pub fn from_webcrypto(s: &str) -> Option<Hash> {
        [Hash::Sha256, Hash::Sha384, Hash::Sha512].into_iter().find(|h| h.webcrypto() == s)
    }

    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    pub fn hasher(self) -> Hasher {
        use sha2::digest::VariableOutput;
        // Runtime output sizes: SHA-384 is SHA-512's core with its own IV, one code path.
        match self {
            Hash::Sha256 => Hasher::Sha256(Wrap::new(32).expect("32 is a SHA-256 size")),
            h => Hasher::Sha512(Wrap::new(h.output_len()).expect("48 and 64 are SHA-512 sizes")),
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

type Wrap<T> = sha2::digest::core_api::RtVariableCoreWrapper<T>;

/// An incremental hash of one of the TR's algorithms.
pub enum Hasher {
    Sha256(Wrap<sha2::Sha256VarCore>),
    Sha512(Wrap<sha2::Sha512VarCore>),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        use sha2::digest::Update;
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        use sha2::digest::VariableOutput;
        let mut out = vec![
            0u8;
            match &self {
                Hasher::Sha256(h) => h.output_size(),
                Hasher::Sha512(h) => h.output_size(),
            }
        ];
        let _ = match self {
            Hasher::Sha256(h) => h.finalize_variable(&mut out),
            Hasher::Sha512(h) => h.finalize_variable(&mut out),
        };
        out
    }
}

/// The public key in a certificate, as far as the TR's algorithms can use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    /// Anything else (brainpool, Ed25519, DSA …), by OID.
    Other(String),
}

// OIDs as their DER contents (held to const-oid by a test).
/// 1.2.840.113549.1.1.1 rsaEncryption
const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.2.840.10045.2.1 id-ecPublicKey
const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7 prime256v1
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.3.132.0.34 secp384r1
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// Certificate signature algorithms: sha{256,384,512}WithRSAEncryption (1.2.840.113549.1.1.{11,12,13})
/// and ecdsa-with-SHA{256,384,512} (1.2.840.10045.4.3.{2,3,4}), with WebCrypto name and hash.
const CERT_SIGS: [(&[u8], &str, Hash); 6] = [
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b], "RSASSA-PKCS1-v1_5", Hash::Sha256),
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], "RSASSA-PKCS1-v1_5", Hash::Sha384),
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], "RSASSA-PKCS1-v1_5", Hash::Sha512),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02], "ECDSA", Hash::Sha256),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03], "ECDSA", Hash::Sha384),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04], "ECDSA", Hash::Sha512),
];

/// An OID's DER contents in dotted form.
fn dotted(oid: &[u8]) -> String {
    let mut out = String::new();
    let mut v: u64 = 0;
    for &b in oid {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if out.is_empty() {
                let first = v.min(80) / 40;
                out = format!("{first}.{}", v - first * 40);
            } else {
                out = format!("{out}.{v}");
            }
            v = 0;
        }
    }
    out
}

/// RFC 4514 short name of a name attribute type, from its DER contents: `2.5.4.x`
/// (`55 04 x`) and e-mail; others are written as dotted OIDs.
fn attr_name(oid: &[u8]) -> Option<&'static str> {
    const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
    match oid {
        [0x55, 0x04, x] => Some(match x {
            3 => "CN",
            4 => "SN",
            5 => "SERIALNUMBER",
            6 => "C",
            7 => "L",
            8 => "ST",
            9 => "STREET",
            10 => "O",
            11 => "OU",
            12 => "T",
            42 => "GN",
            97 => "organizationIdentifier",
            _ => return None,
        }),
        EMAIL => Some("E"),
        _ => None,
    }
}

/// A parsed certificate: what the integrity check needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// The DER bytes as given.
    pub der: Vec<u8>,
    /// RFC 4514 form, most specific first (`CN=…,O=…,C=DE`).
    pub subject: String,
    pub issuer: String,
    /// Serial number in hex.
    pub serial: String,
    pub key: KeyKind,
    /// Validity in seconds since 1970.
    pub not_before: u64,
    pub not_after: u64,
    /// Where in `der`: the TBSCertificate (the bytes the issuer signed), subject, issuer,
    /// public key (SubjectPublicKeyInfo) and the issuer's signature.
    tbs: (usize, usize),
    subject_der: (usize, usize),
    issuer_der: (usize, usize),
    spki: (usize, usize),
    signature: (usize, usize),
    /// The issuer's signature algorithm (WebCrypto name and hash), if one the TR's set covers.
    sig_alg: Option<(&'static str, Hash)>,
}

fn cert_error(de: &str, en: &str) -> Reason {
    Reason::new("integrity.certificate_invalid", de, en)
}

/// `bytes` in lower-case hex, appended to `out`.
fn hex(bytes: &[u8], mut out: String) -> String {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// One DER element: tag, the whole encoding, the contents; then what follows it.
struct Tlv<'a> {
    tag: u8,
    all: &'a [u8],
    body: &'a [u8],
}

/// DER definite lengths only (BER's indefinite form is refused, as DER demands).
fn tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    // Multi-byte tags do not occur in the fields read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for &b in input.get(2..2 + n)? {
            len = (len << 8) | b as usize;
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    let all = input.get(..end)?;
    Some((Tlv { tag, all, body: &all[head..] }, &input[end..]))
}

/// The next element, which must carry `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(Tlv<'_>, &[u8])> {
    tlv(input).filter(|(t, _)| t.tag == tag)
}

fn oid<'a>(t: &Tlv<'a>) -> Option<&'a [u8]> {
    (t.tag == 0x06 && !t.body.is_empty()).then_some(t.body)
}

/// `AlgorithmIdentifier`: the OID and the raw parameters.
fn algorithm<'a>(t: &Tlv<'a>) -> Option<(&'a [u8], Option<Tlv<'a>>)> {
    let (o, rest) = tlv(t.body)?;
    Some((oid(&o)?, tlv(rest).map(|(p, _)| p)))
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// forms RFC 5280 allows, as seconds since 1970 (0 for earlier).
fn time(t: &Tlv<'_>) -> Option<u64> {
    let s = std::str::from_utf8(t.body).ok()?.strip_suffix('Z')?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = s.as_bytes();
    let num = |i: usize, n: usize| d[i..i + n].iter().fold(0i64, |v, b| v * 10 + i64::from(b - b'0'));
    let (year, rest) = match (t.tag, d.len()) {
        (0x17, 12) => {
            let yy = num(0, 2);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (0x18, 14) => (num(0, 4), 4),
        _ => return None,
    };
    let n = |i: usize| num(rest + i, 2);
    let (m, d, hh, mm, ss) = (n(0), n(2), n(4), n(6), n(8));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).unwrap_or(0))
}

/// BIT STRING contents without unused bits.
fn bits<'a>(t: &Tlv<'a>) -> Option<&'a [u8]> {
    (t.tag == 0x03 && t.body.first() == Some(&0)).then(|| &t.body[1..])
}

impl Cert {
    pub fn from_der(der: &[u8]) -> Result<Cert, Reason> {
        Cert::walk(der).ok_or_else(|| {
            cert_error(
                "Das Zertifikat ist kein lesbares X.509-Zertifikat.",
                "The certificate is no readable X.509 certificate.",
            )
        })
    }

    fn walk(der: &[u8]) -> Option<Cert> {
        let (cert, rest) = expect(der, 0x30)?;
        if !rest.is_empty() {
            return None;
        }
        let (tbs, r) = expect(cert.body, 0x30)?;
        let (sig_alg, r) = expect(r, 0x30)?;
        let (sig, r) = expect(r, 0x03)?;
        if !r.is_empty() {
            return None;
        }
        let mut f = tbs.body;
        if f.first() == Some(&0xa0) {
            f = tlv(f)?.1;
        }
        let (serial, f) = expect(f, 0x02)?;
        let (_, f) = expect(f, 0x30)?;
        let (issuer, f) = expect(f, 0x30)?;
        let (validity, f) = expect(f, 0x30)?;
        let (subject, f) = expect(f, 0x30)?;
        let (spki, _) = expect(f, 0x30)?;
        let (nb, v) = tlv(validity.body)?;
        let (na, _) = tlv(v)?;
        let (key_alg, params) = algorithm(&tlv(spki.body)?.0)?;
        let key = if key_alg == RSA {
            KeyKind::Rsa
        } else if key_alg == EC {
            match params.as_ref().and_then(oid) {
                Some(c) if c == P256 => KeyKind::P256,
                Some(c) if c == P384 => KeyKind::P384,
                Some(c) => KeyKind::Other(dotted(c)),
                None => KeyKind::Other(dotted(EC)),
            }
        } else {
            KeyKind::Other(dotted(key_alg))
        };
        let (sig_oid, _) = algorithm(&sig_alg)?;
        let at = |part: &[u8]| {
            let start = part.as_ptr() as usize - der.as_ptr() as usize;
            (start, start + part.len())
        };
        Some(Cert {
            der: der.to_vec(),
            subject: rfc4514(subject.body)?,
            issuer: rfc4514(issuer.body)?,
            serial: hex(serial.body, String::new()),
            key,
            not_before: time(&nb)?,
            not_after: time(&na)?,
            tbs: at(tbs.all),
            subject_der: at(subject.all),
            issuer_der: at(issuer.all),
            spki: at(spki.all),
            sig_alg: CERT_SIGS.iter().find(|(o, _, _)| *o == sig_oid).map(|(_, a, h)| (*a, *h)),
            signature: at(bits(&sig)?),
        })
    }

    /// PEM (`-----BEGIN CERTIFICATE-----`) or bare base64 of the DER, whitespace ignored.
    pub fn from_text(text: &str) -> Result<Cert, Reason> {
        // Two PEM blocks make one base64 text that is no certificate.
        let body: Vec<u8> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("-----"))
            .flat_map(|l| l.bytes())
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = B64.decode(body).map_err(|_| {
            cert_error("Das Zertifikat ist kein gültiges Base64/PEM.", "The certificate is not valid base64/PEM.")
        })?;
        Cert::from_der(&der)
    }

    fn part(&self, (start, end): (usize, usize)) -> &[u8] {
        &self.der[start..end]
    }

    /// Is `self` the issuer named in `other`?
    pub fn is_issuer_of(&self, other: &Cert) -> bool {
        self.part(self.subject_der) == other.part(other.issuer_der)
    }

    /// `None` when valid at `now` (seconds), else why not.
    pub fn validity_at(&self, now: u64) -> Option<Validity> {
        if now < self.not_before {
            Some(Validity::NotYetValid)
        } else if now > self.not_after {
            Some(Validity::Expired)
        } else {
            None
        }
    }

    /// Shown to people and in JSON.
    #[inline(never)]
    pub fn info(&self) -> CertInfo {
        CertInfo {
            issuer: self.issuer.clone(),
            not_after: rfc3339(self.not_after),
            not_before: rfc3339(self.not_before),
            serial: self.serial.clone(),
            subject: self.subject.clone(),
        }
    }

    /// The check that `issuer`'s key signed this certificate, or why it cannot be made.
    pub fn issued_by_check(&self, issuer: &Cert) -> Result<Check, Reason> {
        let unsupported = || {
            Reason::new(
                "integrity.certificate_algorithm",
                "Die CA hat das Anbieterzertifikat mit einem nicht unterstützten Verfahren signiert.",
                "The CA signed the provider certificate with an unsupported algorithm.",
            )
        };
        let (alg, hash) = self.sig_alg.ok_or_else(unsupported)?;
        let (named_curve, signature) = match (alg, &issuer.key) {
            ("RSASSA-PKCS1-v1_5", KeyKind::Rsa) => (None, self.part(self.signature).to_vec()),
            ("ECDSA", KeyKind::P256 | KeyKind::P384) => {
                let n = if issuer.key == KeyKind::P256 { 32 } else { 48 };
                // A certificate signature that is no ECDSA value simply fails the check.
                (Some(curve_name(&issuer.key)), ecdsa_raw(self.part(self.signature), n).unwrap_or_default())
            }
            _ => return Err(unsupported()),
        };
        Ok(Check {
            algorithm: alg,
            data: B64.encode(self.part(self.tbs)),
            hash: hash.webcrypto(),
            named_curve,
            purpose: Purpose::Certificate,
            salt_length: None,
            signature: B64.encode(signature),
            spki: B64.encode(issuer.part(issuer.spki)),
        })
    }

    /// The check of a message signature made with this certificate's key.
    pub fn message_check(&self, sig: SigKind, hash: Hash, data: &[u8], signature: &[u8]) -> Result<Check, Reason> {
        // The key is none of RSA, P-256, P-384, or not the one `a=` names.
        let unusable = || {
            Reason::new(
                "integrity.unsupported_key",
                "Der Schlüssel des Anbieterzertifikats passt nicht zum Verfahren oder wird nicht unterstützt (RSA, P-256, P-384).",
                "The provider certificate's key does not fit the algorithm or is not supported (RSA, P-256, P-384).",
            )
        };
        let (algorithm, named_curve, salt_length, signature) = match (sig, &self.key) {
            (SigKind::Rsa, KeyKind::Rsa) => ("RSASSA-PKCS1-v1_5", None, None, signature.to_vec()),
            (SigKind::RsassaPss, KeyKind::Rsa) => ("RSA-PSS", None, Some(hash.output_len() as u32), signature.to_vec()),
            (SigKind::EcDsa, k @ (KeyKind::P256 | KeyKind::P384)) => {
                let n = if *k == KeyKind::P256 { 32 } else { 48 };
                // Neither DER nor r‖s of the curve's size: an empty signature, which fails.
                ("ECDSA", Some(curve_name(k)), None, ecdsa_raw(signature, n).unwrap_or_default())
            }
            _ => return Err(unusable()),
        };
        Ok(Check {
            algorithm,
            data: B64.encode(data),
            hash: hash.webcrypto(),
            named_curve,
            purpose: Purpose::Message,
            salt_length,
            signature: B64.encode(signature),
            spki: B64.encode(self.part(self.spki)),
        })
    }
}

fn curve_name(k: &KeyKind) -> &'static str {
    if *k == KeyKind::P256 {
        "P-256"
    } else {
        "P-384"
    }
}

/// Outside a certificate's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    NotYetValid,
    Expired,
}

/// A certificate as people see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub issuer: String,
    pub not_after: String,
    pub not_before: String,
    pub serial: String,
    pub subject: String,
}

/// Seconds since 1970 as `2026-11-27T10:32:12Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// The signature kinds of `a=<hash>/<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigKind {
    /// RSASSA-PKCS1-v1_5.
    Rsa,
    /// ECDSA on P-256 or P-384.
    EcDsa,
    /// RSASSA-PSS, MGF1 with the same hash, salt as long as the hash.
    RsassaPss,
}

impl SigKind {
    pub fn name(self) -> &'static str {
        match self {
            SigKind::Rsa => "rsa",
            SigKind::EcDsa => "ec-dsa",
            SigKind::RsassaPss => "rsassa-pss",
        }
    }

    pub fn parse(s: &str) -> Option<SigKind> {
        match s {
            "rsa" => Some(SigKind::Rsa),
            "ec-dsa" => Some(SigKind::EcDsa),
            "rsassa-pss" => Some(SigKind::RsassaPss),
            _ => None,
        }
    }
}

/// What a signature check proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// The provider's key signed the integrity value.
    Message,
    /// A trusted provider CA signed the provider's certificate.
    Certificate,
}

/// One public-key check, in WebCrypto's terms: `crypto.subtle.importKey("spki", spki,
/// {name: algorithm, hash, namedCurve})` and `crypto.subtle.verify({name: algorithm, hash,
/// saltLength}, key, signature, data)`. Binary fields are base64; ECDSA signatures are raw
/// r‖s (WebCrypto's form) whatever form the message carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `RSASSA-PKCS1-v1_5`, `RSA-PSS` or `ECDSA`.
    pub algorithm: &'static str,
    /// The signed bytes (WebCrypto hashes them itself).
    pub data: String,
    /// `SHA-256`, `SHA-384` or `SHA-512`.
    pub hash: &'static str,
    /// `P-256` or `P-384` for ECDSA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named_curve: Option<&'static str>,
    pub purpose: Purpose,
    /// RSA-PSS only: the salt length in bytes (= hash length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salt_length: Option<u32>,
    pub signature: String,
    /// The public key as DER SubjectPublicKeyInfo.
    pub spki: String,
}

/// ECDSA signature as r‖s of `n` bytes each. Accepts DER (`SEQUENCE { r, s }`, the form
/// X.509, CMS and `openssl dgst` use) and raw r‖s of exactly `2n` bytes.
pub fn ecdsa_raw(sig: &[u8], n: usize) -> Option<Vec<u8>> {
    let der = expect(sig, 0x30).filter(|(_, rest)| rest.is_empty()).and_then(|(seq, _)| {
        let (r, rest) = expect(seq.body, 0x02)?;
        let (s, rest) = expect(rest, 0x02)?;
        rest.is_empty().then_some([r.body, s.body])
    });
    let Some(rs) = der else {
        return (sig.len() == 2 * n).then(|| sig.to_vec());
    };
    let mut out = vec![0u8; 2 * n];
    for (i, x) in rs.into_iter().enumerate() {
        let x = &x[x.iter().position(|&b| b != 0).unwrap_or(x.len())..];
        if x.len() > n {
            return None;
        }
        out[(i + 1) * n - x.len()..(i + 1) * n].copy_from_slice(x);
    }
    Some(out)
}

/// ECDSA r‖s as DER (`SEQUENCE { INTEGER r, INTEGER s }`).
pub fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let mut v: Vec<u8> = x.iter().copied().skip_while(|&b| b == 0).collect();
        if v.first().is_none_or(|&b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = if body.len() < 0x80 { vec![0x30, body.len() as u8] } else { vec![0x30, 0x81, body.len() as u8] };
    out.extend(body);
    out
}

/// Run a check with RustCrypto: the one step the add-in does with WebCrypto instead.
#[cfg(feature = "integrity-verify")]
pub fn run(check: &Check) -> bool {
    run_inner(check).unwrap_or(false)
}

#[cfg(feature = "integrity-verify")]
fn run_inner(c: &Check) -> Option<bool> {
    use p256::pkcs8::DecodePublicKey;
    use sha2::{Sha256, Sha384, Sha512};
    let spki = B64.decode(&c.spki).ok()?;
    let data = B64.decode(&c.data).ok()?;
    let sig = B64.decode(&c.signature).ok()?;
    let hash = Hash::from_webcrypto(c.hash)?;
    let digest = hash.digest(&data);
    Some(match (c.algorithm, c.named_curve) {
        ("RSASSA-PKCS1-v1_5" | "RSA-PSS", None) => {
            let key = rsa::RsaPublicKey::from_public_key_der(&spki).ok()?;
            let pss = c.algorithm == "RSA-PSS";
            let salt = c.salt_length.unwrap_or(0) as usize;
            let r = match (hash, pss) {
                (Hash::Sha256, false) => key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &sig),
                (Hash::Sha384, false) => key.verify(rsa::Pkcs1v15Sign::new::<Sha384>(), &digest, &sig),
                (Hash::Sha512, false) => key.verify(rsa::Pkcs1v15Sign::new::<Sha512>(), &digest, &sig),
                (Hash::Sha256, true) => key.verify(rsa::Pss::new_with_salt::<Sha256>(salt), &digest, &sig),
                (Hash::Sha384, true) => key.verify(rsa::Pss::new_with_salt::<Sha384>(salt), &digest, &sig),
                (Hash::Sha512, true) => key.verify(rsa::Pss::new_with_salt::<Sha512>(salt), &digest, &sig),
            };
            r.is_ok()
        }
        ("ECDSA", Some("P-256")) => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).ok()?;
            let sig = p256::ecdsa::Signature::from_slice(&sig).ok()?;
            key.verify_prehash(&digest, &sig).is_ok()
        }
        ("ECDSA", Some("P-384")) => {
            use p384::ecdsa::signature::hazmat::PrehashVerifier;
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(&spki).ok()?;
            let sig = p384::ecdsa::Signature::from_slice(&sig).ok()?;
            key.verify_prehash(&digest, &sig).is_ok()
        }
        _ => false,
    })
}

/// A distinguished name (the contents of its SEQUENCE) in RFC 4514 form, most specific
/// RDN first. Values of the UTF-8 compatible string types are written escaped; others
/// (BMPString, TeletexString …) as RFC 4514's `#` and the hex of their DER.
fn rfc4514(mut rdns: &[u8]) -> Option<String> {
    let mut out: Vec<u8> = Vec::new();
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, 0x31)?;
        rdns = rest;
        let mut atvs = set.body;
        let mut rdn = Vec::new();
        while !atvs.is_empty() {
            let (atv, rest) = expect(atvs, 0x30)?;
            atvs = rest;
            let (o, v) = expect(atv.body, 0x06)?;
            let (val, _) = tlv(v)?;
            if !rdn.is_empty() {
                rdn.push(b'+');
            }
            match attr_name(o.body) {
                Some(short) => rdn.extend_from_slice(short.as_bytes()),
                None => rdn.extend_from_slice(dotted(o.body).as_bytes()),
            }
            rdn.push(b'=');
            // UTF8String, PrintableString, IA5String, VisibleString
            if matches!(val.tag, 0x0c | 0x13 | 0x16 | 0x1a) {
                escape_rdn_value(val.body, &mut rdn);
            } else {
                rdn.push(b'#');
                rdn.extend_from_slice(hex(val.all, String::new()).as_bytes());
            }
        }
        // Most specific first: each RDN goes in front.
        if !out.is_empty() {
            rdn.push(b',');
        }
        rdn.extend_from_slice(&out);
        out = rdn;
    }
    String::from_utf8(out).ok()
}

/// RFC 4514 §2.4 on UTF-8 bytes: the specials, a leading `#` or space, a trailing space
/// and control characters are escaped; everything else stays.
fn escape_rdn_value(v: &[u8], out: &mut Vec<u8>) {
    for (i, &b) in v.iter().enumerate() {
        let lead_or_end = i == 0 || i + 1 == v.len();
        match b {
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'#' if i == 0 => out.extend_from_slice(b"\\#"),
            b' ' if lead_or_end => out.extend_from_slice(b"\\ "),
            0..=0x1f | 0x7f => out.extend_from_slice(&[b'\\', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_forms() {
        let raw: Vec<u8> = (1..=64).collect();
        let der = ecdsa_der(&raw);
        assert_eq!(der[0], 0x30);
        assert_eq!(ecdsa_raw(&der, 32).unwrap(), raw);
        assert_eq!(ecdsa_raw(&raw, 32).unwrap(), raw);
        // Leading zeros survive the DER round trip.
        let mut z = raw.clone();
        z[0] = 0;
        z[1] = 0;
        z[32] = 0x80;
        assert_eq!(ecdsa_raw(&ecdsa_der(&z), 32).unwrap(), z);
        assert!(ecdsa_raw(&raw[..63], 32).is_none());
        assert!(ecdsa_raw(&der, 16).is_none());
    }

    #[test]
    fn oid_constants() {
        use x509_cert::der::oid::ObjectIdentifier as Oid;
        let dotted_of = |b: &[u8]| Oid::from_bytes(b).unwrap().to_string();
        assert_eq!(dotted_of(RSA), "1.2.840.113549.1.1.1");
        assert_eq!(dotted_of(EC), "1.2.840.10045.2.1");
        assert_eq!(dotted_of(P256), "1.2.840.10045.3.1.7");
        assert_eq!(dotted_of(P384), "1.3.132.0.34");
        let sigs: Vec<String> = CERT_SIGS.iter().map(|(o, _, _)| dotted_of(o)).collect();
        assert_eq!(
            sigs,
            [
                "1.2.840.113549.1.1.11",
                "1.2.840.113549.1.1.12",
                "1.2.840.113549.1.1.13",
                "1.2.840.10045.4.3.2",
                "1.2.840.10045.4.3.3",
                "1.2.840.10045.4.3.4"
            ]
        );
        for o in [RSA, EC, P256, P384, &[0x55, 0x04, 0x61][..], &[0x2b, 0x06, 0x01, 0x81, 0x00][..]] {
            assert_eq!(dotted(o), dotted_of(o));
        }
    }

    #[test]
    fn rfc3339_and_escaping() {
        assert_eq!(rfc3339(1_795_775_532), "2026-11-27T10:32:12Z");
        let mut s = Vec::new();
        escape_rdn_value("#Müller, Amt ".as_bytes(), &mut s);
        assert_eq!(String::from_utf8(s).unwrap(), "\\#Müller\\, Amt\\ ");
    }
}
