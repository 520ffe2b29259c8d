//! `X-de-mail-integrity` (TR 01201 PVD-IO §3.1.21): the provider's proof that a De-Mail
//! or a receipt is unaltered. A DKIM-style value (RFC 6376 tag=value syntax) with the
//! TR's differences, which is all this module writes by hand (no DKIM crate parses a TR
//! value: they demand `d=`/`s=`/`v=`, reject `a=sha256/rsa` and fetch keys from DNS):
//!
//! - canonicalisation is always `simple/simple`; `l=` is ignored;
//! - `a=` is `<hash>` (hash only: `b=` holds the header hash) or `<hash>/<rsa|ec-dsa|rsassa-pss>`;
//! - the key is the certificate in `X-de-mail-signature-certificate`, never DNS;
//! - of each header named in `h=` the topmost instance counts (then the next one down for a
//!   name listed twice), as the TR says for De-Mail headers.
//!
//! Exactly what is hashed and signed: docs/gateway.md ("Integritätswert"). Verification is
//! split so that the add-in can run the public-key step with WebCrypto: [`prepare`] does
//! everything else and lists the [`Check`]s, [`decide`] turns their results into the
//! [`Verdict`]; natively [`verify`] runs the checks with RustCrypto in between.

use crate::cert::{Cert, CertInfo, Check, Hash, Purpose, SigKind, Validity};
use crate::headers::{INTEGRITY, SIGNATURE_CERTIFICATE};
use crate::reason::{quote, Reason};
use base64::Engine;
use serde::Serialize;
use std::borrow::Cow;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The headers a provider lists in `h=`, in this order, those of them that are present
/// (reference §7). A present one missing from `h=` is not protected: the check says so.
pub const TR_HEADERS: [&str; 20] = [
    "From",
    "Date",
    "Message-ID",
    "Subject",
    "Reply-To",
    crate::headers::CONFIRMATION_OF_DISPATCH,
    crate::headers::CONFIRMATION_OF_RECEIPT,
    crate::headers::CONFIRMATION_OF_RETRIEVE,
    crate::headers::AUTHORITATIVE,
    crate::headers::PRIVATE,
    crate::headers::SENDER,
    crate::headers::CHOSEN_RECIPIENT,
    crate::headers::AUTH_MECHANISM,
    crate::headers::AUTH_LEVEL,
    crate::headers::ORIGINATOR_PROVIDER,
    crate::headers::MESSAGE_TYPE,
    crate::headers::VERSION,
    crate::headers::PRIVATE_ID,
    crate::headers::DEMAIL_MESSAGE_ID,
    crate::headers::ACCOUNT_HOLDER,
];

/// `a=`: a hash, and the signature kind when signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Algorithm {
    pub hash: Hash,
    pub sig: Option<SigKind>,
}

impl Algorithm {
    /// The TR's spelling only (`sha256/rsa`), as written.
    pub fn parse(s: &str) -> Option<Algorithm> {
        let (h, k) = s.split_once('/').map_or((s, None), |(h, k)| (h, Some(k)));
        let sig = match k {
            Some(k) => Some(SigKind::parse(k)?),
            None => None,
        };
        Some(Algorithm { hash: Hash::parse(h)?, sig })
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.sig {
            Some(k) => write!(f, "{}/{}", self.hash.name(), k.name()),
            None => f.write_str(self.hash.name()),
        }
    }
}

/// A parsed integrity value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub algorithm: Algorithm,
    /// `a=` as written (the TR's spelling: parsing takes no other).
    pub a: String,
    /// `h=` as written.
    pub headers: Vec<String>,
    /// `bh=`.
    pub body_hash: Vec<u8>,
    /// `b=`: the header hash (hash only) or the signature.
    pub b: Vec<u8>,
}

