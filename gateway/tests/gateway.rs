//! The real `demail-gateway` binary between lettre/swaks, a TLS provider sink and Dovecot LMTP.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn subject_tags_become_headers_and_sender_is_mapped() {
    let mut h = Harness::new();
    h.start_provider();
    let r = h.submit(
        "peter.meier@musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "[P, VB] Frage zur KFZ-Zulassung", ""),
    );
    assert!(r.as_ref().is_ok_and(|s| s.starts_with("250")), "{r:?}\n{}", h.log());
    let got = h.wait_provider(1, 20);
    let (env, raw) = &got[0];
    assert_eq!(env.mail_from, "peter.meier@musterstadt.de-mail.de");
    assert_eq!(env.rcpt_to, ["anna@buerger.de-mail.de"]);
    assert_eq!(env.session.auth_user.as_deref(), Some(PROVIDER_USER));
    assert_eq!(header(raw, "Subject").as_deref(), Some("Frage zur KFZ-Zulassung"));
    assert_eq!(header(raw, "X-de-mail-private").as_deref(), Some("yes"));
    assert_eq!(header(raw, "X-de-mail-confirmation-of-dispatch").as_deref(), Some("yes"));
    assert!(header(raw, "X-de-mail-private-id").is_some_and(|v| v.starts_with("DM-")));
    assert!(header(raw, "From").is_some_and(|v| v.contains("<peter.meier@musterstadt.de-mail.de>")));
    // The body is untouched (lettre adds one CRLF of its own before the final dot).
    assert!(String::from_utf8_lossy(raw).ends_with("\r\n\r\nGuten Tag,\r\n.hier eine Zeile mit Punkt.\r\n\r\n"));

    // Archive and billing saw it.
    let v = h.cli(&["archive", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let b = h.cli(&["billing", "report", "--from", "2000-01-01", "--to", "2999-12-31"]);
    let csv = String::from_utf8_lossy(&b.stdout);
    assert!(csv.contains("\"KST-3210\",1,1,0,1,0,0,1,0"), "{csv}");
    let j = h.cli(&["billing", "report", "--from", "2000-01-01", "--to", "2999-12-31", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["cost_units"][0]["private"], 1);
}

#[test]
fn swaks_submits_through_the_gateway() {
    assert!(demail_testkit::have("swaks"), "swaks missing: scripts/setup test");
    let mut h = Harness::new();
    h.start_provider();
    let out = std::process::Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &h.out_port.to_string(),
            "--tls",
            "--tls-verify",
            "--tls-sni",
            "localhost",
        ])
        .arg("--tls-ca-path")
        .arg(&h.gw_pki.ca_cert)
        .args(["--auth", "LOGIN", "--auth-user", HELPER_USER, "--auth-password", HELPER_PASSWORD])
        .args(["--from", "peter.meier@musterstadt.de", "--to", "amt@stadt.de-mail.de"])
        .args([
            "--header",
            "From: peter.meier@musterstadt.de",
            "--header",
            "Subject: [VB] Antrag per swaks",
            "--body",
            "Text",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let got = h.wait_provider(1, 20);
    assert_eq!(header(&got[0].1, "Subject").as_deref(), Some("Antrag per swaks"));
    assert_eq!(header(&got[0].1, "X-de-mail-confirmation-of-dispatch").as_deref(), Some("yes"));
}

#[test]
fn mixed_addressing_and_unauthorised_senders_get_5xx() {
    let mut h = Harness::new();
    h.start_provider();
    // (From, envelope recipients, subject, texts the refusal must contain)
    let cases: [(&str, &[&str], &str, &[&str]); 4] = [
        (
            "peter.meier@musterstadt.de",
            &["anna@buerger.de-mail.de", "x@example.org"],
            "Antrag",
            &["Permanent", "5.7.1 [mixed.rejected]", "De-Mail-Empfänger", "This message has"],
        ),
        ("eve@musterstadt.de", &["anna@buerger.de-mail.de"], "Antrag", &["Permanent", "sender.not_authorized"]),
        // Peter may not order an Abholbestätigung.
        (
            "peter.meier@musterstadt.de",
            &["anna@buerger.de-mail.de"],
            "[AB] Bescheid",
            &["sender.option_not_authorized"],
        ),
        // Unknown tag: refused, nothing silently dropped.
        ("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], "[P, XYZ] Bescheid", &["subject.unknown_tag"]),
    ];
    for (from, to, subject, want) in cases {
        let e = h.submit(from, to, &msg(from, &to.join(", "), subject, "")).unwrap_err();
        for w in want {
            assert!(e.contains(w), "{subject}: missing {w:?} in {e}");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(h.provider_msgs().is_empty());
    assert_eq!(h.queue_len(), 0);
}

#[test]
fn inbound_goes_to_mapped_mailboxes_and_catch_all_with_headers_intact() {
    let h = Harness::new();
    let raw = b"From: buerger@web.de-mail.de\r\nTo: peter.meier@musterstadt.de-mail.de\r\nSubject: Widerspruch\r\nX-de-mail-message-type: normal\r\nX-de-mail-private: yes\r\nX-de-mail-auth-level: high\r\nX-de-mail-message-id: <abc@provider>\r\n\r\nText\r\n";
    let r = h.inject(
        "buerger@web.de-mail.de",
        &["peter.meier@musterstadt.de-mail.de", "poststelle@musterstadt.de-mail.de", "wer@anderswo.de-mail.de"],
        raw,
    );
    assert_eq!(r.as_deref(), Ok("250"), "{}", h.log());
    let peter = h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(20));
    let post = h.dovecot.wait_for_messages("buergerbuero@musterstadt.de", 1, Duration::from_secs(20));
    let sammel = h.dovecot.wait_for_messages("sammelpostfach@musterstadt.de", 1, Duration::from_secs(20));
    assert_eq!((peter.len(), post.len(), sammel.len()), (1, 1, 1), "{}", h.log());
    let got = String::from_utf8_lossy(&sammel[0]);
    // Dovecot adds its trace headers on top and stores LF line ends; the rest is
    // unchanged (plus the line end lettre adds before the final dot).
    let want = format!("{}\n", std::str::from_utf8(raw).unwrap().replace("\r\n", "\n"));
    assert!(got.replace("\r\n", "\n").ends_with(&want), "{got}");
    // Dovecot has it before the gateway removes its spool copy: wait for that, not race it.
    assert!(
        demail_testkit::wait_until(Duration::from_secs(5), || (h.queue_len() == 0).then_some(())).is_some(),
        "delivered messages leave the queue"
    );
}

#[test]
fn inbound_needs_the_provider_certificate() {
    let h = Harness::new();
    // A client certificate from another CA is refused during the handshake.
    let other = demail_testkit::Pki::generate(h.path(), "stranger");
    let t = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(h.in_port)
        .tls(lettre::transport::smtp::client::Tls::Wrapper(
            lettre::transport::smtp::client::TlsParameters::builder("localhost".into())
                .certificate_store(lettre::transport::smtp::client::CertificateStore::None)
                .add_root_certificate(
                    lettre::transport::smtp::client::Certificate::from_pem(h.gw_pki.ca_pem.as_bytes()).unwrap(),
                )
                .identify_with(identity(&other.client_cert, &other.client_key))
                .build_rustls()
                .unwrap(),
        ))
        .build();
    let env = lettre::address::Envelope::new(
        Some("a@b.de-mail.de".parse().unwrap()),
        vec!["x@musterstadt.de-mail.de".parse().unwrap()],
    )
    .unwrap();
    use lettre::AsyncTransport;
    assert!(h.rt.block_on(t.send_raw(&env, b"Subject: x\r\n\r\nx\r\n")).is_err());
}

#[test]
fn provider_outage_then_delivery_from_the_queue() {
    let mut h = Harness::new();
    let r = h.submit(
        "peter.meier@musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "[P] Ausfall", ""),
    );
    assert!(r.is_ok(), "{r:?}");
    // Nobody listens at the provider: the message waits with its error.
    let waiting = demail_testkit::wait_until(Duration::from_secs(10), || {
        let out = h.cli(&["queue", "list"]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        s.contains("last_error").then_some(s)
    })
    .expect("queued with an error");
    assert!(!waiting.contains("\"attempts\":0"), "{waiting}");
    h.start_provider();
    let got = h.wait_provider(1, 20);
    assert_eq!(header(&got[0].1, "Subject").as_deref(), Some("Ausfall"));
    assert!(demail_testkit::wait_until(Duration::from_secs(5), || (h.queue_len() == 0).then_some(())).is_some());
}

/// `n` De-Mails from Peter Meier to Anna, subjects "<subject> 0" …; their Message-IDs.
fn submit_numbered(h: &Harness, n: usize, subject: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let m = msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", &format!("{subject} {i}"), "");
            h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m).unwrap();
            header(&m, "Message-ID").unwrap()
        })
        .collect()
}

#[test]
fn kill_9_and_restart_keep_the_queue() {
    let mut h = Harness::new();
    let mut ids = submit_numbered(&h, 5, "[VB] Nr");
    h.gateway.as_mut().unwrap().kill();
    assert_eq!(h.queue_len(), 5);
    h.start_gateway();
    h.start_provider();
    let got = h.wait_provider(5, 30);
    std::thread::sleep(Duration::from_millis(500));
    let mut seen: Vec<String> = h.provider_msgs().iter().map(|(_, r)| header(r, "Message-ID").unwrap()).collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "each exactly once");
    assert_eq!(got.len(), 5);
}

#[test]
fn a_crash_before_the_head_write_is_healed_at_the_next_start() {
    let mut h = Harness::new();
    submit_numbered(&h, 2, "Nr");
    h.gateway.as_mut().unwrap().kill();
    let db = h.path().join("archive/archive.sqlite");
    let head = db.with_extension("sqlite.head");
    let c = rusqlite::Connection::open(&db).unwrap();
    let hash =
        |seq: i64| -> String { c.query_row("SELECT hash FROM entries WHERE seq = ?1", [seq], |r| r.get(0)).unwrap() };
    let (first, second) = (hash(1), hash(2));
    // As if the gateway died between committing entry 2 and writing its head.
    std::fs::write(&head, format!("1 {first}\n")).unwrap();
    let v = h.cli(&["archive", "verify"]);
    assert!(v.status.success(), "a lagging head that names its entry is no finding: {v:?}");
    h.start_gateway();
    assert_eq!(std::fs::read_to_string(&head).unwrap(), format!("2 {second}\n"));
    assert!(h.log().contains("archive head file was behind"), "{}", h.log());
    // A head that names no entry is not healed: it stays a finding.
    h.gateway.as_mut().unwrap().kill();
    std::fs::write(&head, format!("1 {second}\n")).unwrap();
    h.start_gateway();
    assert_eq!(std::fs::read_to_string(&head).unwrap(), format!("1 {second}\n"));
    let v = h.cli(&["archive", "verify"]);
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stdout).contains("archive.head_mismatch"));
}

