//! `X-de-mail-integrity` against an independent implementation: for each algorithm
//! `openssl` signs (or hashes) the canonical input the core produces, with keys and
//! certificates `openssl` made, and the core must accept it; `bh=` is openssl's digest of
//! the body. Then what must not pass: altered subject, body, recipient and option headers,
//! an untrusted CA, an impostor CA of the same name, an expired certificate. (Signing by
//! the core, checked with `openssl dgst -verify`: gateway/tests/provider_sim.rs.)

use base64::Engine;
use demail_core::cert::Cert;
use demail_core::integrity::{self, Status, Verdict};
use demail_testkit::qca::openssl;
use demail_testkit::{KeyType, QualifiedCa};
use std::path::Path;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

const HEAD: &str = "From: Erika Muster <erika@buerger.de-mail.de>\r\n\
To: poststelle@musterstadt.de-mail.de\r\n\
Subject: Widerspruch gegen den Bescheid\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n\
Message-ID: <a1@buerger.de-mail.de>\r\n\
X-de-mail-private: yes\r\n\
X-de-mail-sender: erika@buerger.de-mail.de\r\n\
X-de-mail-chosen-recipient: to=poststelle@musterstadt.de-mail.de\r\n\
X-de-mail-auth-level: high\r\n\
X-de-mail-message-type: normal\r\n\
X-de-mail-message-id: <19ab@dmda-test.de-mail.de>\r\n";
const BODY: &str = "Sehr geehrte Damen und Herren,\r\n\r\nich widerspreche.\r\n\r\n";
const H: &str = "From:Date:Message-ID:Subject:X-de-mail-private:X-de-mail-sender:\r\n\tX-de-mail-chosen-recipient:X-de-mail-auth-level:X-de-mail-message-type:X-de-mail-message-id";

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn digest(dir: &Path, hash: &str, data: &[u8]) -> Vec<u8> {
    std::fs::write(dir.join("data.bin"), data).unwrap();
    openssl(&["dgst", &format!("-{hash}"), "-binary", "data.bin"], dir)
}

/// A message whose integrity field has `b=` still empty; `cert` adds the certificate header.
fn unsigned(dir: &Path, alg: &str, cert: Option<&[u8]>) -> String {
    let hash = alg.split('/').next().unwrap();
    // The body as simple canonicalisation reads it: trailing empty lines dropped.
    let bh = B64.encode(digest(
        dir,
        hash,
        BODY.trim_end_matches("\r\n").as_bytes().iter().chain(b"\r\n").copied().collect::<Vec<_>>().as_slice(),
    ));
    let cert = cert.map(|c| format!("X-de-mail-signature-certificate: {}\r\n", B64.encode(c))).unwrap_or_default();
    format!("X-de-mail-integrity: c=simple/simple; a={alg};\r\n q=x-header/x-de-mail-signature-certificate;\r\n h={H};\r\n bh={bh};\r\n b=\r\n{cert}{HEAD}\r\n{BODY}")
}

/// openssl signs the core's canonical input; the signature goes into `b=`.
fn signed_by_openssl(dir: &Path, alg: &str, key: &Path, cert: &[u8]) -> String {
    let msg = unsigned(dir, alg, Some(cert));
    let c = integrity::canonical(msg.as_bytes()).unwrap();
    assert!(c.header_input.ends_with(b"\r\n b="), "{}", String::from_utf8_lossy(&c.header_input));
    std::fs::write(dir.join("input.bin"), &c.header_input).unwrap();
    let (hash, kind) = alg.split_once('/').unwrap();
    let mut args = vec!["dgst".to_string(), format!("-{hash}"), "-sign".into(), key.display().to_string()];
    if kind == "rsassa-pss" {
        for o in ["rsa_padding_mode:pss", "rsa_pss_saltlen:digest", &format!("rsa_mgf1_md:{hash}")] {
            args.extend(["-sigopt".to_string(), o.to_string()]);
        }
    }
    args.extend(["-out".into(), "sig.bin".into(), "input.bin".into()]);
    openssl(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir);
    let sig = std::fs::read(dir.join("sig.bin")).unwrap();
    msg.replacen("\r\n b=\r\n", &format!("\r\n b={}\r\n", B64.encode(sig)), 1)
}

fn verify(msg: &str, anchors: &[Cert], at: u64) -> Verdict {
    integrity::verify(msg.as_bytes(), anchors, at)
}

fn anchor(ca: &QualifiedCa) -> Cert {
    Cert::from_text(&ca.ca.cert_pem).unwrap()
}