/// `what` (the reason's subject) names the broken part in the value's own terms (`bh`, `c=relaxed`, …).
#[inline(never)]
fn malformed(what: &str) -> Reason {
    r(
        "integrity.malformed",
        "X-de-mail-integrity ist beschädigt oder nicht nach der TR aufgebaut.",
        "X-de-mail-integrity is damaged or not built as the TR says.",
    )
    .about(quote(what))
}

/// Parse an (unfolded) value: RFC 6376 §3.2 tag list; unknown tags are ignored.
pub fn parse_value(value: &str) -> Result<Value, Reason> {
    // Over bytes: the tag list is ASCII, and byte slices keep the wasm module small.
    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap_or_default()
    }
    let mut tags: Vec<(&[u8], &[u8])> = Vec::new();
    let parts: Vec<&[u8]> = value.as_bytes().split(|&b| b == b';').map(|p| p.trim_ascii()).collect();
    for (i, part) in parts.iter().enumerate() {
        // A final ";" is allowed.
        if part.is_empty() && i + 1 == parts.len() {
            break;
        }
        let eq = part.iter().position(|&b| b == b'=').unwrap_or(0);
        let name = part[..eq].trim_ascii();
        let name_ok = name.first().is_some_and(|b| b.is_ascii_alphabetic())
            && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        // RFC 6376: a tag twice makes the whole list invalid.
        if !name_ok || tags.iter().any(|(n, _)| *n == name) {
            return Err(malformed(text(part)));
        }
        tags.push((name, part[eq + 1..].trim_ascii()));
    }
    let get = |n: &str| tags.iter().find(|(k, _)| *k == n.as_bytes()).map(|(_, v)| *v);
    let need = |n: &'static str| get(n).ok_or_else(|| malformed(n));
    if let Some(c) = get("c") {
        if !c.eq_ignore_ascii_case(b"simple") && !c.eq_ignore_ascii_case(b"simple/simple") {
            return Err(malformed(text(c)));
        }
    }
    let a = text(need("a")?);
    let algorithm = Algorithm::parse(a).ok_or_else(|| {
        r(
            "integrity.unsupported_algorithm",
            "X-de-mail-integrity nennt ein Verfahren, das die TR nicht kennt.",
            "X-de-mail-integrity names an algorithm the TR does not know.",
        )
        .about(quote(a))
    })?;
    let mut headers = Vec::new();
    for h in need("h")?.split(|&b| b == b':') {
        let h = h.trim_ascii();
        if h.is_empty() || !h.iter().all(|b| (33..=126).contains(b)) {
            return Err(malformed("h"));
        }
        headers.push(text(h).to_string());
    }
    let b64 = |n: &'static str| -> Result<Vec<u8>, Reason> {
        let v: Vec<u8> = need(n)?.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        B64.decode(v).map_err(|_| malformed(n))
    };
    let body_hash = b64("bh")?;
    let b = b64("b")?;
    let n = algorithm.hash.output_len();
    if body_hash.len() != n || (algorithm.sig.is_none() && b.len() != n) {
        return Err(malformed(if body_hash.len() != n { "bh" } else { "b" }));
    }
    Ok(Value { algorithm, a: a.to_string(), headers, body_hash, b })
}

/// Lines end in CRLF on the wire; files often hold bare LF. Bare LF becomes CRLF (a
/// copy only when there is one).
pub fn crlf(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut prev = 0u8;
    let bare = raw.iter().any(|&b| {
        let hit = b == b'\n' && prev != b'\r';
        prev = b;
        hit
    });
    if !bare {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    Cow::Owned(out)
}

/// One header field exactly as written: name, and the whole field with its CRLF.
struct Field<'a> {
    name: &'a [u8],
    raw: &'a [u8],
}

/// A (CRLF) message: its header fields in order and the body.
struct Message<'a> {
    fields: Vec<Field<'a>>,
    body: &'a [u8],
}

