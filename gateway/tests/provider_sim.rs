//! Gateway + provider simulator + Dovecot, all as separate processes.

mod common;

use common::*;
use std::time::Duration;

fn msg(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@musterstadt.de>\r\n\r\nText\r\n",
        demail_testkit::free_port()
    )
    .into_bytes()
}

fn pid_of(m: &[u8]) -> String {
    header(m, "X-de-mail-private-id").unwrap()
}

#[test]
fn receipts_of_all_three_kinds_are_linked_to_the_sent_de_mail() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    let r = h.submit(
        "recht@musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg("recht@musterstadt.de", "anna@buerger.de-mail.de", "[VB, EB, AB] Bescheid"),
    );
    assert!(r.is_ok(), "{r:?}");
    // Versand- and Eingangsbestätigung come by themselves.
    let got = h.dovecot.wait_for_messages("recht@musterstadt.de", 2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "gateway:\n{}\nsim:\n{}", h.log(), h.sim_log());
    let pid = pid_of(&got[0]);
    let subjects: Vec<String> = got.iter().map(|m| header(m, "X-de-mail-message-type").unwrap()).collect();
    assert!(
        subjects.contains(&"confirmation of dispatch".to_string())
            && subjects.contains(&"confirmation of receipt".to_string()),
        "{subjects:?}"
    );
    // Abholbestätigung when the recipient "logs in".
    let o = h.sim_cli(&["retrieve", "--private-id", &pid]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let got = h.dovecot.wait_for_messages("recht@musterstadt.de", 3, Duration::from_secs(30));
    assert_eq!(got.len(), 3);
    let ab = got
        .iter()
        .find(|m| header(m, "X-de-mail-message-type").as_deref() == Some("confirmation of retrieve"))
        .expect("Abholbestätigung");
    assert_eq!(header(ab, "X-de-mail-private").as_deref(), Some("yes"));
    // multipart/mixed with the urn:de-mail XML and a PDF, as the core reads it.
    let parsed = mail_parser::MessageParser::default().parse(ab).unwrap();
    let types: Vec<String> = parsed
        .parts
        .iter()
        .filter_map(|p| {
            mail_parser::MimeHeaders::content_type(p).map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
        })
        .collect();
    assert!(
        types.contains(&"application/xml".to_string()) && types.contains(&"application/pdf".to_string()),
        "{types:?}"
    );
    let pdf = parsed
        .parts
        .iter()
        .find(|p| mail_parser::MimeHeaders::content_type(*p).is_some_and(|c| c.subtype() == Some("pdf")))
        .unwrap();
    assert!(pdf.contents().starts_with(b"%PDF-1.4"));

    let entries = h.archive_entries();
    let out = entries.iter().find(|e| e["direction"] == "out").unwrap();
    let receipts: Vec<_> = entries.iter().filter(|e| e["direction"] == "receipt").collect();
    assert_eq!(receipts.len(), 3);
    assert!(receipts.iter().all(|e| e["link"] == out["seq"] && e["private_id"] == pid.as_str()));
    assert!(h.cli(&["archive", "verify"]).status.success());
}

#[test]
fn unknown_recipient_gets_a_linked_notification() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    h.submit(
        "peter.meier@musterstadt.de",
        &["unbekannt@buerger.de-mail.de"],
        &msg("peter.meier@musterstadt.de", "unbekannt@buerger.de-mail.de", "[P] Antrag"),
    )
    .unwrap();
    let got = h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}\n{}", h.log(), h.sim_log());
    assert_eq!(header(&got[0], "X-de-mail-notification-type").as_deref(), Some("unknown-recipient"));
    let entries = h.archive_entries();
    let n = entries.iter().find(|e| e["direction"] == "notification").unwrap();
    assert_eq!(n["link"], entries[0]["seq"]);
}

#[test]
fn citizen_de_mail_arrives_with_provider_headers_and_options() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    let o = h.sim_cli(&[
        "inject",
        "--from",
        "erika@buerger.de-mail.de",
        "--to",
        "poststelle@musterstadt.de-mail.de",
        "--subject",
        "Widerspruch",
        "--options",
        "private,confirmation-of-receipt",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // poststelle@ is overridden to buergerbuero@ in the policy.
    let got = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", h.log());
    let m = &got[0];
    assert_eq!(header(m, "X-de-mail-private").as_deref(), Some("yes"));
    assert_eq!(header(m, "X-de-mail-auth-level").as_deref(), Some("high"));
    assert_eq!(header(m, "X-de-mail-message-type").as_deref(), Some("normal"));
    assert!(header(m, "X-de-mail-integrity").is_some_and(|v| v.contains("a=sha256")));
    assert_eq!(header(m, "X-de-mail-originator-provider").as_deref(), Some("dmda-sim.de-mail.de"));
    assert!(h.archive_entries().iter().any(|e| e["direction"] == "in"));
}

#[test]
fn de_mail_between_own_addresses_goes_round_the_provider() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    h.submit(
        "peter.meier@musterstadt.de",
        &["poststelle@musterstadt.de-mail.de"],
        &msg("peter.meier@musterstadt.de", "poststelle@musterstadt.de-mail.de", "[P] intern"),
    )
    .unwrap();
    let got = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}\n{}", h.log(), h.sim_log());
    assert_eq!(header(&got[0], "X-de-mail-sender").as_deref(), Some("peter.meier@musterstadt.de-mail.de"));
}