#[test]
fn every_algorithm_signed_by_openssl_verifies() {
    let d = demail_testkit::temp_dir();
    let cases = [
        (KeyType::Rsa2048, KeyType::Rsa2048, "sha256/rsa"),
        (KeyType::Rsa2048, KeyType::Rsa2048, "sha512/rsa"),
        (KeyType::P256, KeyType::Rsa2048, "sha256/rsassa-pss"),
        (KeyType::P256, KeyType::Rsa2048, "sha384/rsassa-pss"),
        (KeyType::Rsa2048, KeyType::P256, "sha256/ec-dsa"),
        (KeyType::P384, KeyType::P384, "sha384/ec-dsa"),
        (KeyType::P384, KeyType::P256, "sha512/ec-dsa"),
    ];
    for (i, (ca_key, leaf_key, alg)) in cases.into_iter().enumerate() {
        let ca = QualifiedCa::generate(d.path(), &format!("ca{i}"), ca_key);
        let leaf = ca.issue(&format!("DMDA Signatur {i}"), leaf_key, 365);
        let msg = signed_by_openssl(d.path(), alg, &leaf.key, &leaf.der());
        let v = verify(&msg, &[anchor(&ca)], now());
        assert_eq!(v.status, Status::Valid, "{alg}: {v:?}");
        assert_eq!(v.algorithm.as_deref(), Some(alg));
        assert!(v.signer.as_deref().unwrap().contains(&format!("CN=DMDA Signatur {i}")), "{v:?}");
        assert_eq!(v.reasons[0].code, "integrity.valid");
        // The same value with another hash in a= is another input: not valid.
        let other = if alg.starts_with("sha256") { "sha512" } else { "sha256" };
        let swapped = msg.replacen(&format!("a={alg}"), &format!("a={other}/{}", alg.split('/').nth(1).unwrap()), 1);
        assert_eq!(verify(&swapped, &[anchor(&ca)], now()).status, Status::Invalid, "{alg} with {other}");
        if alg.ends_with("ec-dsa") {
            // Raw r‖s is read as well as DER.
            let c = integrity::canonical(msg.as_bytes()).unwrap();
            let n = if leaf_key == KeyType::P256 { 32 } else { 48 };
            let raw = demail_core::cert::ecdsa_raw(&c.value.b, n).unwrap();
            let start = msg.find("\r\n b=").unwrap() + 5;
            let end = start + msg[start..].find("\r\n").unwrap();
            let raw_msg = format!("{}{}{}", &msg[..start], B64.encode(raw), &msg[end..]);
            assert_eq!(verify(&raw_msg, &[anchor(&ca)], now()).status, Status::Valid, "{alg} raw");
        }
    }
}

#[test]
fn hash_only_is_openssls_digest_and_catches_any_change() {
    let d = demail_testkit::temp_dir();
    for hash in ["sha256", "sha384", "sha512"] {
        // A placeholder of the right length: b= is not part of what is hashed.
        let len = if hash == "sha256" {
            32
        } else if hash == "sha384" {
            48
        } else {
            64
        };
        let placeholder = format!("\r\n b={}\r\n", B64.encode(vec![0u8; len]));
        let msg = unsigned(d.path(), hash, None).replacen("\r\n b=\r\n", &placeholder, 1);
        let c = integrity::canonical(msg.as_bytes()).unwrap();
        let b = digest(d.path(), hash, &c.header_input);
        let msg = msg.replacen(&placeholder, &format!("\r\n b={}\r\n", B64.encode(&b)), 1);
        assert_eq!(c.body_hash, integrity::canonical(msg.as_bytes()).unwrap().value.body_hash, "bh= is openssl's");
        let v = verify(&msg, &[], now());
        assert_eq!(v.status, Status::HashOnly, "{hash}: {v:?}");
        assert_eq!(v.signer, None);
        let v = verify(&msg.replace("Subject: Widerspruch", "Subject: Zustimmung"), &[], now());
        assert_eq!((v.status, v.reasons[0].code.as_str()), (Status::Invalid, "integrity.header_altered"));
        // Files with bare LF line ends verify the same.
        assert_eq!(verify(&msg.replace("\r\n", "\n"), &[], now()).status, Status::HashOnly);
    }
}