#[test]
fn permanent_failure_is_bounced_to_the_sender_in_german_and_english() {
    let mut h = Harness::new();
    h.start_provider();
    let r = h.submit(
        "peter.meier@musterstadt.de",
        &["unbekannt@buerger.de-mail.de"],
        &msg("peter.meier@musterstadt.de", "unbekannt@buerger.de-mail.de", "Antrag", ""),
    );
    assert!(r.is_ok(), "{r:?}");
    let dsn = h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(20));
    assert_eq!(dsn.len(), 1, "{}", h.log());
    let text = String::from_utf8_lossy(&dsn[0]);
    assert!(text.contains("Unzustellbar / Undeliverable: Antrag"), "{text}");
    assert!(text.contains("multipart/report"));
    assert!(demail_testkit::wait_until(Duration::from_secs(5), || (h.queue_len() == 0).then_some(())).is_some());
}

#[test]
fn archive_links_receipts_and_verify_catches_tampering() {
    let mut h = Harness::new();
    h.start_provider();
    let m = msg(
        "peter.meier@musterstadt.de",
        "anna@buerger.de-mail.de",
        "Bescheid",
        "X-de-mail-private-id: AZ-2026-0815\r\nX-de-mail-confirmation-of-dispatch: yes\r\n",
    );
    h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m).unwrap();
    h.wait_provider(1, 20);
    let receipt = b"From: Versandbestaetigung@provider.de-mail.de\r\nTo: peter.meier@musterstadt.de-mail.de\r\nSubject: *Versandbest\xc3\xa4tigung* Bescheid\r\nX-de-mail-message-type: confirmation of dispatch\r\nX-de-mail-private-id: AZ-2026-0815\r\n\r\nBest\xc3\xa4tigung\r\n";
    assert_eq!(
        h.inject("versandbestaetigung@provider.de-mail.de", &["peter.meier@musterstadt.de-mail.de"], receipt)
            .as_deref(),
        Ok("250")
    );
    h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(20));

    let out = h.path().join("export");
    let e = h.cli(&["archive", "export", "--out", out.to_str().unwrap()]);
    assert!(e.status.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let entries = manifest["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["direction"], "out");
    assert_eq!(entries[1]["direction"], "receipt");
    assert_eq!(entries[1]["link"], entries[0]["seq"]);
    assert!(out.join(entries[0]["file"].as_str().unwrap()).is_file());

    assert!(h.cli(&["archive", "verify"]).status.success());
    let db = h.path().join("archive/archive.sqlite");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "DROP TRIGGER entries_no_update; UPDATE entries SET recipients = 'x@evil.de-mail.de' WHERE seq = 1;",
    )
    .unwrap();
    drop(c);
    let v = h.cli(&["archive", "verify"]);
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stdout).contains("archive.entry_altered"));
}

