//! `demail [--policy FILE] verify [--trust CA.pem]... [--sent FILE] FILE|-`: the fixed
//! contract other tools script against. One JSON object `{integrity, gateway_signature,
//! receipt}` on stdout and exit 0 whatever the verdict; exit 2 and a message on stderr
//! for unreadable input. Messages are signed here with keys and a CA made by openssl.

use demail_core::cert::{Hash, SigKind};
use demail_core::integrity::{self, Algorithm, SigningKey};
use demail_testkit::{KeyType, QualifiedCa};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SENT: &str = "From: recht@musterstadt.de-mail.de\r\n\
To: anna@buerger.de-mail.de\r\n\
Subject: Bescheid\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n\
Message-ID: <s1@musterstadt.de-mail.de>\r\n\
X-de-mail-confirmation-of-dispatch: yes\r\n\
X-de-mail-private-id: DM-20261127-0001\r\n\
\r\n\
Sehr geehrte Frau Muster,\r\n\r\nanbei der Bescheid.\r\n";

struct Setup {
    dir: demail_testkit::TempDir,
    qca: QualifiedCa,
    key: SigningKey,
    cert: Vec<u8>,
}

impl Setup {
    fn new() -> Setup {
        let dir = demail_testkit::temp_dir();
        let qca = QualifiedCa::generate(dir.path(), "qca", KeyType::P256);
        let leaf = qca.issue("DMDA Test Signatur", KeyType::Rsa2048, 365);
        let key = SigningKey::from_pem(&leaf.key_pem).unwrap();
        Setup { cert: leaf.der(), dir, qca, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// `raw` signed by the provider (sha256/rsa): the integrity lines on top, and the value.
    fn sign(&self, raw: &str) -> (String, String) {
        let alg = Algorithm { hash: Hash::Sha256, sig: Some(SigKind::Rsa) };
        let s = integrity::sign(raw.as_bytes(), alg, Some((&self.key, &self.cert))).unwrap();
        (format!("{}{raw}", s.header), s.value)
    }

    /// The provider's copy of `sent` (its headers added after hand-over), and the
    /// Versandbestätigung for it whose XML names `hash` and the sent De-Mail headers.
    fn receipt(&self, sent: &str, hash: Option<&str>) -> String {
        let copy = format!(
            "X-de-mail-message-id: <p1@dmda.de-mail.de>\r\nX-de-mail-auth-level: high\r\nX-de-mail-sender: recht@musterstadt.de-mail.de\r\n{sent}"
        );
        let (_, value) = self.sign(&copy);
        let hash = hash.unwrap_or(&value);
        let meta: String = demail_core::seal::header_fields(copy.as_bytes())
            .into_iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-de-mail-") || n.eq_ignore_ascii_case("message-id"))
            .map(|(n, v)| {
                format!(
                    "<Metadate><Name>{n}</Name><Value>{}</Value></Metadate>",
                    v.replace('<', "&lt;").replace('>', "&gt;")
                )
            })
            .collect();
        let receipt = format!(
            "From: Versandbestaetigung@dmda.de-mail.de\r\nTo: recht@musterstadt.de-mail.de\r\n\
             Subject: *Versandbestaetigung* Bescheid\r\nDate: Fri, 27 Nov 2026 10:00:05 +0100\r\n\
             Message-ID: <vb1@dmda.de-mail.de>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\
             X-de-mail-message-type: confirmation of dispatch\r\nX-de-mail-private-id: DM-20261127-0001\r\n\r\n\
             --b\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nIhre De-Mail wurde versandt.\r\n\
             --b\r\nContent-Type: application/xml; charset=UTF-8\r\n\r\n\
             <?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<Acknowledge-Message xmlns=\"urn:de-mail\">\
             <Sender>recht@musterstadt.de-mail.de</Sender><Metadata>{meta}</Metadata><Subject>Bescheid</Subject>\
             <Text>Ihre De-Mail wurde versandt.</Text><Hash>{hash}</Hash><Time>2026-11-27T10:00:05+01:00</Time>\
             </Acknowledge-Message>\r\n--b--\r\n"
        );
        self.sign(&receipt).0
    }
}

fn demail(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_demail"));
    c.args(args).env_remove("DEMAIL_POLICY").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn verify(args: &[&str]) -> Value {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = demail(&all, None);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_receipt_is_checked_against_the_message_as_sent() {
    let t = Setup::new();
    let ca = s(&t.qca.ca.cert).to_string();
    let sent = t.write("sent.eml", SENT.as_bytes());
    let receipt = t.write("receipt.eml", t.receipt(SENT, None).as_bytes());

    let v = verify(&["--trust", &ca, "--sent", s(&sent), s(&receipt)]);
    assert_eq!(v["integrity"]["status"], "valid", "{v}");
    assert_eq!(v["integrity"]["algorithm"], "sha256/rsa");
    assert_eq!(v["integrity"]["signer"], "CN=DMDA Test Signatur,O=DMDA Simulator,C=DE");
    assert_eq!(v["integrity"]["reasons"][0]["code"], "integrity.valid");
    assert!(v["integrity"]["reasons"][0]["message"].as_str().unwrap().contains("unverändert"));
    assert_eq!(v["gateway_signature"]["status"], "absent");
    assert_eq!(v["receipt"]["type"], "dispatch");
    assert_eq!(v["receipt"]["matches_sent"], true, "{v}");
    assert_eq!(v["receipt"]["reasons"][0]["code"], "receipt.matches_sent");

    // Another message as "sent": other content, other De-Mail headers.
    let other =
        SENT.replace("anbei der Bescheid", "anbei die Rechnung").replace("DM-20261127-0001", "DM-20261127-0002");
    let other = t.write("other.eml", other.as_bytes());
    let v = verify(&["--trust", &ca, "--sent", s(&other), s(&receipt)]);
    assert_eq!(v["receipt"]["matches_sent"], false);
    let codes: Vec<&str> =
        v["receipt"]["reasons"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["receipt.body_mismatch", "receipt.metadata_mismatch"], "{v}");

    // A receipt whose Hash names another message: validly signed, but not for ours.
    let foreign_hash = "c=simple/simple; a=sha256; h=From; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; \
                        b=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let foreign = t.write("foreign.eml", t.receipt(SENT, Some(foreign_hash)).as_bytes());
    let v = verify(&["--trust", &ca, "--sent", s(&sent), s(&foreign)]);
    assert_eq!(v["integrity"]["status"], "valid");
    assert_eq!(v["receipt"]["matches_sent"], false);
    assert_eq!(v["receipt"]["reasons"][0]["code"], "receipt.body_mismatch");

    // Without --sent there is nothing to compare; stdin works as FILE.
    let out = demail(&["verify", "--trust", &ca, "-"], Some(&std::fs::read(&receipt).unwrap()));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["receipt"]["matches_sent"], Value::Null);
    assert_eq!(v["receipt"]["type"], "dispatch");
    // A De-Mail that is no receipt.
    let (signed, _) = t.sign(SENT);
    let demail_file = t.write("demail.eml", signed.as_bytes());
    let v = verify(&["--trust", &ca, s(&demail_file)]);
    assert_eq!((v["integrity"]["status"].as_str(), &v["receipt"]), (Some("valid"), &Value::Null));
}

#[test]
fn trust_comes_from_the_policy_or_trust_and_every_verdict_exits_0() {
    let t = Setup::new();
    let (signed, _) = t.sign(SENT);
    let file = t.write("demail.eml", signed.as_bytes());
    // No provider CA: signed correctly, but by nobody the organisation trusts.
    let v = verify(&[s(&file)]);
    assert_eq!(v["integrity"]["status"], "untrusted-certificate");
    assert_eq!(v["integrity"]["reasons"][0]["code"], "integrity.untrusted");
    // The CA from the policy instead of --trust.
    let policy = format!("version = 1\n[integrity]\ntrusted_providers = [\"\"\"\n{}\"\"\"]\n", t.qca.ca.cert_pem);
    let policy = t.write("policy.toml", policy.as_bytes());
    let v = verify(&["--policy", s(&policy), s(&file)]).to_string();
    assert!(v.contains("\"status\":\"valid\""), "{v}");
    // --trust adds to the policy's CAs: another CA in the file, the right one on the command line.
    let other = QualifiedCa::generate(t.dir.path(), "other", KeyType::Rsa2048);
    let both = t.write("both.pem", format!("{}{}", other.ca.cert_pem, t.qca.ca.cert_pem).as_bytes());
    assert_eq!(verify(&["--trust", s(&other.ca.cert), s(&file)])["integrity"]["status"], "untrusted-certificate");
    assert_eq!(verify(&["--trust", s(&both), s(&file)])["integrity"]["status"], "valid");
    // Altered, hash-only, unsigned: data, exit 0.
    let altered = t.write("altered.eml", signed.replace("Subject: Bescheid", "Subject: Mahnung").as_bytes());
    let v = verify(&["--trust", s(&t.qca.ca.cert), s(&altered)]);
    assert_eq!(
        (v["integrity"]["status"].as_str(), v["integrity"]["reasons"][0]["code"].as_str()),
        (Some("invalid"), Some("integrity.bad_signature"))
    );
    let hashed = integrity::sign(SENT.as_bytes(), Algorithm { hash: Hash::Sha512, sig: None }, None).unwrap();
    let hashed = t.write("hashed.eml", format!("{}{SENT}", hashed.header).as_bytes());
    let v = verify(&[s(&hashed)]);
    assert_eq!(
        (v["integrity"]["status"].as_str(), v["integrity"]["algorithm"].as_str()),
        (Some("hash-only"), Some("sha512"))
    );
    let plain = t.write("plain.eml", SENT.as_bytes());
    assert_eq!(verify(&[s(&plain)])["integrity"]["status"], "unsigned");
    // After the certificate's 365 days the same message is "expired" (the CLI checks at now,
    // so this is the core at a later time, the path the CLI takes).
    let later = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 400 * 86_400;
    let anchors = [demail_core::cert::Cert::from_text(&t.qca.ca.cert_pem).unwrap()];
    assert_eq!(integrity::verify(signed.as_bytes(), &anchors, later).status, integrity::Status::Expired);
}

#[test]
fn the_gateway_mark_is_reported() {
    let t = Setup::new();
    let secret = [5u8; 32];
    let public = demail_core::seal::public_key("gw-1", &secret).to_string();
    let policy = t.write("policy.toml", format!("version = 1\n[seal]\npublic_keys = [\"{public}\"]\n").as_bytes());
    let sealed = format!(
        "X-Demail-Gateway-Seal: {}\r\n{SENT}",
        demail_core::seal::sign(SENT.as_bytes(), "gw-1", &secret).unwrap()
    );
    let file = t.write("sealed.eml", sealed.as_bytes());
    let v = verify(&["--policy", s(&policy), s(&file)]);
    assert_eq!(v["gateway_signature"]["status"], "valid", "{v}");
    assert_eq!(v["gateway_signature"]["reasons"][0]["code"], "seal.valid");
    let forged = t.write("forged.eml", sealed.replace("DM-20261127-0001", "DM-X").as_bytes());
    assert_eq!(verify(&["--policy", s(&policy), s(&forged)])["gateway_signature"]["status"], "invalid");
    assert_eq!(verify(&[s(&file)])["gateway_signature"]["status"], "unknown-key");
    assert_eq!(
        verify(&["--policy", s(&policy), &t.write("p.eml", SENT.as_bytes()).to_string_lossy()])["gateway_signature"]
            ["status"],
        "absent"
    );
}

#[test]
fn unreadable_input_exits_2_with_the_reason_on_stderr() {
    let t = Setup::new();
    let file = t.write("demail.eml", SENT.as_bytes());
    let not_a_ca = t.write("not-a-ca.pem", b"-----BEGIN CERTIFICATE-----\nbm8=\n-----END CERTIFICATE-----\n");
    for args in [
        vec!["verify", "/nonexistent/message.eml"],
        vec!["verify", "--sent", "/nonexistent/sent.eml", s(&file)],
        vec!["verify", "--trust", "/nonexistent/ca.pem", s(&file)],
        vec!["verify", "--trust", s(&not_a_ca), s(&file)],
    ] {
        let out = demail(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Fehler") && err.contains("Error"), "{args:?}: {err}");
    }
}