#[test]
fn alterations_after_signing_are_invalid() {
    let d = demail_testkit::temp_dir();
    let ca = QualifiedCa::generate(d.path(), "qca", KeyType::P256);
    let leaf = ca.issue("DMDA Signatur", KeyType::Rsa2048, 365);
    let msg = signed_by_openssl(d.path(), "sha256/rsa", &leaf.key, &leaf.der());
    let anchors = [anchor(&ca)];
    assert_eq!(verify(&msg, &anchors, now()).status, Status::Valid);
    let cases = [
        ("subject", msg.replace("Subject: Widerspruch", "Subject: Zustimmung"), "integrity.bad_signature"),
        ("body", msg.replace("ich widerspreche.", "ich stimme zu."), "integrity.body_altered"),
        ("attachment appended", format!("{msg}--\r\nmehr\r\n"), "integrity.body_altered"),
        (
            "recipient",
            msg.replace("chosen-recipient: to=poststelle@", "chosen-recipient: to=kasse@"),
            "integrity.bad_signature",
        ),
        ("option changed", msg.replace("X-de-mail-private: yes", "X-de-mail-private: no"), "integrity.bad_signature"),
        (
            "option added",
            msg.replace("X-de-mail-private: yes\r\n", "X-de-mail-private: yes\r\nX-de-mail-authoritative: yes\r\n"),
            "integrity.header_not_covered",
        ),
        ("forged option on top", format!("X-de-mail-private: no\r\n{msg}"), "integrity.bad_signature"),
        ("auth level", msg.replace("auth-level: high", "auth-level: normal"), "integrity.bad_signature"),
        (
            "certificate removed",
            msg.replacen("X-de-mail-signature-certificate:", "X-Old:", 1),
            "integrity.certificate_missing",
        ),
        ("garbled value", msg.replacen("a=sha256/rsa", "a sha256/rsa", 1), "integrity.malformed"),
    ];
    for (what, m, code) in cases {
        let v = verify(&m, &anchors, now());
        assert_eq!(v.status, Status::Invalid, "{what}: {v:?}");
        assert_eq!(v.reasons[0].code, code, "{what}: {v:?}");
    }
    // A header outside h= (Received, our seal, To) may change.
    assert_eq!(verify(&format!("Received: from x\r\n{msg}"), &anchors, now()).status, Status::Valid);
    // Without any integrity value.
    let plain = format!("{HEAD}\r\n{BODY}");
    assert_eq!(verify(&plain, &anchors, now()).status, Status::Unsigned);
}

#[test]
fn trust_and_time() {
    let d = demail_testkit::temp_dir();
    let ca = QualifiedCa::generate(d.path(), "qca", KeyType::Rsa2048);
    let leaf = ca.issue("DMDA Signatur", KeyType::P256, 365);
    let msg = signed_by_openssl(d.path(), "sha256/ec-dsa", &leaf.key, &leaf.der());
    let t = now();
    assert_eq!(verify(&msg, &[anchor(&ca)], t).status, Status::Valid);

    // Another CA, none at all, an impostor CA with the same name but another key.
    let other = QualifiedCa::generate(d.path(), "other", KeyType::P256);
    let v = verify(&msg, &[anchor(&other)], t);
    assert_eq!((v.status, v.reasons[0].code.as_str()), (Status::UntrustedCertificate, "integrity.untrusted"));
    assert_eq!(verify(&msg, &[], t).status, Status::UntrustedCertificate);
    let d2 = demail_testkit::temp_dir();
    let impostor = QualifiedCa::generate(d2.path(), "qca", KeyType::Rsa2048);
    assert_eq!(anchor(&impostor).subject, anchor(&ca).subject);
    let p = integrity::prepare(msg.as_bytes(), &[anchor(&impostor)], t);
    assert_eq!(p.checks.len(), 2, "message and certificate check");
    assert_eq!(verify(&msg, &[anchor(&impostor)], t).status, Status::UntrustedCertificate);
    // The provider certificate itself may be the anchor.
    assert_eq!(verify(&msg, &[Cert::from_text(&leaf.cert_pem).unwrap()], t).status, Status::Valid);

    // Outside the validity (365 days from today).
    let v = verify(&msg, &[anchor(&ca)], t + 400 * 86_400);
    assert_eq!((v.status, v.reasons[0].code.as_str()), (Status::Expired, "integrity.expired"));
    let v = verify(&msg, &[anchor(&ca)], t - 2 * 86_400);
    assert_eq!((v.status, v.reasons[0].code.as_str()), (Status::Expired, "integrity.not_yet_valid"));
    // A forged signature outranks trust and time.
    let forged = msg.replace("Subject: Widerspruch", "Subject: X");
    assert_eq!(verify(&forged, &[anchor(&other)], t + 400 * 86_400).status, Status::Invalid);
}