/// RFC 5322 §2.2: a field runs until a line that does not begin with SP or HT; the
/// header ends at the first empty line.
fn split(raw: &[u8]) -> Message<'_> {
    // (start of name, end of name, end of field)
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    let mut pos = 0;
    let mut body = &raw[raw.len()..];
    while pos < raw.len() {
        let end = raw[pos..].windows(2).position(|w| w == b"\r\n").map_or(raw.len(), |p| pos + p + 2);
        let line = &raw[pos..end];
        if line == b"\r\n" {
            body = &raw[end..];
            break;
        }
        match spans.last_mut() {
            Some(s) if matches!(line[0], b' ' | b'\t') => s.2 = end,
            _ => {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                spans.push((pos, pos + line[..colon].trim_ascii_end().len(), end));
            }
        }
        pos = end;
    }
    let fields = spans.into_iter().map(|(s, n, e)| Field { name: &raw[s..n], raw: &raw[s..e] }).collect();
    Message { fields, body }
}

impl<'a> Message<'a> {
    #[inline(never)]
    fn topmost(&self, name: &str) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// A field's value, unfolded, as text.
fn value_of(f: &Field<'_>) -> String {
    let colon = f.raw.iter().position(|&b| b == b':').map_or(f.raw.len(), |p| p + 1);
    String::from_utf8_lossy(&f.raw[colon..]).replace("\r\n", "").trim().to_string()
}

/// The hash of the body in `simple` canonicalisation: trailing empty lines ignored, a
/// missing final CRLF added.
pub fn body_hash(body: &[u8], hash: Hash) -> Vec<u8> {
    let mut end = body.len();
    while end >= 4 && &body[end - 4..end] == b"\r\n\r\n" {
        end -= 2;
    }
    let b = &body[..end];
    let mut h = hash.hasher();
    if b.is_empty() || b == b"\r\n" {
        h.update(b"\r\n");
    } else {
        h.update(b);
        if !b.ends_with(b"\r\n") {
            h.update(b"\r\n");
        }
    }
    h.finish()
}

/// The body hash of a whole raw message (bare LF read as CRLF).
pub fn message_body_hash(raw: &[u8], hash: Hash) -> Vec<u8> {
    let raw = crlf(raw);
    body_hash(split(&raw).body, hash)
}

/// The integrity field with the value of `b=` (and the white space around it) removed
/// and without its final CRLF.
fn without_b(field: &[u8]) -> Vec<u8> {
    let field = field.strip_suffix(b"\r\n").unwrap_or(field);
    let colon = field.iter().position(|&b| b == b':').map_or(field.len(), |p| p + 1);
    let mut start = colon;
    while start <= field.len() {
        let end = field[start..].iter().position(|&b| b == b';').map_or(field.len(), |p| start + p);
        let spec = &field[start..end];
        if let Some(eq) = spec.iter().position(|&b| b == b'=') {
            let name: Vec<u8> = spec[..eq].iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            if name == b"b" {
                let mut out = field[..start + eq + 1].to_vec();
                out.extend_from_slice(&field[end..]);
                return out;
            }
        }
        start = end + 1;
    }
    field.to_vec()
}

/// What the hash or signature covers: each field named in `h=` as written (topmost
/// first), then the integrity field itself with `b=` emptied and no final CRLF.
fn signed_input(msg: &Message<'_>, names: &[String], integrity_field: &[u8]) -> Vec<u8> {
    let mut used = vec![false; msg.fields.len()];
    let mut out = Vec::new();
    for n in names {
        if let Some(i) =
            (0..msg.fields.len()).find(|&i| !used[i] && msg.fields[i].name.eq_ignore_ascii_case(n.as_bytes()))
        {
            used[i] = true;
            out.extend_from_slice(msg.fields[i].raw);
        }
    }
    out.extend_from_slice(&without_b(integrity_field));
    out
}

/// Exactly what the topmost `X-de-mail-integrity` of a message covers, for auditors and
/// for checking this implementation against others (`openssl dgst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    pub value: Value,
    /// The bytes hashed (hash only) or signed: the `h=` fields, then the integrity field
    /// with `b=` emptied and no final CRLF.
    pub header_input: Vec<u8>,
    /// The body in simple canonicalisation, hashed with `a=`'s hash.
    pub body_hash: Vec<u8>,
}