#[test]
fn config_check_names_file_line_and_field() {
    let h = Harness::new();
    assert!(h.cli(&["config", "check"]).status.success());
    let bad = h.path().join("bad.toml");
    let src = std::fs::read_to_string(&h.config).unwrap().replace("tls = \"starttls\"", "tls = \"sometimes\"");
    std::fs::write(&bad, src).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demail-gateway"))
        .arg("--config")
        .arg(&bad)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("Zeile") && err.contains("line") && err.contains("tls"), "{err}");
}

#[test]
fn postfix_relays_through_the_gateway() {
    // Postfix as the organisation's mail server, a connector: STARTTLS verified against our
    // CA, its client certificate pinned in the gateway's configuration, from 127.0.0.1.
    let pf_dir = demail_testkit::temp_dir();
    let pf_pki = demail_testkit::Pki::generate(pf_dir.path(), "postfix");
    let fp = {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_file(&pf_pki.client_cert).unwrap();
        demail_smtp::tls::fingerprint(der.as_ref())
    };
    let hex: Vec<String> = fp.iter().map(|b| format!("{b:02x}")).collect();
    let connector = format!(
        "\n[[outbound.connectors]]\nname = \"postfix\"\nsources = [\"127.0.0.1/32\"]\ncertificate_sha256 = [\"{}\"]\n",
        hex.join(":")
    );
    let mut h = Harness::custom(POLICY, |c| c + &connector);
    h.start_provider();
    // The person Postfix authenticated is in the directory, with the De-Mail right.
    h.directory.person("peter.meier@musterstadt.de");
    let main_cf = format!(
        "relayhost = [localhost]:{}\nsmtp_host_lookup = native\nsmtp_tls_security_level = secure\nsmtp_tls_secure_cert_match = nexthop\n\
         smtp_tls_CAfile = {}\nsmtp_tls_cert_file = {}\nsmtp_tls_key_file = {}\n",
        h.out_port,
        h.gw_pki.ca_cert.display(),
        pf_pki.client_cert.display(),
        pf_pki.client_key.display()
    );
    let pf = demail_testkit::Postfix::start(h.path(), &main_cf).expect("postfix");
    let out = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &pf.port.to_string()])
        .args(["--from", "peter.meier@musterstadt.de", "--to", "anna@buerger.de-mail.de"])
        .args([
            "--header",
            "From: Peter Meier <peter.meier@musterstadt.de>",
            "--header",
            "Subject: [P] Über Postfix",
            "--body",
            "Text",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let got = demail_testkit::wait_until(Duration::from_secs(30), || {
        let m = h.provider_msgs();
        (!m.is_empty()).then_some(m)
    })
    .unwrap_or_else(|| panic!("nothing relayed\npostfix:\n{}\ngateway:\n{}", pf.log(), h.log()));
    assert_eq!(got[0].0.mail_from, "peter.meier@musterstadt.de-mail.de");
    assert_eq!(header(&got[0].1, "X-de-mail-private").as_deref(), Some("yes"));
    assert!(String::from_utf8_lossy(&got[0].1).contains("postfix-test.localdomain"));
    let out: Vec<_> = h.archive_entries().into_iter().filter(|e| e["direction"] == "out").collect();
    assert_eq!(out[0]["actor"], "connector:postfix/peter.meier@musterstadt.de", "{out:?}");
    assert!(h.log().contains("signed in by client certificate"), "{}", h.log());
}

#[test]
fn allow_internal_sends_a_copy_to_internal_recipients_only() {
    let mut h =
        Harness::with_policy(&POLICY.replace("mixed_addressing = \"reject\"", "mixed_addressing = \"allow-internal\""));
    h.start_provider();
    let e = h
        .submit(
            "peter.meier@musterstadt.de",
            &["anna@buerger.de-mail.de", "x@example.org"],
            &msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "Antrag", ""),
        )
        .unwrap_err();
    assert!(e.contains("mixed.external"), "{e}");
    let r = h.submit(
        "peter.meier@musterstadt.de",
        &["anna@buerger.de-mail.de", "kollegin@musterstadt.de"],
        &msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de, kollegin@musterstadt.de", "[VB] Antrag", ""),
    );
    assert!(r.is_ok(), "{r:?}");
    let got = h.wait_provider(1, 20);
    assert_eq!(got[0].0.rcpt_to, ["anna@buerger.de-mail.de"]);
    let copy = h.dovecot.wait_for_messages("kollegin@musterstadt.de", 1, Duration::from_secs(20));
    assert_eq!(copy.len(), 1);
    assert_eq!(header(&copy[0], "X-de-mail-private-id"), header(&got[0].1, "X-de-mail-private-id"));
}

