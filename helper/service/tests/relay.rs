//! Relay: the real helper binary submits to a TLS SMTP gateway stand-in (demail-smtp)
//! whose certificate comes from a CA made at test time (demail-testkit).

mod common;

use common::*;
use demail_testkit::{free_port, Pki};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn pki(dir: &std::path::Path, name: &str) -> Pki {
    Pki::generate(dir, name)
}

fn submit(h: &Helper, token: &str, subject: &str) -> String {
    let r = h.post("/v1/messages", Some(token), &demail_message(subject));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.json()["result"]["id"].as_str().unwrap().to_string()
}

#[test]
fn starttls_with_internal_ca_then_journal_and_receipts() {
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let sink = Sink::start(&pki, false, None, None);
    let h = Helper::start(&gateway_config(sink.port, &pki.ca_cert, "starttls", ""), "");
    let token = h.pair();
    let id = submit(&h, &token, "Bescheid über Ihren Antrag");
    let v = h.wait_message(&token, &id, T, |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}\n{}", h.log_text());
    assert!(v["gateway_reply"].as_str().unwrap().starts_with("250"), "{v}");

    let got = sink.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(m.tls, "delivered over TLS");
    assert_eq!(m.mail_from, "peter.meier@musterstadt.de");
    assert_eq!(m.rcpt_to, vec!["anna@buerger.de-mail.de"]);
    let text = String::from_utf8_lossy(&m.message).into_owned();
    assert_eq!(header_of(&text, "X-de-mail-private"), Some("yes"));
    assert_eq!(header_of(&text, "X-de-mail-confirmation-of-dispatch"), Some("yes"));
    let private_id = v["private_id"].as_str().unwrap().to_string();
    assert_eq!(header_of(&text, "X-de-mail-private-id"), Some(private_id.as_str()));

    // Journal: sent, then the dispatch and receipt confirmations arrive.
    let j = h.get("/v1/journal", Some(&token)).json()["result"]["messages"].clone();
    assert_eq!(j[0]["private_id"], private_id.as_str());
    assert_eq!(j[0]["receipt_status"], "sent");
    let r = h.post(
        "/v1/journal/receipts",
        Some(&token),
        &json!({ "private_id": private_id, "type": "dispatch", "time": "2026-11-27T10:00:00Z" }),
    );
    assert_eq!(r.json()["result"]["matched"], true);
    h.post("/v1/journal/receipts", Some(&token), &json!({ "private_id": private_id, "type": "receipt" }));
    let j = h.get(&format!("/v1/journal?private_id={private_id}"), Some(&token)).json()["result"]["messages"].clone();
    // Reported as fields only: listed, but nobody checked them, so they do not count
    // (signed receipts: gateway_e2e.rs).
    assert_eq!(j[0]["receipt_status"], "sent");
    assert_eq!(j[0]["receipts"].as_array().unwrap().len(), 2);
    assert!(
        j[0]["receipts"].as_array().unwrap().iter().all(|r| r["check"] == "unchecked" && r["counts"] == false),
        "{j}"
    );
    // The sent message cannot be cancelled any more.
    let r = h.post(&format!("/v1/outbox/{id}/cancel"), Some(&token), &json!({}));
    assert_eq!(r.status, 409);
}

#[test]
fn implicit_tls() {
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let sink = Sink::start(&pki, true, None, None);
    let h = Helper::start(&gateway_config(sink.port, &pki.ca_cert, "implicit", ""), "");
    let token = h.pair();
    let id = submit(&h, &token, "Implizites TLS");
    assert_eq!(h.wait_message(&token, &id, T, |v| v["status"] == "sent")["status"], "sent", "{}", h.log_text());
    assert!(sink.received()[0].tls);
}

