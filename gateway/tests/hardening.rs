//! Issue 16 against the real `demail-gateway` binary: one acceptance per Message-ID under
//! concurrency and after a failed spool write, the Sender and Reply-To rules, `confirm`
//! verdicts, connection limits, and SMTP smuggling into the queue and to the provider.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const PETER: &str = "peter.meier@musterstadt.de";
const ANNA: &str = "anna@buerger.de-mail.de";

/// Read until a final reply line (`NNN text`) arrives; all lines read.
fn reply(s: &mut TcpStream) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    loop {
        if text.ends_with("\r\n") && text.lines().last().is_some_and(|l| l.len() >= 4 && l.as_bytes()[3] == b' ') {
            return text;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

fn say(s: &mut TcpStream, line: &str) -> String {
    s.write_all(line.as_bytes()).unwrap();
    reply(s)
}

/// The queue id in a "queued as <id>" reply.
fn queue_id(reply: &str) -> Option<String> {
    let rest = &reply[reply.find("queued as ")? + "queued as ".len()..];
    Some(rest.trim_end_matches(|c: char| c.is_whitespace() || c == '.').split(['.', '\r']).next()?.to_string())
}

#[test]
fn twenty_concurrent_submissions_of_one_message_id_are_queued_once() {
    const N: usize = 20;
    let mut h = plain_harness(POLICY);
    let m = msg(PETER, ANNA, "[P] Zwanzigmal", "");
    // Dot-stuffed for the wire.
    let data = String::from_utf8(m.clone()).unwrap().replace("\r\n.", "\r\n..");
    let barrier = Arc::new(Barrier::new(N));
    let port = h.out_port;
    let clients: Vec<_> = (0..N)
        .map(|_| {
            let (data, barrier) = (data.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                assert!(reply(&mut s).starts_with("220"));
                say(&mut s, "EHLO parallel\r\n");
                assert!(say(&mut s, &auth_plain()).starts_with("235"));
                assert!(say(&mut s, &format!("MAIL FROM:<{PETER}>\r\n")).starts_with("250"));
                assert!(say(&mut s, &format!("RCPT TO:<{ANNA}>\r\n")).starts_with("250"));
                assert!(say(&mut s, "DATA\r\n").starts_with("354"));
                s.write_all(data.as_bytes()).unwrap();
                // Every client ends its DATA at the same moment.
                barrier.wait();
                say(&mut s, ".\r\n")
            })
        })
        .collect();
    let replies: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ids: Vec<Option<String>> = replies.iter().map(|r| queue_id(r)).collect();
    for (r, id) in replies.iter().zip(&ids) {
        assert!(r.starts_with("250") && id.is_some(), "{r}\n{}", h.log());
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "one queue id for all: {ids:?}");
    // Exactly one in the spool and in the archive (the provider is not up yet).
    assert_eq!(h.queue_len(), 1, "{:?}", h.spool_files());
    assert_eq!(h.archive_count("SELECT count(*) FROM entries WHERE direction = 'out'"), 1);
    assert_eq!(h.archive_count("SELECT count(*) FROM reservations"), 1);
    assert_eq!(h.archive_count("SELECT count(*) FROM billing"), 1);
    assert!(h.log().contains("duplicate submission"), "{}", h.log());
    // And once at the provider (the in-test sink keeps every copy it gets).
    h.start_provider();
    h.wait_provider(1, 30);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(h.provider_msgs().len(), 1);
}

#[test]
fn a_failed_spool_write_is_rolled_back_and_the_retry_is_queued_once() {
    let mut h = Harness::new();
    h.gateway.take().unwrap().terminate(Duration::from_secs(3));
    h.env.push((demail_gateway::app::SPOOL_FAULT_ENV.into(), "1".into()));
    h.start_gateway();
    assert!(h.log().contains("TEST-ONLY fault hook"), "{}", h.log());
    let m = msg(PETER, ANNA, "[P] Nach dem Fehler", "");
    let e = h.submit(PETER, &[ANNA], &m).unwrap_err();
    assert!(e.contains("[spool.write]") && e.contains("Transient"), "{e}");
    // Nothing of it is left: no spool file, no reservation, no archive entry.
    assert_eq!(h.spool_files(), Vec::<String>::new());
    assert_eq!(h.archive_count("SELECT count(*) FROM reservations"), 0);
    assert_eq!(h.archive_count("SELECT count(*) FROM entries"), 0);
    // The client's retry is taken, once; a further retry is the duplicate.
    let a = h.submit(PETER, &[ANNA], &m).unwrap();
    let b = h.submit(PETER, &[ANNA], &m).unwrap();
    assert!(a.starts_with("250") && queue_id(&a).is_some(), "{a}");
    assert_eq!(queue_id(&a), queue_id(&b));
    assert_eq!(h.queue_len(), 1);
    assert_eq!(h.archive_count("SELECT count(*) FROM entries WHERE direction = 'out'"), 1);
    h.start_provider();
    h.wait_provider(1, 30);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(h.provider_msgs().len(), 1);
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
    // The application account may send as Peter and as the secretariat.
    let mut h = Harness::custom(&policy, |c| {
        c.replace("\"buergermeister@musterstadt.de\"] }]", "\"sekretariat@musterstadt.de\"] }]")
    });
    h.start_provider();
    let ok = msg(PETER, ANNA, "[P] Im Auftrag", "Sender: Sekretariat <sekretariat@musterstadt.de>\r\n");
    assert!(h.submit_as(HELPER_USER, PETER, &[ANNA], &ok).is_ok());
    let got = h.wait_provider(1, 20);
    let sender = header(&got[0].1, "Sender").unwrap_or_default();
    assert!(sender.contains("<sekretariat@musterstadt.de-mail.de>"), "{sender}");
    let bad = msg(PETER, ANNA, "[P] Im Auftrag", "Sender: recht@musterstadt.de\r\n");
    let e = h.submit_as(HELPER_USER, PETER, &[ANNA], &bad).unwrap_err();
    assert!(e.contains("5.7.1 [gateway.sender_field_not_bound]"), "{e}");
    let outside = msg(PETER, ANNA, "[P] Im Auftrag", "Sender: chef@example.org\r\n");
    assert!(h.submit_as(HELPER_USER, PETER, &[ANNA], &outside).unwrap_err().contains("[sender_field.outside]"));
    // A person may name as Sender only addresses the directory gives them.
    let e = h.submit(PETER, &[ANNA], &ok).unwrap_err();
    assert!(e.contains("5.7.1 [identity.sender_field_not_allowed]"), "{e}");
}

#[test]
fn confirm_verdicts_pass_only_confirmed() {
    let policy =
        POLICY.replace("mixed_addressing = \"reject\"", "mixed_addressing = \"warn\"\nrequire_marking = \"confirm\"");
    let mut h = Harness::custom(&policy, |c| {
        c.replace(
            "\"buergermeister@musterstadt.de\"] }]",
            "\"buergermeister@musterstadt.de\"] }, { name = \"helfer-app\", password_env = \"TEST_GW_HELPER_PASSWORD\", senders = [\"peter.meier@musterstadt.de\"], confirmed_by_client = true }]",
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

/// A connection to `port` from the loopback address `src`, as a blocking stream.
fn connect_from(h: &Harness, src: &str, port: u16) -> TcpStream {
    let s = h.rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
        sock.connect(([127, 0, 0, 1], port).into()).await.unwrap().into_std().unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn swaks_from(h: &Harness, src: &str, password: &str) -> std::process::Output {
    std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &h.out_port.to_string(), "--local-interface", src])
        .args(["--tls", "--tls-verify", "--tls-sni", "localhost"])
        .arg("--tls-ca-path")
        .arg(&h.gw_pki.ca_cert)
        .args(["--auth", "PLAIN", "--auth-user", HELPER_USER, "--auth-password", password])
        .args(["--from", PETER, "--to", ANNA])
        .args(["--header", &format!("From: {PETER}"), "--header", "Subject: [P] Nach der Sperre", "--body", "Text"])
        .output()
        .unwrap()
}

#[test]
fn listener_limits_come_from_the_configuration() {
    assert!(demail_testkit::have("swaks"), "swaks missing: scripts/setup test");
    let mut h = Harness::custom(POLICY, |c| {
        c + "\n[outbound.limits]\nmax_connections_per_ip = 2\npre_auth_timeout_secs = 1\nauth_failures_per_ip = 2\n"
    });
    h.start_provider();
    // Per address: the third connection from 127.0.0.1 is refused, 127.0.0.2 is served.
    let mut a = connect_from(&h, "127.0.0.1", h.out_port);
    let mut b = connect_from(&h, "127.0.0.1", h.out_port);
    assert!(reply(&mut a).starts_with("220") && reply(&mut b).starts_with("220"));
    let mut c = connect_from(&h, "127.0.0.1", h.out_port);
    let t = reply(&mut c);
    assert!(t.contains("421-4.7.0 Zu viele gleichzeitige Verbindungen") && t.contains("Too many concurrent"), "{t}");
    let mut d = connect_from(&h, "127.0.0.2", h.out_port);
    assert!(reply(&mut d).starts_with("220"));
    // Idle before AUTH: dropped after the short pre-auth timeout, not the command timeout.
    let t0 = Instant::now();
    let t = reply(&mut a);
    assert!(t.starts_with("421-4.4.2 Zeitüberschreitung vor der Anmeldung"), "{t}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop((a, b, c, d));
    std::thread::sleep(Duration::from_millis(300));
    // Wrong passwords lock their address out, across connections; another address logs in.
    for _ in 0..2 {
        let o = swaks_from(&h, "127.0.0.1", "falsch");
        assert!(String::from_utf8_lossy(&o.stdout).contains("535 5.7.8"), "{}", String::from_utf8_lossy(&o.stdout));
    }
    let o = swaks_from(&h, "127.0.0.1", HELPER_PASSWORD);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() && out.contains("454 4.7.0"), "{out}");
    let o = swaks_from(&h, "127.0.0.2", HELPER_PASSWORD);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(h.wait_provider(1, 20).len(), 1);
    let log = h.log();
    assert!(log.contains("connection limits") && log.contains("locked out"), "{log}");
}

/// The smuggling ends (CVE-2023-51764 class), each followed by a complete transaction of
/// the mayor's. Nothing of it may reach the queue, the archive or the provider.
#[test]
fn smuggled_transactions_never_reach_the_queue_or_the_provider() {
    let policy = format!("{POLICY}\n[[authorization.senders]]\naddress = \"buergermeister@musterstadt.de\"\n");
    let mut h = plain_harness(&policy);
    let _sim = h.start_sim();
    let ends: [&[u8]; 6] = [b"\r\n.\r\r\n", b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n"];
    for (i, end) in ends.iter().enumerate() {
        let mut s = format!(
            "EHLO legit\r\nMAIL FROM:<{PETER}>\r\nRCPT TO:<{ANNA}>\r\nDATA\r\nFrom: Peter Meier <{PETER}>\r\nTo: {ANNA}\r\nSubject: [P] Legitim {i}\r\nMessage-ID: <legit-{i}@test>\r\n\r\nText"
        )
        .into_bytes();
        s.extend_from_slice(end);
        s.extend_from_slice(
            format!(
                "MAIL FROM:<buergermeister@musterstadt.de>\r\nRCPT TO:<opfer@buerger.de-mail.de>\r\nDATA\r\n\
                 From: Der Buergermeister <buergermeister@musterstadt.de>\r\nTo: opfer@buerger.de-mail.de\r\n\
                 Subject: [P] Gefaelscht {i}\r\nMessage-ID: <forged-{i}@test>\r\n\r\nGefaelscht\r\n.\r\nQUIT\r\n"
            )
            .as_bytes(),
        );
        let t = raw_session(h.out_port, &s, Duration::from_secs(10));
        assert_eq!(t.matches("250 2.1.0").count(), 1, "{end:?}: the smuggled MAIL was answered: {t}");
        assert_eq!(t.matches("354 ").count(), 1, "{end:?}: the smuggled DATA was answered: {t}");
        assert!(t.contains("554 5.6.0"), "{end:?}: {t}");
    }
    // A legitimate message afterwards reaches the simulator: the path works, so the
    // emptiness below is not for want of a working path.
    let clean = format!(
        "EHLO legit\r\nMAIL FROM:<{PETER}>\r\nRCPT TO:<{ANNA}>\r\nDATA\r\nFrom: Peter Meier <{PETER}>\r\nTo: {ANNA}\r\nSubject: [P] Sauber\r\nMessage-ID: <clean@test>\r\n\r\nText\r\n.\r\nQUIT\r\n"
    );
    assert!(raw_session(h.out_port, clean.as_bytes(), Duration::from_secs(10)).contains("queued as"));
    let stored = demail_testkit::wait_until(Duration::from_secs(30), || {
        let s = h.sim_stored();
        (!s.is_empty()).then_some(s)
    })
    .unwrap_or_else(|| panic!("nothing at the simulator:\n{}\n{}", h.log(), h.sim_log()));
    std::thread::sleep(Duration::from_secs(1));
    let stored_now = h.sim_stored();
    assert_eq!(stored_now.len(), 1, "only the clean message: {}", stored.len());
    let text = String::from_utf8_lossy(&stored_now[0]);
    assert!(text.contains("Sauber") && !text.contains("Gefaelscht"), "{text}");
    assert_eq!(h.archive_count("SELECT count(*) FROM entries WHERE data LIKE '%Gefaelscht%'"), 0);
    assert_eq!(h.archive_count("SELECT count(*) FROM entries"), 1);
    assert!(demail_testkit::wait_until(Duration::from_secs(10), || (h.queue_len() == 0).then_some(())).is_some());
    assert!(h.gateway.as_mut().unwrap().try_wait().is_none(), "gateway died: {}", h.log());
}