#[test]
fn a_refused_recipient_gets_a_dsn_and_the_others_get_the_de_mail() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    // The simulator refuses `abgelehnt@…` at RCPT (550) and accepts anna.
    let to = ["anna@buerger.de-mail.de", "abgelehnt@buerger.de-mail.de"];
    let r =
        h.submit("peter.meier@musterstadt.de", &to, &msg("peter.meier@musterstadt.de", &to.join(", "), "Teilweise"));
    assert!(r.is_ok(), "{r:?}");
    let dsn = h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(dsn.len(), 1, "gateway:\n{}\nsim:\n{}", h.log(), h.sim_log());
    let text = String::from_utf8_lossy(&dsn[0]);
    assert!(text.contains("Final-Recipient: rfc822; abgelehnt@buerger.de-mail.de"), "{text}");
    assert!(!text.contains("Final-Recipient: rfc822; anna@"), "{text}");
    assert!(
        text.contains("An die übrigen Empfänger wurde sie zugestellt: anna@buerger.de-mail.de")
            || text.contains("=C3=BCbrigen"),
        "{text}"
    );
    assert!(text.contains("It was delivered to the other recipients: anna@buerger.de-mail.de"), "{text}");
    // The provider holds it for anna only, once; nothing stays queued.
    let stored = h.sim_stored();
    assert_eq!(stored.len(), 1);
    assert!(
        demail_testkit::wait_until(Duration::from_secs(10), || (h.queue_len() == 0).then_some(())).is_some(),
        "{}",
        h.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.dovecot.messages("peter.meier@musterstadt.de").len(), 1, "exactly one DSN");
}

#[test]
fn the_simulator_stores_a_resend_with_the_same_message_id_once() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    let from = "peter.meier@musterstadt.de-mail.de";
    let m = msg(from, "anna@buerger.de-mail.de", "Zweimal");
    let a = h.submit_to_provider(from, &["anna@buerger.de-mail.de"], &m).unwrap();
    let b = h.submit_to_provider(from, &["anna@buerger.de-mail.de"], &m).unwrap();
    assert_eq!(a, b, "a resend is answered with the first acceptance");
    assert_eq!(h.sim_stored().len(), 1);
    assert!(h.sim_log().contains("duplicate submission"));
    // Other recipients or another Message-ID are a new message.
    h.submit_to_provider(from, &["bernd@buerger.de-mail.de"], &m).unwrap();
    h.submit_to_provider(from, &["anna@buerger.de-mail.de"], &msg(from, "anna@buerger.de-mail.de", "Neu")).unwrap();
    assert_eq!(h.sim_stored().len(), 3);
}

/// `seal.verify` through the core's API, with the public key the gateway printed.
fn seal_verify(h: &Harness, raw: &[u8]) -> serde_json::Value {
    let public = std::fs::read_to_string(h.path().join("seal-public.txt")).unwrap();
    let policy_src = format!("{POLICY}\n[seal]\npublic_keys = [\"{}\"]\nrequired = true\n", public.trim());
    let policy = demail_core::Policy::parse(&policy_src).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 4);
    let headers = String::from_utf8_lossy(&raw[..end]).to_string();
    demail_core::api::call(
        "seal.verify",
        &policy,
        &serde_json::Value::String(headers),
        &demail_core::api::Env::default(),
    )
    .unwrap()
}

