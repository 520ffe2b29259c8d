//! The server against real clients: lettre (STARTTLS, implicit TLS, AUTH), swaks,
//! and raw sockets for hostile input.

use demail_smtp::{serve, tls, Accepted, AuthResult, Authenticated, Config, Envelope, Handler, IpNet, Reject};
use demail_testkit::{temp_dir, Pki};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Store {
    got: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

impl Handler for Store {
    async fn authenticate(&self, user: &str, password: &str) -> AuthResult {
        if user == "caseworker" && password == "s3cret" {
            AuthResult::Accepted(Authenticated { user: user.into(), method: "password".into(), display: None })
        } else {
            AuthResult::Refused
        }
    }

    fn rcpt_to(&self, _env: &Envelope, rcpt: &str) -> Result<(), Reject> {
        if rcpt.starts_with("unknown@") {
            return Err(Reject::new(550, "5.1.1", "Empfänger unbekannt.", "Recipient unknown."));
        }
        Ok(())
    }

    async fn deliver(&self, env: &Envelope, msg: Vec<u8>) -> Result<Accepted, Reject> {
        if env.rcpt_to.iter().any(|r| r.starts_with("refuse@")) {
            return Err(Reject::new(554, "5.7.1", "Abgelehnt: Testregel.", "Refused: test rule."));
        }
        let mut g = self.got.lock().unwrap();
        g.push((env.clone(), msg));
        Ok(Accepted { id: format!("Q{}", g.len()) })
    }
}

async fn start(cfg: Config) -> (u16, Arc<Store>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let store = Arc::new(Store::default());
    tokio::spawn(serve(l, Arc::new(cfg), store.clone()));
    (port, store)
}

fn tls_cfg(pki: &Pki) -> Config {
    Config {
        tls: Some(tls::server_config(&pki.server_cert, &pki.server_key, None).unwrap()),
        offer_auth: true,
        require_auth: true,
        require_tls: true,
        ..Config::default()
    }
}

fn lettre_params(pki: &Pki) -> TlsParameters {
    TlsParameters::builder("localhost".into())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap()
}

const MSG: &[u8] = b"From: a@stadt.de\r\nTo: b@x.de-mail.de\r\nSubject: Test\r\n\r\nHallo\r\n.punkt am Anfang\r\n";

fn lettre_envelope() -> lettre::address::Envelope {
    lettre::address::Envelope::new(Some("a@stadt.de".parse().unwrap()), vec!["b@x.de-mail.de".parse().unwrap()])
        .unwrap()
}

#[tokio::test]
async fn lettre_starttls_auth_exact_bytes() {
    let d = temp_dir();
    let pki = Pki::generate(d.path(), "s");
    let (port, store) = start(tls_cfg(&pki)).await;
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(lettre_params(&pki)))
        .credentials(Credentials::new("caseworker".into(), "s3cret".into()))
        .authentication(vec![Mechanism::Plain])
        .build();
    let r = t.send_raw(&lettre_envelope(), MSG).await.unwrap();
    assert_eq!(r.code().to_string(), "250");
    let got = store.got.lock().unwrap();
    assert_eq!(got.len(), 1);
    // Dot-stuffing by the client, unstuffing by the server: the bytes are the original
    // (lettre always adds one CRLF before the final dot).
    assert_eq!(got[0].1, [MSG, b"\r\n"].concat());
    assert_eq!(got[0].0.session.auth_user.as_deref(), Some("caseworker"));
    assert!(got[0].0.session.tls);
}

#[tokio::test]
async fn lettre_implicit_tls_and_login() {
    let d = temp_dir();
    let pki = Pki::generate(d.path(), "s");
    let (port, store) = start(Config { implicit_tls: true, ..tls_cfg(&pki) }).await;
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Wrapper(lettre_params(&pki)))
        .credentials(Credentials::new("caseworker".into(), "s3cret".into()))
        .authentication(vec![Mechanism::Login])
        .build();
    t.send_raw(&lettre_envelope(), MSG).await.unwrap();
    assert_eq!(store.got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn wrong_password_and_wrong_ca_fail() {
    let d = temp_dir();
    let pki = Pki::generate(d.path(), "s");
    let other = Pki::generate(d.path(), "other");
    let (port, store) = start(tls_cfg(&pki)).await;
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(lettre_params(&pki)))
        .credentials(Credentials::new("caseworker".into(), "wrong".into()))
        .authentication(vec![Mechanism::Plain])
        .build();
    let e = t.send_raw(&lettre_envelope(), MSG).await.unwrap_err();
    assert!(e.to_string().contains("535"), "{e}");
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(lettre_params(&other)))
        .credentials(Credentials::new("caseworker".into(), "s3cret".into()))
        .build();
    assert!(t.send_raw(&lettre_envelope(), MSG).await.is_err());
    assert!(store.got.lock().unwrap().is_empty());
}

