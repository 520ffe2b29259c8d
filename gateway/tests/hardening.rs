//! Issue 16 against the real `demail-gateway` binary: one acceptance per Message-ID under
//! concurrency and after a failed spool write, the Sender and Reply-To rules, `confirm`
//! verdicts, connection limits, and SMTP smuggling into the queue and to the provider.

mod common;

use common::*;
use std::time::Duration;

const PETER: &str = "peter.meier@musterstadt.de";
const ANNA: &str = "anna@buerger.de-mail.de";

fn msg(from: &str, to: &str, subject: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: Peter Meier <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\n{extra}\r\nGuten Tag,\r\n.hier eine Zeile mit Punkt.\r\n",
        demail_testkit::free_port()
    )
    .into_bytes()
}

#[test]
fn sender_is_dropped_and_reply_to_kept_inside_the_organisation_by_default() {
    let mut h = Harness::new();
    h.start_provider();
    let extra = "Sender: Der Buergermeister <buergermeister@musterstadt.de>\r\nReply-To: Buergerbuero <buergerbuero@musterstadt.de>\r\n";
    let r = h.submit(PETER, &[ANNA], &msg(PETER, ANNA, "[P] Mit Antwortadresse", extra));
    assert!(r.is_ok(), "{r:?}");
    let got = h.wait_provider(1, 20);
    assert_eq!(header(&got[0].1, "Sender"), None, "a client's Sender does not pass");
    let reply_to = header(&got[0].1, "Reply-To").unwrap_or_default();
    assert!(reply_to.contains("<poststelle@musterstadt.de-mail.de>"), "mapped to its De-Mail address: {reply_to}");
    // Replies that would leave the organisation: refused, nothing queued.
    for (reply_to, code) in
        [("privat@gmail.com", "[reply_to.outside]"), ("sammel@anderswo.de-mail.de", "[reply_to.outside]")]
    {
        let e = h
            .submit(PETER, &[ANNA], &msg(PETER, ANNA, "[P] Umgeleitet", &format!("Reply-To: {reply_to}\r\n")))
            .unwrap_err();
        assert!(e.contains(&format!("5.7.1 {code}")) && e.contains("Antwortadresse"), "{reply_to}: {e}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.provider_msgs().len(), 1);
    assert_eq!(h.queue_len(), 0);
}

#[test]
fn a_rewritten_sender_must_be_one_the_account_may_send_as() {
    let policy = POLICY.replace("max_size = \"10 MiB\"", "max_size = \"10 MiB\"\nsender_header = \"rewrite\"");
    assert_ne!(policy, POLICY);
    let mut h = Harness::custom(&policy, |c| {
        c.replace(
            "password_env = \"TEST_GW_HELPER_PASSWORD\" }]",
            "password_env = \"TEST_GW_HELPER_PASSWORD\", senders = [\"peter.meier@musterstadt.de\", \"sekretariat@musterstadt.de\"] }]",
        )
    });
    h.start_provider();
    let ok = msg(PETER, ANNA, "[P] Im Auftrag", "Sender: Sekretariat <sekretariat@musterstadt.de>\r\n");
    assert!(h.submit(PETER, &[ANNA], &ok).is_ok());
    let got = h.wait_provider(1, 20);
    let sender = header(&got[0].1, "Sender").unwrap_or_default();
    assert!(sender.contains("<sekretariat@musterstadt.de-mail.de>"), "{sender}");
    let bad = msg(PETER, ANNA, "[P] Im Auftrag", "Sender: recht@musterstadt.de\r\n");
    let e = h.submit(PETER, &[ANNA], &bad).unwrap_err();
    assert!(e.contains("5.7.1 [gateway.sender_field_not_bound]"), "{e}");
    let outside = msg(PETER, ANNA, "[P] Im Auftrag", "Sender: chef@example.org\r\n");
    assert!(h.submit(PETER, &[ANNA], &outside).unwrap_err().contains("[sender_field.outside]"));
}

#[test]
fn confirm_verdicts_pass_only_confirmed() {
    let policy =
        POLICY.replace("mixed_addressing = \"reject\"", "mixed_addressing = \"warn\"\nrequire_marking = \"confirm\"");
    let mut h = Harness::custom(&policy, |c| {
        c.replace(
            "password_env = \"TEST_GW_HELPER_PASSWORD\" }]",
            "password_env = \"TEST_GW_HELPER_PASSWORD\" }, { name = \"helfer-app\", password_env = \"TEST_GW_HELPER_PASSWORD\", confirmed_by_client = true }]",
        )
    });
    h.start_provider();
    let kollegin = "kollegin@musterstadt.de";
    let both = [ANNA, kollegin];
    // A client without the add-in cannot be asked: refused, saying how to send instead.
    let e = h.submit(PETER, &both, &msg(PETER, ANNA, "[P] Gemischt", "")).unwrap_err();
    for want in ["5.7.1 [confirm.missing]", "[mixed.confirm]", "getrennt", "separately"] {
        assert!(e.contains(want), "{want}: {e}");
    }
    let e = h.submit(PETER, &[ANNA], &msg(PETER, ANNA, "Ohne Kennzeichen", "")).unwrap_err();
    for want in ["[confirm.missing]", "[demail.not_marked]", "[De-Mail]"] {
        assert!(e.contains(want), "{want}: {e}");
    }
    // The subject-tag way to confirm the De-Mail.
    assert!(h.submit(PETER, &[ANNA], &msg(PETER, ANNA, "[De-Mail] Mit Kennzeichen", "")).is_ok());
    // What a client states as confirmed passes; the statement itself does not.
    let stated = msg(PETER, ANNA, "[P] Bestaetigt", "X-Demail-Confirmed: mixed.confirm\r\n");
    assert!(h.submit(PETER, &both, &stated).is_ok());
    // An account whose client asks (the helper's) counts as confirmed.
    assert!(h.submit_as("helfer-app", PETER, &both, &msg(PETER, ANNA, "[P] Vom Helfer", "")).is_ok());
    let got = h.wait_provider(3, 20);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.provider_msgs().len(), 3);
    assert!(got.iter().all(|(_, m)| header(m, "X-Demail-Confirmed").is_none()));
    assert_eq!(h.dovecot.wait_for_messages(kollegin, 2, Duration::from_secs(20)).len(), 2);
    assert!(h.log().contains("confirm verdict without a confirmation; refused"));
}