#[test]
fn wrong_ca_is_refused_and_the_user_is_told() {
    let tmp = demail_testkit::temp_dir();
    let gw = pki(tmp.path(), "gw");
    let other = pki(tmp.path(), "other");
    let sink = Sink::start(&gw, false, None, None);
    let h = Helper::start(&gateway_config(sink.port, &other.ca_cert, "starttls", ""), "");
    let token = h.pair();
    let id = submit(&h, &token, "Falsche CA");
    let v = h.wait_message(&token, &id, T, |v| v["error"]["code"] == "relay.tls");
    assert_eq!(v["status"], "queued", "kept for a later attempt, not lost: {v}");
    assert_eq!(v["error"]["code"], "relay.tls", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("Zertifikat"), "{v}");
    assert!(v["error"]["message_en"].as_str().unwrap().contains("certificate"), "{v}");
    assert!(sink.received().is_empty(), "nothing may be sent over an unverified connection");
    // The add-in can see the gateway state on health; the CLI explains it too.
    assert_eq!(h.get("/v1/health", None).json()["result"]["gateway"], "error");
    let (rc, out, _) = h.cli(&["doctor"], None);
    assert_eq!(rc, 1);
    let tls = out["findings"].as_array().unwrap().iter().find(|f| f["check"] == "tls").cloned().unwrap();
    assert_eq!(tls["status"], "error");
    assert!(tls["message"].as_str().unwrap().contains("Zertifikat"), "{tls}");
    // With the right host name but no CA at all (system store only) it is refused as well.
    let (rc, _, err) = h.cli(&["credentials", "test"], None);
    assert_eq!(rc, 2);
    assert!(err.contains("relay.tls"), "{err}");
}

#[test]
fn gateway_down_for_a_while_then_delivered() {
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let port = free_port();
    let h = Helper::start(&gateway_config(port, &pki.ca_cert, "starttls", ""), "");
    let token = h.pair();
    let id = submit(&h, &token, "Gateway aus");
    let v = h.wait_message(&token, &id, T, |v| {
        v["error"]["code"] == "relay.unreachable" && v["attempts"].as_i64() >= Some(2)
    });
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["error"]["code"], "relay.unreachable", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("nicht erreichbar"));
    assert_eq!(h.get("/v1/health", None).json()["result"]["gateway"], "unreachable");
    let sink = Sink::start(&pki, false, None, Some(port));
    let v = h.wait_message(&token, &id, T, |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}");
    assert!(v["error"].is_null(), "the old error is cleared: {v}");
    assert_eq!(sink.received().len(), 1);
    assert_eq!(h.get("/v1/health", None).json()["result"]["gateway"], "connected");
}

#[test]
fn permanent_5xx_is_failed_with_the_reason_and_can_be_retried() {
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let sink = Sink::start(&pki, false, None, None);
    sink.set_mode(SinkMode::Reject(550, "5.7.1", "Absender nicht freigeschaltet"));
    let h = Helper::start(&gateway_config(sink.port, &pki.ca_cert, "starttls", ""), "");
    let token = h.pair();
    let id = submit(&h, &token, "Wird abgelehnt");
    let v = h.wait_message(&token, &id, T, |v| v["status"] == "failed");
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "relay.rejected");
    assert!(v["error"]["message"].as_str().unwrap().contains("Absender nicht freigeschaltet"), "{v}");
    assert!(v["gateway_reply"].as_str().unwrap().contains("550"), "{v}");
    assert_eq!(v["attempts"], 1, "a permanent refusal is not retried on its own");
    // The user (or IT) fixes it and retries.
    sink.set_mode(SinkMode::Accept);
    let r = h.post(&format!("/v1/outbox/{id}/retry"), Some(&token), &json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(h.wait_message(&token, &id, T, |v| v["status"] == "sent")["status"], "sent");
}

#[test]
fn transient_4xx_is_retried() {
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let sink = Sink::start(&pki, false, None, None);
    sink.set_mode(SinkMode::Reject(451, "4.3.0", "Bitte spaeter"));
    let h = Helper::start(&gateway_config(sink.port, &pki.ca_cert, "starttls", ""), "");
    let token = h.pair();
    let id = submit(&h, &token, "Später");
    let v = h.wait_message(&token, &id, T, |v| v["error"]["code"] == "relay.deferred");
    assert_eq!(v["status"], "queued", "{v}");
    assert!(v["gateway_reply"].as_str().unwrap().contains("451"), "{v}");
    sink.set_mode(SinkMode::Accept);
    assert_eq!(h.wait_message(&token, &id, T, |v| v["status"] == "sent")["status"], "sent");
}

#[test]
fn gives_up_after_the_configured_time() {
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let h = Helper::start(&gateway_config(free_port(), &pki.ca_cert, "starttls", "give_up_after = 2"), "");
    let token = h.pair();
    let id = submit(&h, &token, "Aufgeben");
    let v = h.wait_message(&token, &id, T, |v| v["status"] == "failed");
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "relay.gave_up");
    assert!(v["error"]["message"].as_str().unwrap().contains("nicht erreichbar"), "the last reason is kept: {v}");
}