/// A raw client: write, then read until `n` final reply lines arrived.
struct Raw(TcpStream);

impl Raw {
    async fn connect(port: u16) -> Raw {
        let mut r = Raw(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        let greet = r.replies(1).await;
        assert!(greet[0].starts_with("220"), "{greet:?}");
        r
    }
    async fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).await.unwrap();
    }
    /// Final lines (`NNN text`) of the next `n` replies; stops early on EOF.
    async fn replies(&mut self, n: usize) -> Vec<String> {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        loop {
            let finals: Vec<String> =
                text.split("\r\n").filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ').map(str::to_string).collect();
            if finals.len() >= n {
                return finals;
            }
            match tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return finals,
                Ok(Ok(k)) => text.push_str(&String::from_utf8_lossy(&buf[..k])),
            }
        }
    }
    async fn all_text(&mut self) -> String {
        let mut v = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.0.read_to_end(&mut v)).await;
        String::from_utf8_lossy(&v).to_string()
    }
}

fn plain() -> Config {
    Config { max_message_size: 1024, ..Config::default() }
}

#[tokio::test]
async fn pipelining_and_dot_unstuffing() {
    let (port, store) = start(plain()).await;
    let mut c = Raw::connect(port).await;
    c.send(b"EHLO client\r\nMAIL FROM:<a@stadt.de>\r\nRCPT TO:<b@x.de>\r\nRCPT TO:<unknown@x.de>\r\nDATA\r\n").await;
    let r = c.replies(5).await;
    assert!(r[0].starts_with("250 "), "{r:?}");
    assert!(r[1].starts_with("250 2.1.0"));
    assert!(r[2].starts_with("250 2.1.5"));
    assert!(r[3].starts_with("550 5.1.1 Recipient unknown"));
    assert!(r[4].starts_with("354"));
    c.send(b"Subject: x\r\n\r\n..stuffed\r\n.\r\nNOOP\r\nQUIT\r\n").await;
    let r = c.replies(3).await;
    assert!(r[0].starts_with("250 2.0.0 Accepted"), "{r:?}");
    assert!(r[1].starts_with("250"));
    assert!(r[2].starts_with("221"));
    let got = store.got.lock().unwrap();
    assert_eq!(got[0].1, b"Subject: x\r\n\r\n.stuffed\r\n");
    assert_eq!(got[0].0.rcpt_to, ["b@x.de"]);
}

