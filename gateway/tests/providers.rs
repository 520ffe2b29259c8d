//! Several providers and provider secrets from the kernel keyring, with the real
//! gateway, provider simulator processes and Dovecot.

mod common;

use common::*;
use demail_testkit::{free_port, wait_until};
use std::process::Command;
use std::time::Duration;

fn msg(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@musterstadt.de>\r\n\r\nText\r\n", free_port()).into_bytes()
}

fn subjects(stored: &[Vec<u8>]) -> Vec<String> {
    stored.iter().filter_map(|m| header(m, "Subject")).collect()
}

#[test]
fn each_sender_domain_goes_to_its_own_provider() {
    // A second organisational unit with its own De-Mail domain at another provider.
    let policy = POLICY
        .replace(
            "domains = [{ demail = \"musterstadt.de-mail.de\", email = \"musterstadt.de\" }]",
            "domains = [{ demail = \"musterstadt.de-mail.de\", email = \"musterstadt.de\" }, { demail = \"jugendamt-musterstadt.de-mail.de\", email = \"jugendamt.musterstadt.de\" }]",
        )
        .replace(
            "[mapping]",
            "[[authorization.senders]]\naddress = \"leitung@jugendamt.musterstadt.de\"\noptions = [\"confirmation-of-dispatch\", \"private\"]\ncost_unit = \"KST-5100\"\n[mapping]",
        );
    assert!(policy.contains("jugendamt-musterstadt.de-mail.de") && policy.contains("KST-5100"));
    let port2 = free_port();
    let mut h = Harness::custom(&policy, |c| {
        // The first provider block, copied for the second domain and port.
        let start = c.find("[[providers]]").unwrap();
        let end = start + c[start..].find("[queue]").unwrap();
        let second = c[start..end]
            .replace("\"test-dmda\"", "\"zweiter-dmda\"")
            .replace(
                "\"musterstadt.de-mail.de\"",
                "\"jugendamt-musterstadt.de-mail.de\"",
            )
            .replace(
                &format!(
                    "port = {}",
                    c[start..end]
                        .split("port = ")
                        .nth(1)
                        .unwrap()
                        .lines()
                        .next()
                        .unwrap()
                ),
                &format!("port = {port2}"),
            );
        assert!(second.contains(&format!("port = {port2}")) && second.contains("zweiter-dmda"));
        format!("{c}\n{second}")
    });
    let _sim1 = h.start_sim();
    let _sim2 = h.start_sim_named("sim2", port2);
    let r = h.submit(
        "peter.meier@musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg(
            "peter.meier@musterstadt.de",
            "anna@buerger.de-mail.de",
            "Bescheid Stadt",
        ),
    );
    assert!(r.is_ok(), "{r:?}");
    let r = h.submit(
        "leitung@jugendamt.musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg(
            "leitung@jugendamt.musterstadt.de",
            "anna@buerger.de-mail.de",
            "Bescheid Jugendamt",
        ),
    );
    assert!(r.is_ok(), "{r:?}");
    let both = wait_until(Duration::from_secs(30), || {
        let (a, b) = (h.sim_stored(), h.stored_in("sim2-store"));
        (!a.is_empty() && !b.is_empty()).then_some((a, b))
    });
    both.unwrap_or_else(|| {
        panic!(
            "gateway:\n{}\nsim2:\n{}",
            h.log(),
            std::fs::read_to_string(h.path().join("sim2.log")).unwrap_or_default()
        )
    });
    // Both sent: nothing left to route, so the stores are final.
    assert!(
        wait_until(Duration::from_secs(20), || (h.queue_len() == 0)
            .then_some(()))
        .is_some(),
        "{}",
        h.log()
    );
    assert_eq!(
        subjects(&h.sim_stored()),
        vec!["Bescheid Stadt".to_string()]
    );
    let b = h.stored_in("sim2-store");
    assert_eq!(subjects(&b), vec!["Bescheid Jugendamt".to_string()]);
    // The sender De-Mail address is the mapped one of its own domain.
    let from = header(&b[0], "From").unwrap();
    assert!(from.contains("@jugendamt-musterstadt.de-mail.de"), "{from}");
}

/// Service name unique per test run, so parallel runs never share a keyring entry.
fn keyring_gateway(h: &Harness, service: &str, secret: &str) -> demail_testkit::ChildGuard {
    // A fresh session keyring holds the provider secret (added from stdin, never on a
    // command line) in the keyring crate's keyutils layout `keyring-rs:user@service`;
    // it dies with the session, so nothing outlives the gateway.
    let mut c = Command::new("keyctl");
    c.args(["session", "-", "sh", "-c"])
        .arg(r#"printf %s "$SEC" | keyctl padd user "keyring-rs:provider@$SVC" @s >/dev/null && unset SEC && exec "$GW" --config "$CFG" serve"#)
        .env("GW", env!("CARGO_BIN_EXE_demail-gateway"))
        .env("CFG", &h.config)
        .env("SVC", service)
        .env("SEC", secret)
        .env("TEST_GW_HELPER_PASSWORD", HELPER_PASSWORD)
        .env_remove("TEST_PROVIDER_SECRET");
    demail_testkit::start_gateway(c, h.out_port, h.in_port, &h.path().join("gateway.log"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn provider_secret_from_the_kernel_keyring_and_a_wrong_one_keeps_the_message_queued() {
    let service = format!("demail-gw-test-{}", free_port());
    let mut h = Harness::custom(POLICY, |c| {
        assert!(c.contains("secret_env = \"TEST_PROVIDER_SECRET\""));
        c.replace(
            "secret_env = \"TEST_PROVIDER_SECRET\"",
            &format!("secret_keyring = \"{service}/provider\""),
        )
    });
    let _sim = h.start_sim();
    // First with a wrong secret: the provider refuses the login, the message stays queued.
    h.gateway.take().unwrap().terminate(Duration::from_secs(3));
    h.gateway = Some(keyring_gateway(&h, &service, "falsches-geheimnis"));
    let r = h.submit(
        "peter.meier@musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg(
            "peter.meier@musterstadt.de",
            "anna@buerger.de-mail.de",
            "Bescheid Schlüsselbund",
        ),
    );
    assert!(r.is_ok(), "{r:?}");
    let refused = wait_until(Duration::from_secs(30), || {
        h.queue_entries().into_iter().find(|e| {
            e["state"]["last_error"]
                .as_str()
                .is_some_and(|s| s.contains("AUTH 535"))
        })
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", h.queue_entries(), h.log()));
    assert_eq!(refused["meta"]["provider"], "test-dmda", "{refused}");
    assert!(h.sim_stored().is_empty());
    assert!(!h.log().contains("falsches-geheimnis"));
    // The right secret in the keyring: the queued message goes out.
    h.gateway.take().unwrap().terminate(Duration::from_secs(3));
    h.gateway = Some(keyring_gateway(&h, &service, PROVIDER_SECRET));
    let stored = wait_until(Duration::from_secs(30), || {
        let s = h.sim_stored();
        (!s.is_empty()).then_some(s)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", h.queue_entries(), h.log()));
    assert_eq!(
        subjects(&stored),
        vec!["Bescheid Schlüsselbund".to_string()]
    );
    assert!(
        wait_until(Duration::from_secs(20), || (h.queue_len() == 0)
            .then_some(()))
        .is_some(),
        "{:?}",
        h.queue_entries()
    );
    assert!(!h.log().contains(PROVIDER_SECRET));
}