#[test]
fn subject_tags_dialect_uses_the_core_formatter() {
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let sink = Sink::start(&pki, false, None, None);
    let h = Helper::start(
        &gateway_config(sink.port, &pki.ca_cert, "starttls", ""),
        "[gateway]\ndialect = \"subject-tags\"\n",
    );
    let token = h.pair();
    let id = submit(&h, &token, "Ihr Antrag");
    assert_eq!(h.wait_message(&token, &id, T, |v| v["status"] == "sent")["status"], "sent", "{}", h.log_text());
    let text = String::from_utf8_lossy(&sink.received()[0].message).into_owned();
    assert_eq!(header_of(&text, "Subject"), Some("[P, VB] Ihr Antrag"));
    assert!(header_of(&text, "X-de-mail-private").is_none(), "{text}");
    assert!(header_of(&text, "X-de-mail-private-id").is_some());
}

/// A gateway stand-in that wants a fresh user with `password`, and a helper using
/// keyutils whose session keyring was prepared by `setup` (shell, `{demail}` = binary).
fn keyutils_helper(dir: &std::path::Path, password: &str, setup: &str) -> (Sink, Helper, String) {
    let pki = pki(dir, "gw");
    let user = unique("helper");
    let sink = Sink::start(&pki, false, Some((&user, password)), None);
    let cfg = gateway_login_config(sink.port, &pki.ca_cert, &user, "keyutils");
    let script = format!("{setup} && exec {{demail}} serve --port 0");
    let h = Helper::start_with(HelperOpts {
        machine: &cfg,
        keyutils: Some(Keyutils { user: &user, script: &script }),
        ..Default::default()
    });
    (sink, h, user)
}

/// The keyring round-trip with a real backend (kernel keyutils in a fresh session keyring):
/// `demail credentials set` stores the password, the helper reads it and logs in.
#[test]
fn smtp_auth_with_password_from_keyutils() {
    let tmp = demail_testkit::temp_dir();
    let (sink, h, user) = keyutils_helper(
        tmp.path(),
        "Geheim-123",
        "printf 'Geheim-123\\n' | {demail} credentials set --password-stdin >&2 && {demail} credentials test >&2",
    );
    let log = h.log_text();
    assert!(log.contains("\"backend\": \"keyutils\""), "{log}");
    assert!(log.contains("TLS-Prüfung in Ordnung; angemeldet als"), "credentials test passed: {log}");
    assert!(!log.contains("Geheim-123"), "the password never appears in output or logs");
    let token = h.pair();
    let id = submit(&h, &token, "Mit Anmeldung");
    assert_eq!(h.wait_message(&token, &id, T, |v| v["status"] == "sent")["status"], "sent", "{}", h.log_text());
    assert_eq!(sink.received()[0].auth_user.as_deref(), Some(user.as_str()));
    let logs = std::fs::read_dir(h.dir.path().join("data/demail/logs")).unwrap();
    for f in logs.flatten() {
        assert!(!std::fs::read_to_string(f.path()).unwrap().contains("Geheim-123"));
    }
}

#[test]
fn wrong_password_is_explained() {
    let tmp = demail_testkit::temp_dir();
    let (sink, h, _) =
        keyutils_helper(tmp.path(), "richtig", "printf 'falsch\\n' | {demail} credentials set --password-stdin >&2");
    let token = h.pair();
    let id = submit(&h, &token, "Falsches Kennwort");
    let v = h.wait_message(&token, &id, T, |v| v["error"]["code"] == "relay.auth");
    assert_eq!(v["status"], "queued", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("demail credentials set"), "{v}");
    assert!(!v.to_string().contains("falsch\""), "no password in the API");
    assert!(sink.received().is_empty());
}