#[test]
fn hostile_subject_and_size_limits() {
    let mut h = Harness::new();
    h.start_provider();
    // An encoded word that decodes to a line break plus a header must not become a header.
    let evil = "=?utf-8?b?QW50cmFnDQpYLWRlLW1haWwtYXV0aG9yaXRhdGl2ZTogeWVz?="; // "Antrag\r\nX-de-mail-authoritative: yes"
    let r = h.submit(
        "peter.meier@musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", &format!("[P] {evil}"), ""),
    );
    assert!(r.is_ok(), "{r:?}");
    let got = h.wait_provider(1, 20);
    let text = String::from_utf8_lossy(&got[0].1);
    assert!(!text.lines().any(|l| l.to_ascii_lowercase().starts_with("x-de-mail-authoritative")), "{text}");
    assert!(header(&got[0].1, "X-de-mail-private").is_some());

    // Over the policy's De-Mail limit (10 MiB) but under the listener's (12 MB): refused by the core rule.
    let big = "x".repeat(998) + "\r\n";
    let body = big.repeat(10_700);
    let m = msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "Gross", &format!("\r\n{body}"));
    let e = h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m).unwrap_err();
    assert!(e.contains("size.exceeded"), "{}", &e[..e.len().min(400)]);
    // Over the listener's limit: 552 from the SMTP layer, and the gateway keeps running.
    let m = msg(
        "peter.meier@musterstadt.de",
        "anna@buerger.de-mail.de",
        "Zu gross",
        &format!("\r\n{}", big.repeat(12_500)),
    );
    let e = h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m).unwrap_err();
    assert!(e.contains("5.3.4"), "{}", &e[..e.len().min(400)]);
    let r = h.submit(
        "peter.meier@musterstadt.de",
        &["anna@buerger.de-mail.de"],
        &msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "[P] noch da", ""),
    );
    assert!(r.is_ok(), "{r:?}");
    h.wait_provider(2, 20);
}

