//! Gateway + provider simulator + Dovecot, all as separate processes.

mod common;

use common::*;
use std::time::Duration;

fn msg(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@musterstadt.de>\r\n\r\nText\r\n", demail_testkit::free_port()).into_bytes()
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
        &msg(
            "recht@musterstadt.de",
            "anna@buerger.de-mail.de",
            "[VB, EB, AB] Bescheid",
        ),
    );
    assert!(r.is_ok(), "{r:?}");
    // Versand- and Eingangsbestätigung come by themselves.
    let got = h
        .dovecot
        .wait_for_messages("recht@musterstadt.de", 2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "gateway:\n{}\nsim:\n{}", h.log(), h.sim_log());
    let pid = pid_of(&got[0]);
    let subjects: Vec<String> = got
        .iter()
        .map(|m| header(m, "X-de-mail-message-type").unwrap())
        .collect();
    assert!(
        subjects.contains(&"confirmation of dispatch".to_string())
            && subjects.contains(&"confirmation of receipt".to_string()),
        "{subjects:?}"
    );
    // Abholbestätigung when the recipient "logs in".
    let o = h.sim_cli(&["retrieve", "--private-id", &pid]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let got = h
        .dovecot
        .wait_for_messages("recht@musterstadt.de", 3, Duration::from_secs(30));
    assert_eq!(got.len(), 3);
    let ab = got
        .iter()
        .find(|m| {
            header(m, "X-de-mail-message-type").as_deref() == Some("confirmation of retrieve")
        })
        .expect("Abholbestätigung");
    assert_eq!(header(ab, "X-de-mail-private").as_deref(), Some("yes"));
    // multipart/mixed with the urn:de-mail XML and a PDF, as the core reads it.
    let parsed = mail_parser::MessageParser::default().parse(ab).unwrap();
    let types: Vec<String> = parsed
        .parts
        .iter()
        .filter_map(|p| {
            mail_parser::MimeHeaders::content_type(p)
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
        })
        .collect();
    assert!(
        types.contains(&"application/xml".to_string())
            && types.contains(&"application/pdf".to_string()),
        "{types:?}"
    );
    let pdf = parsed
        .parts
        .iter()
        .find(|p| {
            mail_parser::MimeHeaders::content_type(*p).is_some_and(|c| c.subtype() == Some("pdf"))
        })
        .unwrap();
    assert!(pdf.contents().starts_with(b"%PDF-1.4"));

    let entries = h.archive_entries();
    let out = entries.iter().find(|e| e["direction"] == "out").unwrap();
    let receipts: Vec<_> = entries
        .iter()
        .filter(|e| e["direction"] == "receipt")
        .collect();
    assert_eq!(receipts.len(), 3);
    assert!(receipts
        .iter()
        .all(|e| e["link"] == out["seq"] && e["private_id"] == pid.as_str()));
    assert!(h.cli(&["archive", "verify"]).status.success());
}

#[test]
fn unknown_recipient_gets_a_linked_notification() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    h.submit(
        "peter.meier@musterstadt.de",
        &["unbekannt@buerger.de-mail.de"],
        &msg(
            "peter.meier@musterstadt.de",
            "unbekannt@buerger.de-mail.de",
            "[P] Antrag",
        ),
    )
    .unwrap();
    let got = h
        .dovecot
        .wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}\n{}", h.log(), h.sim_log());
    assert_eq!(
        header(&got[0], "X-de-mail-notification-type").as_deref(),
        Some("unknown-recipient")
    );
    let entries = h.archive_entries();
    let n = entries
        .iter()
        .find(|e| e["direction"] == "notification")
        .unwrap();
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
    let got =
        h.dovecot
            .wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", h.log());
    let m = &got[0];
    assert_eq!(header(m, "X-de-mail-private").as_deref(), Some("yes"));
    assert_eq!(header(m, "X-de-mail-auth-level").as_deref(), Some("high"));
    assert_eq!(
        header(m, "X-de-mail-message-type").as_deref(),
        Some("normal")
    );
    assert!(header(m, "X-de-mail-integrity").is_some_and(|v| v.contains("a=sha256")));
    assert_eq!(
        header(m, "X-de-mail-originator-provider").as_deref(),
        Some("dmda-sim.de-mail.de")
    );
    assert!(h.archive_entries().iter().any(|e| e["direction"] == "in"));
}

#[test]
fn de_mail_between_own_addresses_goes_round_the_provider() {
    let mut h = Harness::new();
    let _sim = h.start_sim();
    h.submit(
        "peter.meier@musterstadt.de",
        &["poststelle@musterstadt.de-mail.de"],
        &msg(
            "peter.meier@musterstadt.de",
            "poststelle@musterstadt.de-mail.de",
            "[P] intern",
        ),
    )
    .unwrap();
    let got =
        h.dovecot
            .wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}\n{}", h.log(), h.sim_log());
    assert_eq!(
        header(&got[0], "X-de-mail-sender").as_deref(),
        Some("peter.meier@musterstadt.de-mail.de")
    );
}