pub fn canonical(raw: &[u8]) -> Result<Canonical, Reason> {
    let raw = crlf(raw);
    let msg = split(&raw);
    let field = msg.topmost(INTEGRITY).ok_or_else(|| malformed(INTEGRITY))?;
    let value = parse_value(&value_of(field))?;
    let header_input = signed_input(&msg, &value.headers, field.raw);
    let body_hash = body_hash(msg.body, value.algorithm.hash);
    Ok(Canonical { value, header_input, body_hash })
}

/// The outcome, as the TR's proof tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Signed, unaltered, by a certificate from a trusted provider CA, valid at the time.
    Valid,
    /// Altered, forged or unreadable: see the reasons.
    Invalid,
    /// Only a hash, which matches: no proof of who made it.
    HashOnly,
    /// No `X-de-mail-integrity` at all.
    Unsigned,
    /// Correctly signed, but the certificate does not chain to a provider CA the policy trusts.
    UntrustedCertificate,
    /// Correctly signed by a trusted provider, but the certificate (or its CA) is not valid at the time.
    Expired,
}

/// The result of a verification: data, never an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `a=` as understood (`sha256/rsa`), when readable.
    pub algorithm: Option<String>,
    /// The provider certificate, when there is one.
    pub certificate: Option<CertInfo>,
    pub reasons: Vec<Reason>,
    /// `h=` as written.
    pub signed_headers: Vec<String>,
    /// The certificate's subject.
    pub signer: Option<String>,
    pub status: Status,
}

impl Verdict {
    fn new(status: Status, reason: Reason) -> Verdict {
        Verdict {
            algorithm: None,
            certificate: None,
            reasons: vec![reason],
            signed_headers: Vec::new(),
            signer: None,
            status,
        }
    }

    /// This verdict's facts with an outcome.
    #[inline(never)]
    fn with(self, status: Status, reason: Reason) -> Verdict {
        Verdict { status, reasons: vec![reason], ..self }
    }
}

/// What [`prepare`] leaves to do: the public-key checks, and what follows from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prepared {
    /// Run each (WebCrypto or [`crate::cert::run`]) and pass the results to [`decide`].
    pub checks: Vec<Check>,
    /// The verdict should every check succeed (`null` when `verdict` is final already).
    pub pending: Option<Verdict>,
    /// The final verdict when no check is needed.
    pub verdict: Option<Verdict>,
}

// Not inlined: the many reasons would otherwise each carry their own copy (wasm size).
#[inline(never)]
fn r(code: &str, de: impl Into<String>, en: impl Into<String>) -> Reason {
    Reason::new(code, de, en)
}

fn final_verdict(v: Verdict) -> Prepared {
    Prepared { checks: Vec::new(), pending: None, verdict: Some(v) }
}

/// Everything but the public-key operations. `anchors` are the provider CAs (or provider
/// certificates) the organisation trusts; `now` is the verification time in seconds.
pub fn prepare(raw: &[u8], anchors: &[Cert], now: u64) -> Prepared {
    prepare_with(raw, anchors, now, true)
}

/// [`prepare`] again, to decide on the `results` of the checks a [`prepare`] of the same
/// bytes listed (the add-in's second call; whoever passes results is trusted with them).
/// There were checks only if the body was intact, so it is not hashed a second time; with
/// no results (nothing was left to check) it is the full [`prepare`].
pub fn prepare_again(raw: &[u8], anchors: &[Cert], now: u64, results: &[bool]) -> Prepared {
    if results.is_empty() {
        return prepare(raw, anchors, now);
    }
    // The header ends at the first empty line (LF, then LF or CRLF).
    let end = raw
        .windows(3)
        .position(|w| w[0] == b'\n' && (w[1] == b'\n' || w[1..] == *b"\r\n"))
        .map_or(raw.len(), |p| p + 1);
    prepare_with(&raw[..end], anchors, now, false)
}