#[test]
fn queue_commands_retry_and_drop() {
    let h = Harness::new();
    for i in 0..2 {
        h.submit(
            "peter.meier@musterstadt.de",
            &["anna@buerger.de-mail.de"],
            &msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", &format!("[P] q{i}"), ""),
        )
        .unwrap();
    }
    let list = String::from_utf8(h.cli(&["queue", "list"]).stdout).unwrap();
    let ids: Vec<String> = list
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["meta"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(h.cli(&["queue", "retry", &ids[0]]).status.success());
    assert!(h.cli(&["queue", "drop", &ids[1]]).status.success());
    assert_eq!(h.cli(&["queue", "drop", "ffff-0000"]).status.code(), Some(2));
    assert_eq!(h.queue_len(), 1);
}

#[test]
fn a_retried_submission_is_not_sent_twice() {
    let mut h = Harness::new();
    h.start_provider();
    let m = msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "[P] Einmal", "");
    let a = h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m).unwrap();
    let b = h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m).unwrap();
    assert_eq!(a, b, "same queue id in both replies");
    h.wait_provider(1, 20);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(h.provider_msgs().len(), 1);
}

#[test]
fn without_a_catch_all_unmapped_recipients_are_refused_not_dropped() {
    let h = Harness::with_policy(&POLICY.replace("catch_all = \"sammelpostfach@musterstadt.de\"\n", ""));
    let raw = b"From: buerger@web.de-mail.de\r\nSubject: x\r\nX-de-mail-message-type: normal\r\n\r\nText\r\n";
    // The provider learns at once that this address cannot be delivered here.
    let e = h.inject("buerger@web.de-mail.de", &["wer@anderswo.de-mail.de"], raw).unwrap_err();
    assert!(e.contains("Recipient unknown and no catch-all"), "{e}");
    // A mapped recipient still works.
    assert_eq!(h.inject("buerger@web.de-mail.de", &["peter.meier@musterstadt.de-mail.de"], raw).as_deref(), Ok("250"));
    assert_eq!(h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(20)).len(), 1);
}