#[tokio::test]
async fn oversize_is_refused_and_session_survives() {
    let (port, store) = start(plain()).await;
    let mut c = Raw::connect(port).await;
    c.send(b"EHLO c\r\n").await;
    let ehlo = c.replies(1).await;
    assert!(ehlo[0].contains("250"));
    // Declared too large.
    c.send(b"MAIL FROM:<a@stadt.de> SIZE=5000\r\n").await;
    assert!(c.replies(1).await[0].starts_with("552 5.3.4"));
    // Undeclared, too large: read to the end, then 552.
    c.send(b"MAIL FROM:<a@stadt.de>\r\nRCPT TO:<b@x.de>\r\nDATA\r\n").await;
    assert!(c.replies(3).await[2].starts_with("354"));
    let big = "x".repeat(100) + "\r\n";
    for _ in 0..50 {
        c.send(big.as_bytes()).await;
    }
    c.send(b".\r\n").await;
    let r = c.replies(1).await;
    assert!(r[0].starts_with("552 5.3.4"), "{r:?}");
    // Still usable.
    c.send(b"MAIL FROM:<a@stadt.de>\r\nRCPT TO:<b@x.de>\r\nDATA\r\n").await;
    assert!(c.replies(3).await[2].starts_with("354"));
    c.send(b"Subject: small\r\n\r\nok\r\n.\r\n").await;
    assert!(c.replies(1).await[0].starts_with("250"));
    assert_eq!(store.got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bare_lf_nul_and_injection_refused() {
    let (port, store) = start(plain()).await;
    let mut c = Raw::connect(port).await;
    c.send(b"EHLO c\n").await;
    assert!(c.replies(1).await[0].starts_with("500 5.5.2"));
    c.send(b"EHLO c\r\nMAIL FROM:<a@stadt.de>\r\nRCPT TO:<b@x.de>\r\nDATA\r\n").await;
    assert!(c.replies(4).await[3].starts_with("354"));
    // NUL: the message is refused, the framing is intact, the session goes on.
    c.send(b"Subject: a\r\n\r\nx\0y\r\n.\r\n").await;
    assert!(c.replies(1).await[0].starts_with("554 5.6.0"));
    c.send(b"VRFY root\r\n").await;
    assert!(c.replies(1).await[0].starts_with("502"));
    // SMTP smuggling attempt: "\n.\n" must not end the data; the bare LF is refused and
    // the connection closed, so nothing after it is read as a command.
    c.send(b"MAIL FROM:<a@stadt.de>\r\nRCPT TO:<b@x.de>\r\nDATA\r\n").await;
    assert!(c.replies(3).await[2].starts_with("354"));
    c.send(b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<evil@x.de>\r\n.\r\n").await;
    let t = c.all_text().await;
    assert!(t.contains("554 5.6.0") && t.contains("421 4.7.0"), "{t}");
    assert!(store.got.lock().unwrap().is_empty());
}

/// The smuggling ends (CVE-2023-51764 class): after each, a complete second transaction
/// follows. Zero messages may come of it, and the server must not answer the smuggled
/// commands. `\r\n.\r\r\n` is the form smtp-proto's own DataReceiver takes for an end.
#[tokio::test]
async fn smuggled_transactions_never_become_messages() {
    let (port, store) = start(plain()).await;
    for end in [&b"\r\n.\r\r\n"[..], b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n"] {
        let mut c = Raw::connect(port).await;
        c.send(b"EHLO c\r\nMAIL FROM:<a@stadt.de>\r\nRCPT TO:<b@x.de>\r\nDATA\r\n").await;
        assert!(c.replies(4).await[3].starts_with("354"));
        let mut data = b"Subject: legit\r\n\r\nx".to_vec();
        data.extend_from_slice(end);
        data.extend_from_slice(
            b"MAIL FROM:<mayor@stadt.de>\r\nRCPT TO:<victim@x.de>\r\nDATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\nQUIT\r\n",
        );
        c.send(&data).await;
        let t = c.all_text().await;
        assert!(!t.contains("250 2.1.0") && !t.contains("354"), "{end:?}: smuggled commands answered: {t}");
        assert!(t.contains("554 5.6.0"), "{end:?}: {t}");
        assert!(store.got.lock().unwrap().is_empty(), "{end:?}: a message was taken");
    }
}

#[tokio::test]
async fn refusal_is_bilingual() {
    let (port, _store) = start(plain()).await;
    let mut c = Raw::connect(port).await;
    c.send(b"EHLO c\r\nMAIL FROM:<a@stadt.de>\r\nRCPT TO:<refuse@x.de>\r\nDATA\r\n").await;
    c.replies(4).await;
    c.send(b"Subject: a\r\n\r\nx\r\n.\r\nQUIT\r\n").await;
    let t = c.all_text().await;
    assert!(t.contains("554-5.7.1 Abgelehnt: Testregel.\r\n554 5.7.1 Refused: test rule.\r\n"), "{t}");
}

#[tokio::test]
async fn lmtp_answers_per_recipient() {
    let (port, store) = start(Config { lmtp: true, ..plain() }).await;
    let mut c = Raw::connect(port).await;
    c.send(b"EHLO c\r\n").await;
    assert!(c.replies(1).await[0].starts_with("500"));
    c.send(b"LHLO c\r\nMAIL FROM:<a@x.de>\r\nRCPT TO:<b@x.de>\r\nRCPT TO:<c@x.de>\r\nDATA\r\n").await;
    assert!(c.replies(5).await[4].starts_with("354"));
    c.send(b"Subject: a\r\n\r\nx\r\n.\r\n").await;
    let r = c.replies(2).await;
    assert!(r.iter().all(|l| l.starts_with("250")), "{r:?}");
    assert_eq!(store.got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn slow_client_times_out() {
    let (port, _s) = start(Config { command_timeout: Duration::from_millis(300), ..plain() }).await;
    let mut c = Raw::connect(port).await;
    let t = c.all_text().await;
    assert!(t.starts_with("421-4.4.2"), "{t}");
}

#[tokio::test]
async fn session_limit_bounds_a_trickling_client() {
    let (port, _s) = start(Config { session_timeout: Duration::from_millis(600), ..plain() }).await;
    let mut c = Raw::connect(port).await;
    for _ in 0..20 {
        if c.0.write_all(b"N").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = c.all_text().await;
    assert!(t.contains("421"), "{t}");
}

#[tokio::test]
async fn allow_list_refuses_others() {
    let (port, _s) = start(Config { allowed_clients: vec!["10.0.0.0/8".parse::<IpNet>().unwrap()], ..plain() }).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.unwrap();
    assert!(String::from_utf8_lossy(&v).starts_with("554-5.7.1"));
}

#[tokio::test]
async fn starttls_rules() {
    let d = temp_dir();
    let pki = Pki::generate(d.path(), "s");
    let (port, _s) = start(tls_cfg(&pki)).await;
    let mut c = Raw::connect(port).await;
    c.send(b"EHLO c\r\n").await;
    let _ = c.replies(1).await;
    // AUTH before TLS is refused; MAIL before TLS too.
    c.send(b"AUTH PLAIN AGNhc2V3b3JrZXIAczNjcmV0\r\nMAIL FROM:<a@b.de>\r\n").await;
    let r = c.replies(2).await;
    assert!(r[0].starts_with("538"), "{r:?}");
    assert!(r[1].starts_with("530"), "{r:?}");
    // Bytes pipelined behind STARTTLS are refused.
    c.send(b"STARTTLS\r\nRSET\r\n").await;
    let t = c.all_text().await;
    assert!(t.contains("554-5.5.1"), "{t}");
}

#[tokio::test]
async fn auth_with_crlf_in_credentials_is_malformed() {
    use base64::Engine;
    let (port, _s) = start(Config { offer_auth: true, allow_auth_without_tls: true, ..plain() }).await;
    let mut c = Raw::connect(port).await;
    let bad = base64::engine::general_purpose::STANDARD.encode(b"\0caseworker\r\nMAIL FROM:<x>\0s3cret");
    c.send(format!("EHLO c\r\nAUTH PLAIN {bad}\r\n").as_bytes()).await;
    let r = c.replies(2).await;
    assert!(r[1].starts_with("501 5.5.2"), "{r:?}");
    let ok = base64::engine::general_purpose::STANDARD.encode(b"\0caseworker\0s3cret");
    c.send(b"AUTH PLAIN\r\n").await;
    assert!(c.replies(1).await[0].starts_with("334"));
    c.send(format!("{ok}\r\n").as_bytes()).await;
    assert!(c.replies(1).await[0].starts_with("235"));
}

#[tokio::test]
async fn too_many_errors_disconnects() {
    let (port, _s) = start(plain()).await;
    let mut c = Raw::connect(port).await;
    c.send(&b"FOO\r\n".repeat(50)).await;
    let t = c.all_text().await;
    assert!(t.contains("421-4.7.0"), "{t}");
}

#[test]
fn swaks_submits_over_starttls_with_auth() {
    assert!(demail_testkit::have("swaks"), "swaks missing: run scripts/setup test");
    let d = temp_dir();
    let pki = Pki::generate(d.path(), "s");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, store) = rt.block_on(start(tls_cfg(&pki)));
    let out = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string(), "--tls", "--tls-verify"])
        .arg("--tls-ca-path")
        .arg(&pki.ca_cert)
        .args(["--tls-sni", "localhost", "--auth", "PLAIN", "--auth-user", "caseworker", "--auth-password", "s3cret"])
        .args(["--from", "a@stadt.de", "--to", "b@x.de-mail.de", "--header", "Subject: swaks", "--body", "via swaks"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let got = store.got.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].1).contains("via swaks"));
}

#[tokio::test]
async fn refused_recipients_count_toward_the_error_limit() {
    let (port, _s) = start(plain()).await;
    let mut c = Raw::connect(port).await;
    let mut cmds = b"EHLO c\r\nMAIL FROM:<a@stadt.de>\r\n".to_vec();
    for i in 0..30 {
        cmds.extend(format!("RCPT TO:<unknown@x{i}.de>\r\n").as_bytes());
    }
    c.send(&cmds).await;
    let t = c.all_text().await;
    assert!(t.contains("421-4.7.0"), "{t}");
    assert_eq!(t.matches("550 5.1.1").count(), 20);
}

/// A raw client from a chosen loopback address (all of 127.0.0.0/8 is local on Linux).
async fn connect_from(src: &str, port: u16) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}

/// The first reply line the server sends.
async fn first_line(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn connections_per_address_are_capped_while_another_address_is_served() {
    let (port, _s) = start(Config { max_connections_per_ip: 2, ..plain() }).await;
    let mut a = connect_from("127.0.0.1", port).await;
    let mut b = connect_from("127.0.0.1", port).await;
    assert!(first_line(&mut a).await.starts_with("220"));
    assert!(first_line(&mut b).await.starts_with("220"));
    let mut c = connect_from("127.0.0.1", port).await;
    let t = first_line(&mut c).await;
    assert!(t.starts_with("421-4.7.0 Zu viele gleichzeitige Verbindungen von Ihrer Adresse"), "{t}");
    assert!(t.contains("421 4.7.0 Too many concurrent connections from your address"), "{t}");
    let mut other = connect_from("127.0.0.2", port).await;
    assert!(first_line(&mut other).await.starts_with("220"), "another address is served");
    // A closed connection gives its slot back.
    drop(a);
    let t = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut d = connect_from("127.0.0.1", port).await;
            let t = first_line(&mut d).await;
            if t.starts_with("220") {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(t.is_ok(), "the slot was not released");
}

#[tokio::test]
async fn an_idle_client_is_dropped_before_auth_or_mail_but_not_after() {
    let cfg =
        Config { pre_auth_timeout: Duration::from_millis(300), command_timeout: Duration::from_secs(20), ..plain() };
    let (port, _s) = start(cfg).await;
    let start = std::time::Instant::now();
    let mut c = Raw::connect(port).await;
    c.send(b"EHLO idle\r\n").await;
    let t = c.all_text().await;
    assert!(t.contains("421-4.4.2 Zeitüberschreitung vor der Anmeldung"), "{t}");
    assert!(start.elapsed() < Duration::from_secs(5), "not dropped in time: {:?}", start.elapsed());
    // After MAIL the command timeout applies.
    let mut c = Raw::connect(port).await;
    c.send(b"EHLO busy\r\nMAIL FROM:<a@stadt.de>\r\n").await;
    assert!(c.replies(2).await[1].starts_with("250 2.1.0"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    c.send(b"NOOP\r\n").await;
    assert!(c.replies(1).await[0].starts_with("250"), "dropped although past MAIL");
}

fn throttled(per_ip: u32, per_user: u32) -> Config {
    Config {
        offer_auth: true,
        allow_auth_without_tls: true,
        auth_throttle: Arc::new(demail_smtp::AuthThrottle::new(demail_smtp::AuthLimits {
            per_ip,
            per_user,
            lockout: Duration::from_secs(60),
            lockout_max: Duration::from_secs(600),
        })),
        ..plain()
    }
}

/// One AUTH PLAIN from `src` on a fresh connection; the reply line.
async fn login_from(src: &str, port: u16, user: &str, password: &str) -> String {
    use base64::Engine;
    let mut s = connect_from(src, port).await;
    first_line(&mut s).await;
    let cred = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    s.write_all(format!("EHLO c\r\nAUTH PLAIN {cred}\r\nQUIT\r\n").as_bytes()).await.unwrap();
    let mut v = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut v)).await;
    let text = String::from_utf8_lossy(&v).to_string();
    text.lines().filter(|l| l.len() > 4 && l.as_bytes()[3] == b' ').nth(1).unwrap_or("").to_string()
}

#[tokio::test]
async fn wrong_passwords_lock_out_their_address_across_connections() {
    let (port, _s) = start(throttled(3, 100)).await;
    for _ in 0..3 {
        let r = login_from("127.0.0.1", port, "caseworker", "guess").await;
        assert!(r.starts_with("535 5.7.8"), "{r}");
    }
    // Locked: even the right password is not looked at, on a new connection too.
    let r = login_from("127.0.0.1", port, "caseworker", "s3cret").await;
    assert!(r.starts_with("454 4.7.0 Too many failed logins; try again in"), "{r}");
    // Another address logs in.
    let r = login_from("127.0.0.2", port, "caseworker", "s3cret").await;
    assert!(r.starts_with("235"), "{r}");
}

#[tokio::test]
async fn a_guessed_user_name_is_locked_for_strangers_but_not_where_it_logs_in() {
    let (port, _s) = start(throttled(100, 3)).await;
    assert!(login_from("127.0.0.2", port, "caseworker", "s3cret").await.starts_with("235"));
    // Guessing from three addresses: the name's counter, not any one address's.
    for src in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        assert!(login_from(src, port, "Caseworker", "guess").await.starts_with("535"));
    }
    let r = login_from("127.0.0.6", port, "caseworker", "s3cret").await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    let r = login_from("127.0.0.2", port, "caseworker", "s3cret").await;
    assert!(r.starts_with("235"), "the address it logged in from before is not locked out: {r}");
}
