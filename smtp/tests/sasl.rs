//! SASL mechanisms the application runs itself (the gateway's GSSAPI), through the
//! session's framing: challenges as `334 <base64>`, the 235 reply with the person, a
//! temporary refusal as 454, cancellation, and no PLAIN/LOGIN when password sign-in is off.

use base64::Engine;
use demail_smtp::{
    serve, Accepted, AuthResult, Authenticated, Config, Envelope, Handler, Reject, SaslExchange, SaslStep, SessionInfo,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A toy mechanism: challenge "who?", accept the answer "peter", say 454 to "later".
struct Toy {
    asked: bool,
}

impl SaslExchange for Toy {
    fn step<'a>(&'a mut self, response: &'a [u8]) -> Pin<Box<dyn Future<Output = SaslStep> + Send + 'a>> {
        Box::pin(async move {
            if !self.asked {
                self.asked = true;
                return SaslStep::Challenge(b"who?".to_vec());
            }
            match response {
                b"peter" => SaslStep::Finished(AuthResult::Accepted(Authenticated {
                    user: "peter@MUSTERSTADT.TEST".into(),
                    method: "kerberos".into(),
                    display: Some("Peter Meier".into()),
                })),
                b"later" => SaslStep::Finished(AuthResult::Unavailable(Reject::new(
                    454,
                    "4.7.0",
                    "Verzeichnis nicht erreichbar.",
                    "Directory unreachable.",
                ))),
                _ => SaslStep::Finished(AuthResult::Refused),
            }
        })
    }
}

#[derive(Default)]
struct App {
    got: Mutex<Vec<Envelope>>,
}

impl Handler for App {
    fn sasl_mechanisms(&self) -> u64 {
        smtp_proto::AUTH_GSSAPI
    }
    fn sasl_start(&self, mechanism: u64, _s: &SessionInfo) -> Option<Box<dyn SaslExchange>> {
        (mechanism == smtp_proto::AUTH_GSSAPI).then(|| Box::new(Toy { asked: false }) as Box<dyn SaslExchange>)
    }
    async fn deliver(&self, env: &Envelope, _msg: Vec<u8>) -> Result<Accepted, Reject> {
        self.got.lock().unwrap().push(env.clone());
        Ok(Accepted { id: "Q1".into() })
    }
}

async fn start() -> (u16, Arc<App>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = Arc::new(App::default());
    let cfg = Config {
        offer_auth: true,
        password_auth: false,
        require_auth: true,
        allow_auth_without_tls: true,
        ..Config::default()
    };
    tokio::spawn(serve(l, Arc::new(cfg), app.clone()));
    (port, app)
}

async fn talk(port: u16, lines: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    for l in lines {
        s.write_all(format!("{l}\r\n").as_bytes()).await.unwrap();
        // One reply per line, read until a final line arrived.
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            let last = text.trim_end_matches("\r\n").rsplit("\r\n").next().unwrap_or("").to_string();
            if last.len() >= 4 && last.as_bytes()[3] == b' ' && !last.starts_with("220") {
                break;
            }
        }
    }
    text
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn gssapi_like_exchange_signs_the_person_in() {
    let (port, app) = start().await;
    let t = talk(
        port,
        &[
            "EHLO c",
            "AUTH GSSAPI",
            &b64("peter"),
            "MAIL FROM:<peter.meier@musterstadt.test>",
            "RCPT TO:<a@b.de-mail.de>",
            "DATA",
            "Subject: x\r\n\r\nx\r\n.",
        ],
    )
    .await;
    assert!(t.contains("AUTH GSSAPI\r\n"), "only GSSAPI offered: {t}");
    assert!(!t.contains("PLAIN"), "{t}");
    assert!(t.contains(&format!("334 {}\r\n", b64("who?"))), "{t}");
    assert!(t.contains("235-2.7.0 Angemeldet als Peter Meier (kerberos).\r\n"), "{t}");
    assert!(t.contains("235 2.7.0 Authenticated as Peter Meier (kerberos).\r\n"), "{t}");
    let got = app.got.lock().unwrap();
    assert_eq!(got[0].session.auth_user.as_deref(), Some("peter@MUSTERSTADT.TEST"));
    assert_eq!(got[0].session.auth_method.as_deref(), Some("kerberos"));
}

#[tokio::test]
async fn refusals_cancel_and_temporary_failures() {
    let (port, app) = start().await;
    let t = talk(port, &["EHLO c", "AUTH GSSAPI", &b64("eve"), "MAIL FROM:<a@b.de>"]).await;
    assert!(t.contains("535 5.7.8"), "{t}");
    assert!(t.contains("530 5.7.0"), "no MAIL without sign-in: {t}");
    let t = talk(port, &["EHLO c", "AUTH GSSAPI", &b64("later"), "MAIL FROM:<a@b.de>"]).await;
    assert!(t.contains("454 4.7.0 Directory unreachable."), "{t}");
    assert!(t.contains("530 5.7.0"), "{t}");
    let t = talk(port, &["EHLO c", "AUTH GSSAPI", "*"]).await;
    assert!(t.contains("501 5.0.0"), "{t}");
    let t = talk(port, &["EHLO c", "AUTH GSSAPI", "%%%not base64"]).await;
    assert!(t.contains("501 5.5.2"), "{t}");
    // Password sign-in is off: PLAIN is refused outright.
    let t = talk(port, &["EHLO c", &format!("AUTH PLAIN {}", b64("\0peter\0pw"))]).await;
    assert!(t.contains("504 5.5.4"), "{t}");
    assert!(app.got.lock().unwrap().is_empty());
}