fn prepare_with(raw: &[u8], anchors: &[Cert], now: u64, with_body: bool) -> Prepared {
    let raw = crlf(raw);
    let msg = split(&raw);
    let Some(field) = msg.topmost(INTEGRITY) else {
        return final_verdict(Verdict::new(
            Status::Unsigned,
            r(
                "integrity.missing",
                "Die Nachricht trägt keinen Integritätswert (X-de-mail-integrity).",
                "The message carries no integrity value (X-de-mail-integrity).",
            ),
        ));
    };
    let v = match parse_value(&value_of(field)) {
        Ok(v) => v,
        Err(reason) => return final_verdict(Verdict::new(Status::Invalid, reason)),
    };
    // The facts every verdict on this value reports; status and reason come with each outcome.
    let mut base = Verdict {
        algorithm: Some(v.a.clone()),
        certificate: None,
        reasons: Vec::new(),
        signed_headers: v.headers.clone(),
        signer: None,
        status: Status::Invalid,
    };
    // The certificate a signed value names, reported with every verdict on it.
    let cert = match (v.algorithm.sig, msg.topmost(SIGNATURE_CERTIFICATE)) {
        (Some(_), Some(f)) => Some(Cert::from_text(&value_of(f)).inspect(|c| {
            base.certificate = Some(c.info());
            base.signer = Some(c.subject.clone());
        })),
        _ => None,
    };
    let invalid = |base: Verdict, reason: Reason| final_verdict(base.with(Status::Invalid, reason));

    if let Some(h) =
        TR_HEADERS.iter().find(|h| msg.topmost(h).is_some() && !v.headers.iter().any(|n| n.eq_ignore_ascii_case(h)))
    {
        return invalid(
            base,
            r(
                "integrity.header_not_covered",
                "Eine De-Mail-Kopfzeile (subject) ist nicht vom Integritätswert erfasst.",
                "A De-Mail header (subject) is not covered by the integrity value.",
            )
            .about(*h),
        );
    }
    if with_body && body_hash(msg.body, v.algorithm.hash) != v.body_hash {
        return invalid(
            base,
            r(
                "integrity.body_altered",
                "Der Inhalt der Nachricht (Text oder Anhänge) wurde nach dem Versand verändert.",
                "The message content (text or attachments) was altered after it was sent.",
            ),
        );
    }
    let input = signed_input(&msg, &v.headers, field.raw);
    let Some(kind) = v.algorithm.sig else {
        if v.algorithm.hash.digest(&input) != v.b {
            return invalid(
                base,
                r(
                    "integrity.header_altered",
                    "Kopfzeilen (Betreff, Absender, Empfänger, Optionen) wurden nach dem Versand verändert.",
                    "Headers (subject, sender, recipients, options) were altered after sending.",
                ),
            );
        }
        return final_verdict(base.with(
            Status::HashOnly,
            r(
                "integrity.hash_only",
                "Die Prüfsumme stimmt, ist aber nicht signiert: wer die Nachricht erstellt hat, ist nicht belegt.",
                "The checksum matches but is not signed: nothing proves who made the message.",
            ),
        ));
    };
    let cert = match cert {
        Some(Ok(c)) => c,
        Some(Err(reason)) => return invalid(base, reason),
        None => {
            return invalid(
                base,
                r(
                    "integrity.certificate_missing",
                    "Signiert, aber ohne Zertifikat (X-de-mail-signature-certificate).",
                    "Signed, but without a certificate (X-de-mail-signature-certificate).",
                ),
            )
        }
    };
    let mut checks = match cert.message_check(kind, v.algorithm.hash, &input, &v.b) {
        Ok(c) => vec![c],
        Err(reason) => return invalid(base, reason),
    };

    // Trusted: the certificate itself is an anchor, or an anchor of its issuer's name
    // signed it (the certificate checks; one must pass).
    let direct = anchors.iter().any(|a| a.der == cert.der);
    let issuers = || anchors.iter().filter(|a| !direct && a.is_issuer_of(&cert));
    let mut unusable = None;
    for a in issuers() {
        match cert.issued_by_check(a) {
            Ok(c) => checks.push(c),
            Err(reason) => unusable = Some(reason),
        }
    }
    let pending = if !direct && checks.len() == 1 {
        base.with(Status::UntrustedCertificate, unusable.unwrap_or_else(untrusted))
    } else if let Some(validity) = cert.validity_at(now).or_else(|| {
        // The CA it chains to must be valid too.
        (issuers().next().is_some() && issuers().all(|a| a.validity_at(now).is_some())).then_some(Validity::Expired)
    }) {
        // The dates are in `certificate`.
        base.with(
            Status::Expired,
            r(
                if validity == Validity::Expired { "integrity.expired" } else { "integrity.not_yet_valid" },
                "Das Zertifikat des Anbieters oder seiner CA ist zum Prüfzeitpunkt nicht gültig.",
                "The certificate of the provider or its CA is not valid at the time of the check.",
            ),
        )
    } else {
        base.with(
            Status::Valid,
            r(
                "integrity.valid",
                "Die Nachricht ist unverändert und von einem vertrauenswürdigen Anbieter signiert.",
                "The message is unaltered and signed by a trusted provider.",
            ),
        )
    };
    Prepared { checks, pending: Some(pending), verdict: None }
}

