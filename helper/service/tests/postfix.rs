//! helper → Postfix from Debian (STARTTLS required, certificate from a test CA) →
//! Dovecot (LMTP). A real MTA as the upstream, as a gateway built on Postfix would be.

mod common;

use common::*;
use demail_testkit::{Dovecot, Pki, Postfix};
use std::time::Duration;

#[test]
fn relay_to_postfix_over_starttls() {
    let tmp = demail_testkit::temp_dir();
    let pki = Pki::generate(tmp.path(), "pf");
    let dovecot = Dovecot::start(tmp.path()).expect("dovecot");
    let pf = Postfix::start_lmtp_relay(tmp.path(), &pki, Some(dovecot.lmtp_port), true).expect("postfix");
    let h = Helper::start(&gateway_config(pf.port, &pki.ca_cert, "starttls", ""), "");
    let token = h.pair();
    let r = h.post("/v1/messages", Some(&token), &demail_message("Über Postfix"));
    assert_eq!(r.status, 202);
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}\n{}", pf.log());
    assert!(v["gateway_reply"].as_str().unwrap().contains("queued as"), "Postfix's own reply: {v}");
    let got = dovecot.wait_for_messages("anna@buerger.de-mail.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", pf.log());
    let text = String::from_utf8_lossy(&got[0]).replace("\r\n", "\n").replace('\n', "\r\n");
    assert_eq!(header_of(&text, "X-de-mail-private"), Some("yes"));
    assert_eq!(header_of(&text, "X-de-mail-private-id"), v["private_id"].as_str());
    // Postfix logged the TLS session.
    assert!(pf.log().contains("TLS connection established"), "{}", pf.log());
}

#[test]
fn postfix_with_an_untrusted_certificate_is_refused() {
    let tmp = demail_testkit::temp_dir();
    let pki = Pki::generate(tmp.path(), "pf");
    let other = Pki::generate(tmp.path(), "other");
    let pf = Postfix::start_lmtp_relay(tmp.path(), &pki, None, true).expect("postfix");
    let h = Helper::start(&gateway_config(pf.port, &other.ca_cert, "starttls", ""), "");
    let token = h.pair();
    let r = h.post("/v1/messages", Some(&token), &demail_message("Falsche CA"));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["error"]["code"] == "relay.tls");
    assert_eq!(v["error"]["code"], "relay.tls", "{v}");
    assert_eq!(v["status"], "queued");
    assert_eq!(pf.queued(), 0, "nothing reached Postfix's queue");
}