/// Secret Service (gnome-keyring in a private D-Bus session): set, then log in with it.
#[test]
fn credentials_roundtrip_with_secret_service() {
    for tool in ["dbus-run-session", "gnome-keyring-daemon"] {
        assert!(demail_testkit::have(tool), "{tool} missing: run scripts/setup test");
    }
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let user = unique("ss");
    let sink = Sink::start(&pki, false, Some((&user, "S3cret!")), None);
    let cfg = gateway_login_config(sink.port, &pki.ca_cert, &user, "secret-service");
    let h = Helper::start_with(HelperOpts { machine: &cfg, user: "[relay]\nenabled = false\n", ..Default::default() });
    let bin = demail_bin();
    let script = format!(
        "printf 'test' | gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1; \
         printf 'S3cret!\\n' | {b} credentials set --password-stdin && {b} credentials test && {b} credentials delete",
        b = bin.display()
    );
    let d = h.dir.path();
    let mut cmd = std::process::Command::new("dbus-run-session");
    cmd.args(["--", "sh", "-c", &script]);
    helper_env(&mut cmd, d);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"backend\": \"secret-service\""), "{stdout}");
    assert!(stdout.contains("\"authenticated\": true"), "{stdout}");
    assert!(stdout.contains("\"deleted\": 1"), "{stdout}");
    assert_eq!(sink.received().len(), 0);
}

#[test]
fn no_keyring_backend_gives_a_clear_error() {
    let h = Helper::start_with(HelperOpts {
        machine: "[gateway]\nhost = \"gw.example\"\nusername = \"u\"\n[secrets]\nbackend = \"secret-service\"\n[relay]\nenabled = false\n",
        ..Default::default()
    });
    let (rc, _, err) = h.cli(&["credentials", "set", "--password-stdin"], Some("pw\n"));
    assert_eq!(rc, 2);
    assert!(err.contains("secrets.unavailable"), "{err}");
    assert!(err.contains("Schlüsselbund") && err.contains("keyring"), "German and English: {err}");
    assert!(err.contains("keyutils"), "a documented alternative: {err}");
}

/// `kill -9` while 1,000 De-Mails are being relayed: after the restart every Message-ID
/// arrives. The helper is at-least-once; a message that was on the wire at the kill
/// (one per relay connection) arrives twice with the same Message-ID, which the gateway discards
/// (docs/protocol.md, "Delivery guarantees").
#[test]
fn kill9_with_1000_messages_loses_nothing() {
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let port = free_port();
    let mut h = Helper::start(&gateway_config(port, &pki.ca_cert, "starttls", ""), "");
    let token = h.pair();
    let t0 = std::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..1000 {
        let mut m = demail_message(&format!("Massenversand {i}"));
        m["message_id"] = json!(format!("<bulk-{i}@musterstadt.de>"));
        let r = h.post("/v1/messages", Some(&token), &m);
        assert_eq!(r.status, 202);
        ids.push(format!("bulk-{i}@musterstadt.de"));
    }
    eprintln!("TIMING submitted {:?}", t0.elapsed());
    let sink = Sink::start(&pki, false, None, Some(port));
    sink.wait_received(150, T);
    eprintln!("TIMING 150 received {:?}", t0.elapsed());
    h.kill9();
    let before = sink.received().len();
    assert!(before < 1000, "killed mid-way ({before})");
    h.restart();
    let done = demail_testkit::wait_until(Duration::from_secs(300), || {
        let c = h.get("/v1/outbox?limit=1", Some(&token)).json()["result"]["counts"].clone();
        (c["sent"] == 1000).then_some(())
    });
    eprintln!("TIMING all sent {:?}", t0.elapsed());
    let got = sink.received();
    assert!(done.is_some(), "not all sent: {}", h.get("/v1/outbox?limit=1", Some(&token)).json()["result"]["counts"]);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &got {
        let text = String::from_utf8_lossy(&m.message).into_owned();
        let mid = header_of(&text, "Message-ID").unwrap().trim_matches(['<', '>']).to_string();
        *seen.entry(mid).or_default() += 1;
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    let counts = h.get("/v1/outbox?limit=1", Some(&token)).json()["result"]["counts"].clone();
    assert!(
        missing.is_empty(),
        "{} lost (received {}, before kill {before}, outbox {counts}): {:?}",
        missing.len(),
        got.len(),
        &missing[..missing.len().min(5)]
    );
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    // Two relay connections (the default): at most two messages were on the wire.
    assert!(dups.len() <= 2 && dups.iter().all(|(_, n)| **n == 2), "at most the in-flight messages twice: {dups:?}");
    let list = h.get("/v1/outbox?status=sent&limit=1000", Some(&token)).json()["result"]["counts"].clone();
    assert_eq!(list["sent"], 1000, "{list}");
}

#[test]
fn doctor_names_why_the_autostart_did_not_come_up() {
    let d = demail_testkit::temp_dir();
    // Another program holds the helper's configured port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    std::fs::write(d.path().join("machine.toml"), format!("[api]\nport = {port}\n")).unwrap();
    let mut cmd = std::process::Command::new(service_bin());
    helper_env(&mut cmd, d.path());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("Fehler [serve.bind]") && stderr.contains("Error [serve.bind]"), "{stderr}");
    // Started at logon there is no console: the same text is in the user's log directory.
    let file = d.path().join("data/demail/logs/service-start-error.log");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stderr);

    let mut cmd = std::process::Command::new(demail_bin());
    cmd.args(["doctor", "--offline"]);
    helper_env(&mut cmd, d.path());
    let out = cmd.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<_> = v["findings"].as_array().unwrap().iter().filter(|f| f["check"] == "service").collect();
    assert_eq!(found.len(), 2, "not running, and why: {v}");
    assert_eq!(found[1]["status"], "error");
    let de = found[1]["message"].as_str().unwrap();
    assert!(
        de.starts_with("Letzter Startfehler (")
            && de.contains("service-start-error.log")
            && de.contains("Fehler [serve.bind]"),
        "{de}"
    );
    assert!(found[1]["message_en"].as_str().unwrap().contains("Error [serve.bind]"), "{v}");
    assert_eq!(out.status.code(), Some(1), "an error finding fails the doctor");

    // Port free again: the next start works and the old error is history.
    drop(busy);
    let mut cmd = std::process::Command::new(service_bin());
    helper_env(&mut cmd, d.path());
    let mut service =
        demail_testkit::ChildGuard::spawn("demail-service", cmd, Some(&d.path().join("service.log"))).unwrap();
    let cleared = demail_testkit::wait_until(T, || (!file.exists()).then_some(()));
    service.kill();
    assert!(
        cleared.is_some(),
        "a successful start removes the start-error file: {}",
        std::fs::read_to_string(d.path().join("service.log")).unwrap_or_default()
    );
}

