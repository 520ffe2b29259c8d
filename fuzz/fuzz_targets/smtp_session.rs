#![no_main]
//! The SMTP session over an in-memory stream.
//!
//! Input starting with 0: raw client bytes (commands, DATA, AUTH, STARTTLS); the session
//! must end without panicking. Otherwise the rest is the body of one message, dot-stuffed
//! the way a conforming upstream MTA does (by CRLF lines only) and sent in one DATA. The
//! oracle: one DATA never yields more than one message; a body with a bare CR, bare LF or
//! NUL yields none; any other body arrives byte for byte.
use demail_smtp::{serve_connection, Accepted, AuthResult, Authenticated, Config, Envelope, Handler, Reject};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Sink(Mutex<Vec<Vec<u8>>>);

impl Handler for Sink {
    async fn authenticate(&self, user: &str, password: &str) -> AuthResult {
        if user == "u" && password == "p" {
            AuthResult::Accepted(Authenticated { user: user.into(), method: "password".into(), display: None })
        } else {
            AuthResult::Refused
        }
    }
    async fn deliver(&self, _env: &Envelope, msg: Vec<u8>) -> Result<Accepted, Reject> {
        self.0.lock().unwrap().push(msg);
        Ok(Accepted { id: "1".into() })
    }
}

fn tls() -> Arc<rustls::ServerConfig> {
    static TLS: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .unwrap();
        Arc::new(cfg)
    })
    .clone()
}

fn config() -> Arc<Config> {
    Arc::new(Config {
        tls: Some(tls()),
        offer_auth: true,
        allow_auth_without_tls: true,
        max_message_size: 1 << 20,
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        ..Config::default()
    })
}

/// Run a session on `input`; the replies and what was delivered.
fn session(input: Vec<u8>) -> (Vec<u8>, Vec<Vec<u8>>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let sink = Arc::new(Sink::default());
        let peer = "127.0.0.1:2525".parse().unwrap();
        let srv = tokio::spawn(serve_connection(server, peer, config(), sink.clone()));
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let write = async move {
            let _ = wr.write_all(&input).await;
            let _ = wr.shutdown().await;
        };
        let mut replies = Vec::new();
        let read = rd.read_to_end(&mut replies);
        let _ = tokio::join!(write, read);
        let _ = srv.await;
        let got = std::mem::take(&mut *sink.0.lock().unwrap());
        (replies, got)
    })
}

/// Dot-stuffing by CRLF lines, as a conforming client does.
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut line_start = true;
    for (i, &b) in body.iter().enumerate() {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
    }
    out
}

fn clean(body: &[u8]) -> bool {
    body.iter().enumerate().all(|(i, &b)| match b {
        0 => false,
        b'\n' => i > 0 && body[i - 1] == b'\r',
        b'\r' => body.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode == 0 {
        let _ = session(rest.to_vec());
        return;
    }
    let mut input = b"EHLO fuzz\r\nMAIL FROM:<a@stadt.de>\r\nRCPT TO:<b@x.de-mail.de>\r\nDATA\r\n".to_vec();
    input.extend(stuff(rest));
    input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    let (_, got) = session(input);
    assert!(got.len() <= 1, "one DATA yielded {} messages", got.len());
    if clean(rest) {
        let mut want = rest.to_vec();
        want.extend_from_slice(b"\r\n");
        assert_eq!(got, vec![want], "a clean body did not arrive byte for byte");
    } else {
        assert!(got.is_empty(), "a body with a bare CR/LF or NUL was taken");
    }
});