#[inline(never)]
fn untrusted() -> Reason {
    r(
        "integrity.untrusted",
        "Das Zertifikat stammt von keiner Anbieter-CA, der die Richtlinie vertraut.",
        "The certificate is from no provider CA the policy trusts.",
    )
}

/// The verdict from [`prepare`]'s result and the outcome of each of its checks, in order.
pub fn decide(p: Prepared, results: &[bool]) -> Result<Verdict, Reason> {
    let pending = match (p.verdict, p.pending) {
        (_, _) if results.len() != p.checks.len() => None,
        (Some(v), _) => return Ok(v),
        (None, pending) => pending,
    };
    let pending = pending.ok_or_else(|| {
        r("input.invalid", "Die Zahl der Prüfergebnisse passt nicht.", "The number of check results does not fit.")
    })?;
    let of =
        |purpose: Purpose| p.checks.iter().zip(results).filter(move |(c, _)| c.purpose == purpose).map(|(_, ok)| *ok);
    if !of(Purpose::Message).all(|ok| ok) {
        return Ok(pending.with(
            Status::Invalid,
            r(
                "integrity.bad_signature",
                "Die Signatur passt nicht: Kopfzeilen wurden verändert oder die Signatur ist gefälscht.",
                "The signature does not match: headers were altered or the signature is forged.",
            ),
        ));
    }
    let mut chain = of(Purpose::Certificate).peekable();
    if chain.peek().is_some() && !chain.any(|ok| ok) {
        return Ok(pending.with(Status::UntrustedCertificate, untrusted()));
    }
    Ok(pending)
}

/// Verify natively: [`prepare`], the checks with RustCrypto, [`decide`].
#[cfg(feature = "integrity-verify")]
pub fn verify(raw: &[u8], anchors: &[Cert], now: u64) -> Verdict {
    let p = prepare(raw, anchors, now);
    let results: Vec<bool> = p.checks.iter().map(crate::cert::run).collect();
    decide(p, &results).unwrap_or_else(|reason| Verdict::new(Status::Invalid, reason))
}

/// A provider's signing key (PKCS#8 PEM): RSA, or ECDSA on P-256 or P-384.
#[cfg(feature = "integrity-sign")]
pub enum SigningKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