#[test]
fn an_application_account_sends_only_as_its_own_senders() {
    let mut h = Harness::new();
    h.start_provider();
    let to = "anna@buerger.de-mail.de";
    // (From, allowed?) — the account's own senders, an authorised sender of someone else.
    for (from, ok) in [("peter.meier@musterstadt.de", true), ("recht@musterstadt.de", false)] {
        let r = h.submit_as(HELPER_USER, from, &[to], &msg(from, to, "Antrag", ""));
        match (ok, r) {
            (true, Ok(_)) => {}
            (false, Err(e)) => assert!(
                e.contains("5.7.1 [gateway.sender_not_bound]")
                    && e.contains("darf nicht als")
                    && e.contains("may not send as"),
                "{from}: {e}"
            ),
            (ok, r) => panic!("{from}: expected allowed={ok}, got {r:?}"),
        }
    }
    // The envelope does not help: the header From counts.
    let e = h
        .submit_as(HELPER_USER, "peter.meier@musterstadt.de", &[to], &msg("recht@musterstadt.de", to, "Antrag", ""))
        .unwrap_err();
    assert!(e.contains("gateway.sender_not_bound"), "{e}");
    assert_eq!(h.wait_provider(1, 20).len(), 1);
    // The archive names who sent, and how.
    let out: Vec<_> = h.archive_entries().into_iter().filter(|e| e["direction"] == "out").collect();
    assert_eq!(out[0]["actor"], "account:fachverfahren", "{out:?}");
}

/// An account that could send for several or all senders is a password shared between
/// desks; a listener without sign-in would not know who sends. Neither starts.
#[test]
fn shared_accounts_and_unauthenticated_listeners_are_refused_at_start() {
    let mut h = Harness::new();
    h.gateway.take().unwrap().terminate(Duration::from_secs(3));
    let good = std::fs::read_to_string(&h.config).unwrap();
    let own = "senders = [\"peter.meier@musterstadt.de\", \"buergermeister@musterstadt.de\"]";
    assert!(good.contains(own));
    let cases = [
        (good.replace(own, "senders = []"), "identity.shared_account"),
        (good.replace(own, "senders = [\"*@musterstadt.de\"]"), "identity.shared_account"),
        (
            good.replace(own, "senders = [\"peter.meier@musterstadt.de\"], groups = [\"Bürgerbüro\"]"),
            "identity.shared_account",
        ),
        (good.replace("require_auth = true", "require_auth = false"), "identity.unauthenticated_listener"),
        (
            good.replace("allowed_clients = [\"127.0.0.0/8\"]", "allowed_clients = [\"10.0.0.0/8\"]")
                .replace("tls = \"starttls\"\nrequire_auth", "tls = \"none\"\nrequire_auth"),
            "identity.password_without_tls",
        ),
    ];
    for (cfg, code) in cases {
        assert_ne!(cfg, good, "{code}: edit did not apply");
        std::fs::write(&h.config, &cfg).unwrap();
        let check = h.cli(&["config", "check"]);
        let err = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(1), "{code}: {err}");
        assert!(err.contains(code) && err.contains("gateway.toml"), "{code}: {err}");
        let serve = Command::new("timeout")
            .args(["20", env!("CARGO_BIN_EXE_demail-gateway"), "--config"])
            .arg(&h.config)
            .arg("serve")
            .env("TEST_GW_HELPER_PASSWORD", HELPER_PASSWORD)
            .env("TEST_GW_DIRECTORY_PASSWORD", demail_testkit::directory::BIND_PASSWORD)
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&serve.stderr);
        assert_eq!(serve.status.code(), Some(2), "{code}: {err}");
        assert!(err.contains(code), "{code}: {err}");
    }
    // The good configuration still starts.
    std::fs::write(&h.config, &good).unwrap();
    h.start_gateway();
}

fn plain_harness() -> Harness {
    common::plain_harness(POLICY)
}

fn transaction(i: usize) -> String {
    let m = String::from_utf8(msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", &format!("Stapel {i}"), ""))
        .unwrap();
    format!("MAIL FROM:<peter.meier@musterstadt.de>\r\nRCPT TO:<anna@buerger.de-mail.de>\r\nDATA\r\n{m}.\r\n")
}

#[test]
fn pipelining_abuse_neither_crashes_nor_loses_a_message() {
    let mut h = plain_harness();
    h.start_provider();
    // Everything in one burst without waiting: two transactions, a flood of junk and
    // commands out of order, recipients past the limit, then a third transaction.
    let mut burst = String::from("EHLO flood\r\n");
    burst += &transaction(1);
    burst += &transaction(2);
    burst += &"NOOP\r\nDATA\r\nRCPT TO:<x@y.de-mail.de>\r\nBDAT 5\r\nhello\r\n".repeat(300);
    burst += "MAIL FROM:<peter.meier@musterstadt.de>\r\n";
    burst += &"RCPT TO:<anna@buerger.de-mail.de>\r\n".repeat(150);
    burst += "RSET\r\n";
    burst += &transaction(3);
    burst += "QUIT\r\n";
    let replies = raw_session(h.out_port, burst.as_bytes(), Duration::from_secs(20));
    assert!(h.gateway.as_mut().unwrap().try_wait().is_none(), "gateway died: {}", h.log());
    // The junk ends the session (error limit, 421); the two transactions before it stand.
    assert!(replies.contains("421"), "{}", &replies[..replies.len().min(3000)]);
    let accepted = replies.matches("queued as").count();
    assert!(accepted >= 2, "accepted {accepted}:\n{}", &replies[..replies.len().min(3000)]);
    // Every accepted message reaches the provider, each exactly once.
    let got = h.wait_provider(accepted, 30);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(h.provider_msgs().len(), accepted);
    let mut ids: Vec<String> = got.iter().map(|(_, m)| header(m, "Message-ID").unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), accepted);
    // A line far over the limit: refused, and the next client is served.
    let long = format!("EHLO x\r\nMAIL FROM:<{}@a.de>\r\n", "a".repeat(200_000));
    let _ = raw_session(h.out_port, long.as_bytes(), Duration::from_secs(5));
    let ok =
        raw_session(h.out_port, format!("EHLO x\r\n{}QUIT\r\n", transaction(4)).as_bytes(), Duration::from_secs(10));
    assert!(ok.contains("queued as"), "{ok}");
    h.wait_provider(accepted + 1, 30);
}

