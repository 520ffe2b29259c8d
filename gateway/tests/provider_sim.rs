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