#[cfg(feature = "integrity-sign")]
impl SigningKey {
    pub fn from_pem(pem: &str) -> Result<SigningKey, Reason> {
        use p256::pkcs8::DecodePrivateKey;
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::P384(k));
        }
        Err(Reason::new(
            "integrity.key_invalid",
            "Der Signaturschlüssel ist kein PKCS#8-Schlüssel (RSA, P-256, P-384).",
            "The signing key is no PKCS#8 key (RSA, P-256, P-384).",
        ))
    }

    /// Sign `data`; ECDSA signatures come as DER.
    pub fn sign(&self, kind: SigKind, hash: Hash, data: &[u8]) -> Result<Vec<u8>, Reason> {
        use sha2::{Sha256, Sha384, Sha512};
        let digest = hash.digest(data);
        let fail = || {
            Reason::new(
                "integrity.sign_failed",
                "Signieren ist fehlgeschlagen (Schlüssel und Verfahren passen nicht zusammen?).",
                "Signing failed (key and algorithm do not fit?).",
            )
        };
        match (self, kind) {
            (SigningKey::Rsa(k), SigKind::Rsa) => match hash {
                Hash::Sha256 => k.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest),
                Hash::Sha384 => k.sign(rsa::Pkcs1v15Sign::new::<Sha384>(), &digest),
                Hash::Sha512 => k.sign(rsa::Pkcs1v15Sign::new::<Sha512>(), &digest),
            }
            .map_err(|_| fail()),
            (SigningKey::Rsa(k), SigKind::RsassaPss) => {
                let mut rng = rand_core::OsRng;
                let n = hash.output_len();
                match hash {
                    Hash::Sha256 => k.sign_with_rng(&mut rng, rsa::Pss::new_with_salt::<Sha256>(n), &digest),
                    Hash::Sha384 => k.sign_with_rng(&mut rng, rsa::Pss::new_with_salt::<Sha384>(n), &digest),
                    Hash::Sha512 => k.sign_with_rng(&mut rng, rsa::Pss::new_with_salt::<Sha512>(n), &digest),
                }
                .map_err(|_| fail())
            }
            (SigningKey::P256(k), SigKind::EcDsa) => {
                use p256::ecdsa::signature::hazmat::PrehashSigner;
                let s: p256::ecdsa::Signature = k.sign_prehash(&digest).map_err(|_| fail())?;
                Ok(s.to_der().as_bytes().to_vec())
            }
            (SigningKey::P384(k), SigKind::EcDsa) => {
                use p384::ecdsa::signature::hazmat::PrehashSigner;
                let s: p384::ecdsa::Signature = k.sign_prehash(&digest).map_err(|_| fail())?;
                Ok(s.to_der().as_bytes().to_vec())
            }
            _ => Err(fail()),
        }
    }
}

/// A signed (or hashed) message's new header fields.
#[cfg(feature = "integrity-sign")]
#[derive(Debug, Clone)]
pub struct Signed {
    /// `X-de-mail-integrity` and, when signed, `X-de-mail-signature-certificate`, each
    /// ending CRLF: put them on top of the message.
    pub header: String,
    /// The integrity value unfolded (what a receipt's XML `Hash` carries).
    pub value: String,
}

#[cfg(feature = "integrity-sign")]
fn fold(chunks: &str, width: usize) -> String {
    let bytes = chunks.as_bytes();
    bytes.chunks(width).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\r\n ")
}