#[test]
fn inbound_de_mail_is_sealed_and_forgeries_do_not_verify() {
    let mut h = Harness::with_seal();
    let _sim = h.start_sim();
    let o = h.sim_cli(&[
        "inject",
        "--from",
        "erika@buerger.de-mail.de",
        "--to",
        "poststelle@musterstadt.de-mail.de",
        "--subject",
        "Antrag",
        "--options",
        "private",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", h.log());
    let real = &got[0];
    let v = seal_verify(&h, real);
    assert_eq!(v["sealed"], true, "{v}");
    assert_eq!(v["code"], "seal.valid");
    assert_eq!(v["kid"], "gw-test");
    // Internet mail dropped straight into the mailbox (not via the gateway) with
    // forged De-Mail headers: with a copied seal it breaks, without one it is missing.
    let real_text = String::from_utf8_lossy(real).to_string();
    let seal_line = real_text.lines().find(|l| l.starts_with("X-Demail-Gateway-Seal:")).unwrap().to_string();
    let forged_headers = |i: usize| {
        format!("From: betrueger@example.org\r\nTo: buergerbuero@musterstadt.de\r\nSubject: Mahnung\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\nMessage-ID: <forged-{i}@example.org>\r\nX-de-mail-auth-level: high\r\nX-de-mail-message-type: normal\r\nX-de-mail-originator-provider: dmda-sim.de-mail.de\r\n")
    };
    let cases = [
        (format!("{seal_line}\r\n{}\r\nZahlen Sie jetzt.\r\n", forged_headers(0)), "seal.bad_signature"),
        (format!("{}\r\nZahlen Sie jetzt.\r\n", forged_headers(1)), "seal.missing"),
    ];
    for (i, (forged, code)) in cases.iter().enumerate() {
        let f = h.path().join(format!("forged-{i}.eml"));
        std::fs::write(&f, forged).unwrap();
        let out = std::process::Command::new("swaks")
            .args(["--protocol", "LMTP", "--server"])
            .arg(format!("127.0.0.1:{}", h.dovecot.lmtp_port))
            .args(["--from", "betrueger@example.org", "--to", "buergerbuero@musterstadt.de", "--data"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let all = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 2 + i, Duration::from_secs(10));
        let m = all.iter().find(|m| String::from_utf8_lossy(m).contains(&format!("<forged-{i}@example.org>"))).unwrap();
        let v = seal_verify(&h, m);
        assert_eq!(v["sealed"], false, "{v}");
        assert_eq!(v["code"], *code, "{v}");
    }
    // A seal that came with an inbound message is replaced by the gateway's own.
    let forged_seal = format!("{seal_line}\r\nFrom: erika@buerger.de-mail.de\r\nTo: poststelle@musterstadt.de-mail.de\r\nSubject: Zweite\r\nMessage-ID: <second@buerger>\r\nX-de-mail-auth-level: high\r\n\r\nText\r\n");
    assert_eq!(
        h.inject("erika@buerger.de-mail.de", &["poststelle@musterstadt.de-mail.de"], forged_seal.as_bytes()).unwrap(),
        "250"
    );
    let all = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 4, Duration::from_secs(30));
    let second = all.iter().find(|m| String::from_utf8_lossy(m).contains("<second@buerger>")).unwrap();
    assert_eq!(String::from_utf8_lossy(second).matches("X-Demail-Gateway-Seal:").count(), 1);
    assert_eq!(seal_verify(&h, second)["sealed"], true);
}

#[test]
fn a_crash_after_data_leads_to_a_resend_the_provider_stores_once() {
    let mut h = Harness::new();
    // Provider down: the De-Mail waits in the spool; keep a copy of that spool file.
    let m = msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "Einmal");
    h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m).unwrap();
    let queue = h.path().join("spool/queue");
    let spooled = std::fs::read_dir(&queue)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "msg"))
        .unwrap();
    let copy = std::fs::read(&spooled).unwrap();
    let _sim = h.start_sim();
    assert!(
        demail_testkit::wait_until(Duration::from_secs(20), || (h.sim_stored().len() == 1 && !spooled.exists())
            .then_some(()))
        .is_some(),
        "{}",
        h.log()
    );
    // Recreate the state a kill -9 between the provider's 250 and the spool removal
    // leaves behind: the message still queued, marked as in DATA.
    h.gateway.as_mut().unwrap().kill();
    std::fs::write(&spooled, &copy).unwrap();
    std::fs::write(spooled.with_extension("sending"), b"").unwrap();
    h.start_gateway();
    assert!(
        demail_testkit::wait_until(Duration::from_secs(20), || (h.queue_len() == 0).then_some(())).is_some(),
        "{}",
        h.log()
    );
    assert!(h.log().contains("previous attempt interrupted during DATA"), "{}", h.log());
    assert!(h.sim_log().contains("duplicate submission"), "{}", h.sim_log());
    assert_eq!(h.sim_stored().len(), 1, "stored exactly once");
    assert!(!spooled.with_extension("sending").exists());
}

// --- The provider's proof: X-de-mail-integrity, XML-DSig, the "hoch" login -------------

use demail_core::cert::Cert;
use demail_core::integrity::{self, Status};
use demail_testkit::KeyType;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The core's verdict with the test qualified CA as the trusted provider CA.
fn verify(h: &Harness, raw: &[u8]) -> integrity::Verdict {
    integrity::verify(raw, &[Cert::from_text(&h.qca().ca.cert_pem).unwrap()], now())
}