#[test]
fn a_slow_client_times_out_and_what_it_sent_before_is_kept() {
    use std::io::{Read, Write};
    let mut h = plain_harness();
    h.start_provider();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", h.out_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(format!("EHLO slow\r\n{}{}", auth_plain(), transaction(1)).as_bytes()).unwrap();
    // Then it trickles half a command and goes quiet (command_timeout_secs = 2).
    s.write_all(b"MAIL FR").unwrap();
    let t = std::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    assert!(t.elapsed() < Duration::from_secs(12), "not disconnected in time: {text}");
    assert!(text.contains("queued as"), "{text}");
    assert!(text.contains("421"), "no timeout reply: {text}");
    // The message accepted before the stall is delivered; the gateway serves on.
    h.wait_provider(1, 20);
    assert!(h.gateway.as_mut().unwrap().try_wait().is_none());
    let ok =
        raw_session(h.out_port, format!("EHLO x\r\n{}QUIT\r\n", transaction(2)).as_bytes(), Duration::from_secs(10));
    assert!(ok.contains("queued as"), "{ok}");
    h.wait_provider(2, 20);
}

#[test]
fn a_de_mail_the_mail_server_refuses_reaches_the_sammelpostfach_unchanged() {
    let mut h = Harness::new();
    let pf = refusing_mail_server(&h);
    deliver_through(&mut h, &pf, "collect_after_secs = 4");
    let raw = b"From: buerger@web.de-mail.de\r\nTo: peter.meier@musterstadt.de-mail.de, unbekannt@musterstadt.de-mail.de, voll@musterstadt.de-mail.de\r\nSubject: Widerspruch gegen Bescheid\r\nMessage-ID: <w1@web.de-mail.de>\r\nX-de-mail-message-type: normal\r\nX-de-mail-auth-level: high\r\n\r\nText mit Umlauten: \xc3\xa4\xc3\xb6\xc3\xbc\r\n";
    let rcpts =
        ["peter.meier@musterstadt.de-mail.de", "unbekannt@musterstadt.de-mail.de", "voll@musterstadt.de-mail.de"];
    assert_eq!(h.inject("buerger@web.de-mail.de", &rcpts, raw).as_deref(), Ok("250"), "{}", h.log());
    let peter = h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(peter.len(), 1, "the accepted recipient gets it: {}\n{}", h.log(), pf.log());
    // The refused one goes to the Sammelpostfach at once; the full one once it has been
    // refused for longer than collect_after_secs. Nothing waits in the queue after that.
    let sammel = h.dovecot.wait_for_messages("sammelpostfach@musterstadt.de", 2, Duration::from_secs(60));
    assert_eq!(sammel.len(), 2, "{}\n{}", h.log(), pf.log());
    let parsed: Vec<_> = sammel.iter().map(|m| mail_parser::MessageParser::default().parse(m).unwrap()).collect();
    let for_whom: Vec<String> =
        parsed.iter().map(|m| m.header_raw("X-Original-To").unwrap_or_default().trim().to_string()).collect();
    assert!(for_whom.contains(&"unbekannt@musterstadt.de".to_string()), "{for_whom:?}");
    assert!(for_whom.contains(&"voll@musterstadt.de".to_string()), "{for_whom:?}");
    for (m, who) in parsed.iter().zip(&for_whom) {
        assert_eq!(m.subject(), Some("Zur Weiterleitung: Widerspruch gegen Bescheid"));
        let note = m.body_text(0).unwrap();
        assert!(note.contains("Sammelpostfach") && note.contains(who.as_str()), "{note}");
        let why = if who.starts_with("unbekannt") { "550 " } else { "452 " };
        let text = if who.starts_with("unbekannt") { "Unbekannter Empfaenger" } else { "Postfach voll" };
        assert!(note.contains(text), "{note}");
        assert!(note.contains(why), "the mail server's answer is named: {note}");
        // The provider's bytes ride along unchanged under the border check's
        // Authentication-Results, as every mailbox copy (Dovecot stores LF line ends).
        let att = m.attachment(0).expect("original attached");
        let inner = String::from_utf8_lossy(att.message().expect("message/rfc822").raw_message()).replace("\r\n", "\n");
        let want = String::from_utf8_lossy(raw).replace("\r\n", "\n");
        assert!(inner.starts_with("Authentication-Results: gw.musterstadt.de; demail-integrity="), "{inner}");
        assert!(inner.trim_end().ends_with(want.trim_end()), "{inner}");
    }
    assert!(
        demail_testkit::wait_until(Duration::from_secs(10), || (h.queue_len() == 0).then_some(())).is_some(),
        "nothing stays queued: {:?}",
        h.queue_entries()
    );
    let log = h.log();
    assert_eq!(log.matches("De-Mail handed to the Sammelpostfach").count(), 2, "{log}");
    // The full mailbox kept it queued past warn_after_secs: one warning for it.
    assert_eq!(log.matches("message still queued after queue.warn_after_secs").count(), 1, "{log}");
    assert!(
        h.dovecot.messages("unbekannt@musterstadt.de").is_empty()
            && h.dovecot.messages("voll@musterstadt.de").is_empty()
    );
}

