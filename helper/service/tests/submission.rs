//! Local SMTP submission (off by default): a mail program without the add-in submits
//! with subject tags; the helper turns them into headers with the core and relays.

mod common;

use base64::Engine;
use common::*;
use demail_testkit::Pki;
use std::time::Duration;

fn plain(user: &str, pw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

/// A whole submission with AUTH as `kfz`; reply 7 is the answer to the message.
fn submit(port: u16, token: &str, rcpt: &[&str], msg: &str) -> Vec<(u16, String)> {
    let mut steps = vec![
        "EHLO fachverfahren".to_string(),
        format!("AUTH PLAIN {}", plain("kfz", token)),
        "MAIL FROM:<peter.meier@musterstadt.de>".into(),
    ];
    steps.extend(rcpt.iter().map(|r| format!("RCPT TO:<{r}>")));
    steps.extend(["DATA".to_string(), msg.to_string(), "QUIT".into()]);
    smtp_dialogue(port, &steps.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn subject_tags_via_smtp_become_headers_and_are_relayed() {
    let tmp = demail_testkit::temp_dir();
    let pki = Pki::generate(tmp.path(), "gw");
    let sink = Sink::start(&pki, false, None, None);
    let machine = gateway_config(sink.port, &pki.ca_cert, "starttls", "")
        + "[submission]\nenabled = true\n[pairing]\nprovision = true\n";
    let h = Helper::start(&machine, "");
    let port = h.listening["submission_port"].as_u64().expect("submission port") as u16;
    let disc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.dir.path().join("run/demail/helper.json")).unwrap()).unwrap();
    assert_eq!(disc["submission_port"].as_u64(), Some(port as u64));
    let (rc, out, _) = h.cli(&["pair", "provision", "--client", "Fachverfahren KFZ"], None);
    assert_eq!(rc, 0);
    let token = out["token"].as_str().unwrap().to_string();

    // Without AUTH: refused.
    let r = smtp_dialogue(port, &["EHLO fachverfahren", "MAIL FROM:<peter.meier@musterstadt.de>"]);
    assert_eq!(r[2].0, 530, "{r:?}");
    // Wrong token: refused.
    let r = smtp_dialogue(port, &["EHLO fachverfahren", &format!("AUTH PLAIN {}", plain("kfz", "dmh1_falsch"))]);
    assert_eq!(r[2].0, 535, "{r:?}");

    let msg = "From: Peter Meier <peter.meier@musterstadt.de>\r\nTo: anna@buerger.de-mail.de\r\nSubject: [P, EB] Zulassungsbescheid\r\nMessage-ID: <kfz-1@musterstadt.de>\r\n\r\nIhr Fahrzeug ist zugelassen.\r\n.";
    let r = submit(port, &token, &["anna@buerger.de-mail.de", "akte@buerger.de-mail.de"], msg);
    assert_eq!(r[2].0, 235, "{r:?}");
    assert_eq!(r[7].0, 250, "{r:?}");
    let got = sink.wait_received(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", h.log_text());
    let text = String::from_utf8_lossy(&got[0].message).into_owned();
    assert_eq!(header_of(&text, "Subject"), Some("Zulassungsbescheid"));
    assert_eq!(header_of(&text, "X-de-mail-private"), Some("yes"));
    assert_eq!(header_of(&text, "X-de-mail-confirmation-of-receipt"), Some("yes"));
    assert!(header_of(&text, "X-de-mail-private-id").is_some());
    // The envelope decides the recipients (the second is a Bcc the header does not show).
    assert_eq!(got[0].rcpt_to, vec!["anna@buerger.de-mail.de", "akte@buerger.de-mail.de"]);
    // Visible in the outbox like an add-in's message.
    let list = h.get("/v1/outbox?status=sent", Some(&token)).json()["result"]["messages"].clone();
    assert_eq!(list[0]["message_id"], "kfz-1@musterstadt.de");

    // A blocked message gets a 550 with the core's code and both languages.
    let msg = "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de, x@example.org\r\nSubject: [P] Gemischt\r\n\r\nx\r\n.";
    let r = submit(port, &token, &["anna@buerger.de-mail.de", "x@example.org"], msg);
    assert_eq!(r[7].0, 550, "{r:?}");
    assert!(
        r[7].1.contains("submit.blocked")
            && r[7].1.contains("De-Mail-Empfänger")
            && r[7].1.contains("De-Mail recipients"),
        "{r:?}"
    );
}

#[test]
fn submission_is_off_by_default() {
    let h = Helper::start("[relay]\nenabled = false\n", "");
    assert!(h.listening["submission_port"].is_null());
}

/// A bare CR or a NUL in the body (the gateway refuses both) is refused at the helper's
/// SMTP listener too, before anything reaches the outbox.
#[test]
fn bare_cr_and_nul_via_smtp_are_refused() {
    let h = Helper::start("[relay]\nenabled = false\n[submission]\nenabled = true\n[pairing]\nprovision = true\n", "");
    let port = h.listening["submission_port"].as_u64().expect("submission port") as u16;
    let (rc, out, _) = h.cli(&["pair", "provision", "--client", "Fachverfahren"], None);
    assert_eq!(rc, 0);
    let token = out["token"].as_str().unwrap().to_string();
    let head = "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: [P] Bescheid\r\n\r\n";
    for (what, body, text) in [("bare CR", "Zeile 1\rZeile 2\r\n.", "CR ohne LF"), ("NUL", "Text\u{0}mehr\r\n.", "NUL")]
    {
        let r = submit(port, &token, &["anna@buerger.de-mail.de"], &format!("{head}{body}"));
        let after_data = r.iter().position(|x| x.0 == 354).map(|i| &r[i + 1]).expect("DATA accepted");
        assert_eq!(after_data.0, 554, "{what}: {r:?}");
        assert!(after_data.1.contains(text), "{what}: {r:?}");
    }
    let list = h.get("/v1/outbox", Some(&token)).json()["result"]["messages"].clone();
    assert_eq!(list, serde_json::json!([]), "nothing stored");
}