fn run(cmd: &str, args: &[&str], dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(cmd).args(args).current_dir(dir).output().unwrap()
}

/// What the simulator signed (the core's `integrity::sign`), checked by openssl over the
/// canonical input the core produces; `bh=` against openssl's digest of the body.
fn openssl_agrees(h: &Harness, raw: &[u8], algorithm: &str) {
    let c = integrity::canonical(raw).unwrap();
    let d = h.path();
    let (hash, kind) = algorithm.split_once('/').unwrap_or((algorithm, ""));
    let body_start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut body = raw[body_start..].to_vec();
    while body.ends_with(b"\r\n\r\n") {
        body.truncate(body.len() - 2);
    }
    std::fs::write(d.join("body.bin"), &body).unwrap();
    let digest = run("openssl", &["dgst", &format!("-{hash}"), "-binary", "body.bin"], d);
    assert_eq!(digest.stdout, c.body_hash, "{algorithm}: bh= is not openssl's body digest");
    std::fs::write(d.join("input.bin"), &c.header_input).unwrap();
    if kind.is_empty() {
        let digest = run("openssl", &["dgst", &format!("-{hash}"), "-binary", "input.bin"], d);
        assert_eq!(digest.stdout, c.value.b, "{algorithm}: b= is not openssl's header digest");
        return;
    }
    std::fs::write(d.join("sig.bin"), &c.value.b).unwrap();
    let public = h.signer.as_ref().unwrap().public_key.display().to_string();
    let mut args =
        vec!["dgst".to_string(), format!("-{hash}"), "-verify".into(), public, "-signature".into(), "sig.bin".into()];
    if kind == "rsassa-pss" {
        for o in ["rsa_padding_mode:pss".to_string(), "rsa_pss_saltlen:digest".into(), format!("rsa_mgf1_md:{hash}")] {
            args.extend(["-sigopt".to_string(), o]);
        }
    }
    args.push("input.bin".into());
    let o = run("openssl", &args.iter().map(String::as_str).collect::<Vec<_>>(), d);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "Verified OK",
        "{algorithm}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn xml_part(raw: &[u8]) -> String {
    let m = mail_parser::MessageParser::default().parse(raw).unwrap();
    m.parts
        .iter()
        .find(|p| mail_parser::MimeHeaders::content_type(*p).is_some_and(|c| c.subtype() == Some("xml")))
        .and_then(|p| p.text_contents())
        .unwrap()
        .to_string()
}