/// The provider's side: hash (and sign, with a key and its certificate) a message as it
/// will be handed on. `h=` lists the [`TR_HEADERS`] present, in the TR's order.
#[cfg(feature = "integrity-sign")]
pub fn sign(raw: &[u8], algorithm: Algorithm, key: Option<(&SigningKey, &[u8])>) -> Result<Signed, Reason> {
    let raw = crlf(raw);
    let msg = split(&raw);
    let names: Vec<String> = TR_HEADERS.iter().filter(|h| msg.topmost(h).is_some()).map(|h| h.to_string()).collect();
    let bh = B64.encode(body_hash(msg.body, algorithm.hash));
    let mut h_lines = Vec::new();
    let mut line = String::new();
    for n in &names {
        if !line.is_empty() && line.len() + n.len() > 60 {
            h_lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() || !h_lines.is_empty() {
            line.push(':');
        }
        line.push_str(n);
    }
    h_lines.push(line);
    let q = if algorithm.sig.is_some() { "\r\n q=x-header/x-de-mail-signature-certificate;" } else { "" };
    let head = format!(
        "{INTEGRITY}: c=simple/simple; a={algorithm};{q}\r\n h={};\r\n bh={};\r\n b=",
        h_lines.join("\r\n "),
        fold(&bh, 76)
    );
    let input = signed_input(&msg, &names, head.as_bytes());
    let (b, cert_line) = match (algorithm.sig, key) {
        (None, _) => (algorithm.hash.digest(&input), String::new()),
        (Some(kind), Some((k, cert))) => (
            k.sign(kind, algorithm.hash, &input)?,
            format!("{SIGNATURE_CERTIFICATE}: {}\r\n", fold(&B64.encode(cert), 76)),
        ),
        (Some(_), None) => {
            return Err(Reason::new(
                "integrity.key_missing",
                "Für ein Signaturverfahren fehlen Schlüssel und Zertifikat.",
                "A signature algorithm needs a key and a certificate.",
            ))
        }
    };
    let field = format!("{head}{}\r\n", fold(&B64.encode(b), 76));
    let value = {
        let colon = field.find(':').map_or(0, |p| p + 1);
        field[colon..].replace("\r\n", "").trim().to_string()
    };
    Ok(Signed { header: format!("{field}{cert_line}"), value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_list() {
        let v = parse_value("c=simple/simple; a=sha256; l=5; h=From : Subject; bh=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=; b=AAAA AAAA AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=;").unwrap();
        assert_eq!(v.headers, ["From", "Subject"]);
        assert_eq!(v.algorithm.to_string(), "sha256");
        for bad in [
            "a=sha256; a=sha256",
            "a=md5; h=From; bh=; b=",
            "c=relaxed/relaxed; a=sha256; h=From; bh=; b=",
            "a=sha256 h=From",
        ] {
            assert!(parse_value(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_value("a=sha1/rsa; h=a; bh=; b=").unwrap_err().code, "integrity.unsupported_algorithm");
    }

    #[test]
    fn b_is_emptied_with_its_white_space() {
        let f = b"X-de-mail-integrity: a=sha256; bh=xyz;\r\n b=abc\r\n def\r\n";
        assert_eq!(without_b(f), b"X-de-mail-integrity: a=sha256; bh=xyz;\r\n b=");
        let f = b"X-de-mail-integrity: b = abc ; bh=xyz\r\n";
        assert_eq!(without_b(f), b"X-de-mail-integrity: b =; bh=xyz");
    }

    #[test]
    fn body_canonicalisation() {
        let h = |b: &[u8]| body_hash(b, Hash::Sha256);
        assert_eq!(h(b""), h(b"\r\n"));
        assert_eq!(h(b"\r\n\r\n\r\n"), h(b"\r\n"));
        assert_eq!(h(b"a\r\n\r\n"), h(b"a\r\n"));
        assert_eq!(h(b"a"), h(b"a\r\n"));
        assert_ne!(h(b"a\r\n b"), h(b"a\r\nb"));
    }

    #[test]
    fn fields_and_lf() {
        let raw = crlf(b"From: a\nSubject: x\n y\nX: 1\n\nbody\n");
        let m = split(&raw);
        assert_eq!(m.fields.len(), 3);
        assert_eq!(m.fields[1].raw, b"Subject: x\r\n y\r\n");
        assert_eq!(m.body, b"body\r\n");
        assert!(matches!(crlf(b"a\r\nb"), Cow::Borrowed(_)));
    }
}