/// One submission is one De-Mail, also when the client gave up waiting: the helper is slow
/// to commit (test hook, past the client's timeout), the client sends the same message
/// again with the same `message_id`, as the add-in does. Exactly one outbox entry, and
/// exactly one message with that Message-ID reaches the gateway.
#[test]
fn a_resend_after_a_timeout_is_one_de_mail() {
    use std::io::{Read, Write};
    let tmp = demail_testkit::temp_dir();
    let pki = pki(tmp.path(), "gw");
    let sink = Sink::start(&pki, false, None, None);
    let h = Helper::start_with(HelperOpts {
        machine: &gateway_config(sink.port, &pki.ca_cert, "starttls", ""),
        env: &[("DEMAIL_HELPER_TEST_COMMIT_DELAY_MS", "3000")],
        ..Default::default()
    });
    let token = h.pair();
    let mut m = demail_message("Bescheid, langsam gespeichert");
    m["message_id"] = json!("<addin-1795775532000.9f3a0c1b@musterstadt.de>");

    // The first attempt: the client gives up after one second, before the helper answers.
    let body = m.to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    write!(
        s,
        "POST /v1/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        h.host(),
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 512];
    assert!(s.read(&mut buf).is_err(), "the helper answered within a second; the hook did not delay it");
    drop(s);

    // The resend with the same Message-ID: the entry of the first attempt.
    let r = h.post("/v1/messages", Some(&token), &m);
    assert!(matches!(r.status, 200 | 202), "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(h.wait_message(&token, &id, T, |v| v["status"] == "sent")["status"], "sent", "{}", h.log_text());
    std::thread::sleep(Duration::from_secs(4));
    let list = h.get("/v1/outbox", Some(&token)).json()["result"]["messages"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1, "one submission, one outbox entry: {list}");
    let relayed: Vec<String> = sink
        .received()
        .iter()
        .filter_map(|r| header_of(&String::from_utf8_lossy(&r.message), "Message-ID").map(str::to_string))
        .collect();
    assert_eq!(relayed, ["<addin-1795775532000.9f3a0c1b@musterstadt.de>"], "one De-Mail at the gateway");
}