#[test]
fn every_algorithm_signs_de_mails_and_receipts_and_openssl_agrees() {
    for (algorithm, key) in [
        ("sha256/rsa", KeyType::Rsa2048),
        ("sha512/rsa", KeyType::Rsa2048),
        ("sha256/rsassa-pss", KeyType::Rsa2048),
        ("sha384/ec-dsa", KeyType::P384),
        ("sha256/ec-dsa", KeyType::P256),
        ("sha384", KeyType::P256),
    ] {
        let mut h = Harness::new();
        let _sim = h.start_sim_signing(algorithm, key);
        let signed = algorithm.contains('/');
        // Absenderbestätigt must be signed: a provider that only hashes refuses it (bounce).
        let subject = if signed { "[VB, EB, A] Bescheid" } else { "[VB, EB] Bescheid" };
        let r = h.submit(
            "recht@musterstadt.de",
            &["anna@buerger.de-mail.de"],
            &msg("recht@musterstadt.de", "anna@buerger.de-mail.de", subject),
        );
        assert!(r.is_ok(), "{algorithm}: {r:?}");
        let want = if signed { Status::Valid } else { Status::HashOnly };
        // The De-Mail as the provider holds it, and both receipts as they arrive (Dovecot: LF, Received, seal).
        let stored =
            demail_testkit::wait_until(Duration::from_secs(20), || Some(h.sim_stored()).filter(|s| !s.is_empty()))
                .unwrap_or_else(|| panic!("{algorithm}: nothing stored\n{}\n{}", h.log(), h.sim_log()));
        let v = verify(&h, &stored[0]);
        assert_eq!((v.status, v.algorithm.as_deref()), (want, Some(algorithm)), "{v:?}");
        openssl_agrees(&h, &stored[0], algorithm);
        for name in ["X-de-mail-authoritative", "X-de-mail-chosen-recipient", "X-de-mail-auth-level", "Subject"] {
            let expected = signed || name != "X-de-mail-authoritative";
            assert_eq!(v.signed_headers.iter().any(|s| s == name), expected, "{name}: {:?}", v.signed_headers);
        }
        let got = h.dovecot.wait_for_messages("recht@musterstadt.de", 2, Duration::from_secs(30));
        assert_eq!(got.len(), 2, "{}\n{}", h.log(), h.sim_log());
        for m in &got {
            let v = verify(&h, m);
            assert_eq!(v.status, want, "{algorithm} receipt: {v:?}");
            if want == Status::Valid {
                assert_eq!(v.signer.as_deref(), Some("CN=DMDA Simulator Signatur,O=DMDA Simulator,C=DE"));
            }
        }
        // A citizen's De-Mail through the gateway into the mailbox.
        let o =
            h.sim_cli(&["inject", "--from", "erika@buerger.de-mail.de", "--to", "poststelle@musterstadt.de-mail.de"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
        assert_eq!(verify(&h, &got[0]).status, want, "{algorithm} inbound");
    }
}

#[test]
fn alterations_of_a_delivered_de_mail_are_found() {
    let mut h = Harness::new();
    let _sim = h.start_sim_signing("sha256/ec-dsa", KeyType::P256);
    let o = h.sim_cli(&[
        "inject",
        "--from",
        "erika@buerger.de-mail.de",
        "--to",
        "poststelle@musterstadt.de-mail.de",
        "--subject",
        "Widerspruch",
        "--options",
        "private",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = String::from_utf8(
        h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30)).remove(0),
    )
    .unwrap();
    assert_eq!(verify(&h, m.as_bytes()).status, Status::Valid);
    for (what, altered, code) in [
        ("subject", m.replace("Subject: Widerspruch", "Subject: Zustimmung"), "integrity.bad_signature"),
        ("body", m.replace("freundlichen", "unfreundlichen"), "integrity.body_altered"),
        ("recipient", m.replace("to=poststelle@", "to=kasse@"), "integrity.bad_signature"),
        ("option", m.replace("X-de-mail-private: yes", "X-de-mail-private: no"), "integrity.bad_signature"),
    ] {
        assert_ne!(altered, m, "{what}: nothing replaced");
        let v = verify(&h, altered.as_bytes());
        assert_eq!((v.status, v.reasons[0].code.as_str()), (Status::Invalid, code), "{what}");
    }
    // Another CA's view: the same message is not from a provider it trusts.
    let other = demail_testkit::QualifiedCa::generate(h.path(), "other", KeyType::Rsa2048);
    let v = integrity::verify(m.as_bytes(), &[Cert::from_text(&other.ca.cert_pem).unwrap()], now());
    assert_eq!(v.status, Status::UntrustedCertificate);
    // And after the signing certificate's 365 days.
    let anchors = [Cert::from_text(&h.qca().ca.cert_pem).unwrap()];
    assert_eq!(integrity::verify(m.as_bytes(), &anchors, now() + 400 * 86_400).status, Status::Expired);
}

#[test]
fn receipt_xml_signature_verifies_with_xmlsec1() {
    if !demail_testkit::have("xmlsec1") {
        panic!("xmlsec1 missing: scripts/setup test");
    }
    for (algorithm, key) in [("sha256/rsa", KeyType::Rsa2048), ("sha256/ec-dsa", KeyType::P256)] {
        let mut h = Harness::new();
        let _sim = h.start_sim_signing(algorithm, key);
        h.submit(
            "recht@musterstadt.de",
            &["anna@buerger.de-mail.de"],
            &msg("recht@musterstadt.de", "anna@buerger.de-mail.de", "[VB] Bescheid"),
        )
        .unwrap();
        let got = h.dovecot.wait_for_messages("recht@musterstadt.de", 1, Duration::from_secs(30));
        assert_eq!(got.len(), 1, "{}", h.sim_log());
        let xml = xml_part(&got[0]);
        assert!(xml.contains("<ds:SignatureValue>"), "{xml}");
        let d = h.path();
        let ca = h.qca().ca.cert.display().to_string();
        std::fs::write(d.join("receipt.xml"), &xml).unwrap();
        let o = run("xmlsec1", &["--verify", "--trusted-pem", &ca, "receipt.xml"], d);
        assert!(
            o.status.success(),
            "{algorithm}: {}{}\n{xml}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // Another Hash in the XML: the signature no longer holds.
        let forged = xml.replacen("<Hash>c=simple/simple; a=", "<Hash>c=simple/simple;  a=", 1);
        assert_ne!(forged, xml);
        std::fs::write(d.join("forged.xml"), &forged).unwrap();
        let o = run("xmlsec1", &["--verify", "--trusted-pem", &ca, "forged.xml"], d);
        assert!(!o.status.success(), "{algorithm}: the altered XML verified");
    }
}

#[test]
fn the_provider_refuses_a_gateway_without_the_second_factor() {
    // The gateway configured with the token secret only.
    let mut h = Harness::custom(POLICY, |c| c.replace("totp_secret_env = \"TEST_PROVIDER_TOTP\"\n", ""));
    assert!(!std::fs::read_to_string(&h.config).unwrap().contains("totp_secret_env"));
    let _sim = h.start_sim();
    h.submit(
        "peter.meier@musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "Antrag"),
    )
    .unwrap();
    assert!(
        demail_testkit::wait_until(Duration::from_secs(20), || h
            .sim_log()
            .contains("login without the second factor refused")
            .then_some(()))
        .is_some(),
        "{}",
        h.sim_log()
    );
    assert!(h.sim_stored().is_empty());
    assert_eq!(h.queue_len(), 1, "the De-Mail waits in the queue");
    // Stop the gateway's retries: the SMTP server locks an address out after a few failures.
    h.gateway.take();
    // Directly: with the code the login works; the secret alone or a wrong code does not.
    let m = msg(PROVIDER_USER, "anna@buerger.de-mail.de", "Direkt");
    let from = "peter.meier@musterstadt.de-mail.de";
    let to = ["anna@buerger.de-mail.de"];
    let r = h.submit_to_provider(from, &to, &m);
    assert!(r.is_ok(), "{r:?}");
    for password in [PROVIDER_SECRET.to_string(), format!("{PROVIDER_SECRET}000000")] {
        let r = h.submit_to_provider_as(PROVIDER_USER, &password, from, &to, &msg(from, to[0], "Ohne"));
        assert!(r.is_err(), "{password}: {r:?}");
    }
    assert_eq!(h.sim_stored().len(), 1, "only the login with the code delivered");
}

#[test]
fn the_auth_level_header_follows_the_actual_login() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    let from = "peter.meier@musterstadt.de-mail.de";
    let to = ["anna@buerger.de-mail.de"];
    // The gateway's login: token secret and TOTP code.
    h.submit_to_provider(from, &to, &msg(from, to[0], "Hoch")).unwrap();
    // A citizen's account with a password only (the reply comes after storing).
    h.submit_to_provider_as(
        "buerger",
        CITIZEN_SECRET,
        "erika@buerger.de-mail.de",
        &to,
        &msg("erika@buerger.de-mail.de", to[0], "Normal"),
    )
    .unwrap();
    let stored = h.sim_stored();
    assert_eq!(stored.len(), 2);
    let level = |subject: &str| {
        let m = stored.iter().find(|m| header(m, "Subject").as_deref() == Some(subject)).unwrap();
        (header(m, "X-de-mail-auth-level").unwrap(), header(m, "X-de-mail-auth-mechanism").unwrap())
    };
    assert_eq!(level("Hoch"), ("high".into(), "password+totp".into()));
    assert_eq!(level("Normal"), ("normal".into(), "password".into()));
    // Persönlich needs "hoch": refused for the normal login.
    let private = format!(
        "X-de-mail-private: yes\r\n{}",
        String::from_utf8_lossy(&msg("erika@buerger.de-mail.de", to[0], "Privat"))
    );
    let r = h.submit_to_provider_as("buerger", CITIZEN_SECRET, "erika@buerger.de-mail.de", &to, private.as_bytes());
    assert!(r.as_ref().is_err_and(|e| e.contains("sim.auth_level_too_low")), "{r:?}");
    // Both signed levels verify: the header is part of what the provider signed.
    for m in &stored {
        assert_eq!(verify(&h, m).status, Status::Valid);
    }
}

#[test]
fn a_receipt_matches_exactly_the_message_handed_over() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    for subject in ["[VB] Bescheid", "[VB] Anderer Bescheid"] {
        h.submit(
            "recht@musterstadt.de",
            &["anna@buerger.de-mail.de"],
            &msg("recht@musterstadt.de", "anna@buerger.de-mail.de", subject),
        )
        .unwrap();
    }
    let receipts = h.dovecot.wait_for_messages("recht@musterstadt.de", 2, Duration::from_secs(30));
    assert_eq!(receipts.len(), 2, "{}", h.sim_log());
    // What the gateway handed over, from its archive.
    let out = h.path().join("export-receipts");
    assert!(h.cli(&["archive", "export", "--out", out.to_str().unwrap()]).status.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let sent: Vec<Vec<u8>> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["direction"] == "out")
        .map(|e| std::fs::read(out.join(e["file"].as_str().unwrap())).unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    let policy = demail_core::Policy::default();
    for r in &receipts {
        assert_eq!(verify(&h, r).status, Status::Valid, "the receipt itself");
        let subject = pid_of(r);
        let (mine, other) = if pid_of(&sent[0]) == subject { (&sent[0], &sent[1]) } else { (&sent[1], &sent[0]) };
        assert_eq!(pid_of(mine), subject);
        let own = demail_core::proof::receipt(r, Some(mine), &policy).unwrap();
        assert_eq!(own.matches_sent, Some(true), "{subject}: {:?}", own.reasons);
        let wrong = demail_core::proof::receipt(r, Some(other), &policy).unwrap();
        assert_eq!(wrong.matches_sent, Some(false), "{subject}");
        let codes: Vec<&str> = wrong.reasons.iter().map(|x| x.code.as_str()).collect();
        assert!(codes.contains(&"receipt.body_mismatch") || codes.contains(&"receipt.metadata_mismatch"), "{codes:?}");
        assert_eq!(demail_core::proof::receipt(r, None, &policy).unwrap().matches_sent, None);
        // The gateway made the same comparison with its archive, for every client to read.
        let text = String::from_utf8_lossy(r);
        assert!(text.contains("demail-receipt=pass reason=\"receipt.matches_sent\" policy.archive-seq="), "{text}");
    }
    // The other De-Mail's receipt, relabelled with this one's private-id: the gateway says so.
    let (a, b) = (pid_of(&receipts[0]), pid_of(&receipts[1]));
    // Dovecot keeps LF line ends; SMTP wants CRLF.
    let relabelled = String::from_utf8_lossy(&receipts[1]).replace("\r\n", "\n").replace('\n', "\r\n").replace(&b, &a);
    let r =
        h.inject("versandbestaetigung@provider.de-mail.de", &["recht@musterstadt.de-mail.de"], relabelled.as_bytes());
    assert_eq!(r.as_deref(), Ok("250"));
    let all = h.dovecot.wait_for_messages("recht@musterstadt.de", 3, Duration::from_secs(30));
    let forged = all
        .iter()
        .map(|m| String::from_utf8_lossy(m).to_string())
        .find(|m| !receipts.iter().any(|r| String::from_utf8_lossy(r) == *m))
        .unwrap();
    assert!(
        forged.contains("demail-receipt=fail reason=\"receipt.metadata_mismatch\"")
            || forged.contains("demail-receipt=fail reason=\"receipt.body_mismatch\""),
        "{forged}"
    );
    assert!(!forged.contains("demail-receipt=pass"), "{forged}");
}

/// A gateway whose policy trusts the test qualified CA (made before the gateway starts,
/// then handed to the harness so the simulator's certificate comes from it).
fn trusting_harness() -> Harness {
    trusting_harness_with(None)
}

/// As [`trusting_harness`], Dovecot running `sieve` before delivery.
fn trusting_harness_with(sieve: Option<&str>) -> Harness {
    let pre = demail_testkit::temp_dir();
    let qca_dir = pre.path().join("qca");
    std::fs::create_dir_all(&qca_dir).unwrap();
    let qca = demail_testkit::QualifiedCa::generate(&qca_dir, "qca", KeyType::P256);
    let policy = format!("{POLICY}\n[integrity]\ntrusted_providers = ['''\n{}\n''']\n", qca.ca.cert_pem.trim());
    let h = Harness::build_with(&policy, |c| c, false, sieve);
    let to = h.path().join("qca");
    std::fs::create_dir_all(&to).unwrap();
    for f in std::fs::read_dir(&qca_dir).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
    h
}

fn results_of(m: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(m);
    let head = text.split("\r\n\r\n").next().unwrap_or("").replace("\r\n ", " ").replace("\r\n\t", " ");
    head.lines().filter_map(|l| l.strip_prefix("Authentication-Results: ")).map(str::to_string).collect()
}

/// The border check: the gateway verifies the provider's signature on what it delivers
/// and writes the verdict as `Authentication-Results` for every mail client; a hash-only
/// value is no proof of who made it.
#[test]
fn the_gateway_checks_the_providers_signature_at_the_border() {
    for (algorithm, key, want) in [("sha256/rsa", KeyType::Rsa2048, "pass"), ("sha256", KeyType::Rsa2048, "neutral")] {
        let mut h = trusting_harness();
        let _sim = h.start_sim_signing(algorithm, key);
        let o =
            h.sim_cli(&["inject", "--from", "erika@buerger.de-mail.de", "--to", "poststelle@musterstadt.de-mail.de"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
        let results = results_of(&got[0]);
        assert_eq!(results.len(), 1, "{results:?}");
        let r = &results[0];
        assert!(r.starts_with(&format!("gw.musterstadt.de; demail-integrity={want} ")), "{algorithm}: {r}");
        if want == "pass" {
            assert!(
                r.contains("header.a=\"sha256/rsa\"") && r.contains("policy.signer=\"CN=DMDA Simulator Signatur"),
                "{r}"
            );
        }
    }
}

/// Without the provider's CA in the policy, a correct signature is no proof: `policy`.
#[test]
fn a_signature_from_an_untrusted_provider_is_not_a_pass() {
    let mut h = Harness::new();
    let _sim = h.start_sim_signing("sha256/ec-dsa", KeyType::P256);
    let o = h.sim_cli(&["inject", "--from", "erika@buerger.de-mail.de", "--to", "poststelle@musterstadt.de-mail.de"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
    let results = results_of(&got[0]);
    assert!(results.len() == 1 && results[0].starts_with("gw.musterstadt.de; demail-integrity=policy "), "{results:?}");
}

/// The keywords of each message in `address`, sorted, once they read as `want` (or after
/// 10 s): Dovecot may list a new message before its `dovecot-keywords` file names the letters.
fn settled_keywords(h: &Harness, address: &str, want: &[&[&str]]) -> Vec<Vec<String>> {
    let read = || {
        h.dovecot
            .keywords(address)
            .into_iter()
            .map(|mut v| {
                v.sort();
                v
            })
            .collect::<Vec<_>>()
    };
    demail_testkit::wait_until(Duration::from_secs(10), || (read() == want).then_some(()))
        .map_or_else(read, |()| read())
}

/// Marking without the add-in: the keyword script IT installs in Dovecot (Pigeonhole,
/// `installer/linux/gateway/files/demail-keywords.sieve`) turns the gateway's verdict and
/// the message type into IMAP keywords that every IMAP client shows; what did not pass
/// the gateway gets none, whatever headers it carries.
#[test]
fn the_keyword_script_marks_what_the_gateway_checked_for_every_imap_client() {
    let script = include_str!("../../installer/linux/gateway/files/demail-keywords.sieve");
    let mut h = trusting_harness_with(Some(script));
    let _sim = h.start_sim_signing("sha256/rsa", KeyType::Rsa2048);
    // Signed by the trusted provider: a De-Mail, no warning.
    let o = h.sim_cli(&["inject", "--from", "erika@buerger.de-mail.de", "--to", "poststelle@musterstadt.de-mail.de"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(settled_keywords(&h, "buergerbuero@musterstadt.de", &[&["$demail"]]), [["$demail"]]);
    // Unsigned: the kind, and a warning beside it.
    let demail = b"From: buerger@web.de-mail.de\r\nTo: peter.meier@musterstadt.de-mail.de\r\nSubject: Antrag\r\nX-de-mail-message-type: normal\r\n\r\nText\r\n";
    let receipt = b"From: dmda@provider.de-mail.de\r\nTo: recht@musterstadt.de-mail.de\r\nSubject: Versandbestaetigung\r\nX-de-mail-message-type: confirmation of dispatch\r\n\r\nText\r\n";
    assert_eq!(
        h.inject("buerger@web.de-mail.de", &["peter.meier@musterstadt.de-mail.de"], demail).as_deref(),
        Ok("250")
    );
    assert_eq!(h.inject("dmda@provider.de-mail.de", &["recht@musterstadt.de-mail.de"], receipt).as_deref(), Ok("250"));
    h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(30));
    h.dovecot.wait_for_messages("recht@musterstadt.de", 1, Duration::from_secs(30));
    let peter = settled_keywords(&h, "peter.meier@musterstadt.de", &[&["$demail", "$demail-warning"]]);
    assert_eq!(peter, [["$demail", "$demail-warning"]]);
    let recht = settled_keywords(&h, "recht@musterstadt.de", &[&["$demail-receipt", "$demail-warning"]]);
    assert_eq!(recht, [["$demail-receipt", "$demail-warning"]]);
    // Straight into Dovecot, as internet mail would come, with forged De-Mail headers and a
    // verdict under another name: no keyword.
    let forged = "From: x@example.org\r\nTo: anna@musterstadt.de\r\nSubject: Echt?\r\n\
        Authentication-Results: mx.example.org; demail-integrity=pass\r\nX-de-mail-message-type: normal\r\n\r\nText\r\n";
    let reply = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", h.dovecot.lmtp_port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(b"LHLO x\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<anna@musterstadt.de>\r\nDATA\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        c.write_all(format!("{forged}.\r\nQUIT\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    assert!(reply.contains("250 2.0.0 <anna@musterstadt.de>"), "{reply}");
    h.dovecot.wait_for_messages("anna@musterstadt.de", 1, Duration::from_secs(10));
    assert_eq!(h.dovecot.keywords("anna@musterstadt.de"), vec![Vec::<String>::new()]);
}