#[test]
fn when_the_sammelpostfach_refuses_too_the_de_mail_is_held_not_dropped() {
    let mut h = Harness::with_policy(&POLICY.replace("sammelpostfach@musterstadt.de", "sammelvoll@musterstadt.de"));
    let pf = refusing_mail_server(&h);
    deliver_through(&mut h, &pf, "");
    let raw = b"From: buerger@web.de-mail.de\r\nTo: unbekannt@musterstadt.de-mail.de\r\nSubject: Antrag\r\nX-de-mail-message-type: normal\r\n\r\nText\r\n";
    assert_eq!(h.inject("buerger@web.de-mail.de", &["unbekannt@musterstadt.de-mail.de"], raw).as_deref(), Ok("250"));
    // Refused, handed to the Sammelpostfach, which refuses too: the wrapper is held for an
    // administrator (queue list / queue retry), the De-Mail is not lost.
    let held = demail_testkit::wait_until(Duration::from_secs(30), || {
        let q = h.queue_entries();
        q.iter().any(|e| e.to_string().contains("sammelvoll") && e.to_string().contains("\"held\":true")).then_some(q)
    });
    assert!(held.is_some(), "{:?}\n{}", h.queue_entries(), h.log());
    assert_eq!(h.queue_len(), 1, "the original is settled by its wrapper: {:?}", h.queue_entries());
    assert!(h.log().contains("internal delivery refused; message held"), "{}", h.log());
}

/// `inbound.keywords`: the mailbox copy names its kind in `Keywords` (Exchange shows it as
/// categories in every client), with a warning when the provider's signature did not pass;
/// a `Keywords` field the message came with is not kept.
#[test]
fn keywords_name_the_kind_for_exchange_categories() {
    let h = Harness::custom(POLICY, |c| c.replace("[inbound]\n", "[inbound]\nkeywords = true\n"));
    let raw = b"Keywords: Erledigt\r\nFrom: buerger@web.de-mail.de\r\nTo: peter.meier@musterstadt.de-mail.de\r\nSubject: Antrag\r\nX-de-mail-message-type: normal\r\n\r\nText\r\n";
    assert_eq!(h.inject("buerger@web.de-mail.de", &["peter.meier@musterstadt.de-mail.de"], raw).as_deref(), Ok("250"));
    let got = h.dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{}", h.log());
    let m = mail_parser::MessageParser::default().parse(&got[0]).unwrap();
    let k: Vec<String> =
        m.keywords().as_text_list().map(|v| v.iter().map(|s| s.to_string()).collect()).unwrap_or_default();
    assert_eq!(k, ["De-Mail", "De-Mail-Warnung"], "unsigned: a De-Mail with a warning");
    assert!(!String::from_utf8_lossy(&got[0]).contains("Erledigt"));
    // The archive keeps the provider's bytes, its own Keywords included.
    let entries = h.archive_entries();
    assert!(entries.iter().any(|e| e["direction"] == "in"), "{entries:?}");
}
