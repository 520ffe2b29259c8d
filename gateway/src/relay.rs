//! Sending: to the provider (SMTP submission over verified TLS with AUTH) and to the
//! internal mail server (LMTP or SMTP), both with mail-send.

use crate::config::{Protocol, Provider, Secret, Target, TlsMode};
use demail_core::Error;
use mail_send::smtp::message::{Address, Message};
use mail_send::SmtpClientBuilder;
use std::borrow::Cow;
use std::time::Duration;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone)]
pub enum Failure {
    /// Try again later (connection, TLS, 4xx, authentication or configuration problems).
    Transient(String),
    /// The peer refused for good (5xx): bounce.
    Permanent(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Transient(s) | Failure::Permanent(s) => s,
        }
    }
}

fn classify(e: mail_send::Error) -> Failure {
    match e {
        mail_send::Error::UnexpectedReply(r) if r.code() >= 500 => {
            Failure::Permanent(format!("{} {}", r.code(), r.message()))
        }
        mail_send::Error::UnexpectedReply(r) => Failure::Transient(format!("{} {}", r.code(), r.message())),
        // A refused login is a configuration problem of ours, not the sender's: retry, don't bounce.
        mail_send::Error::AuthenticationFailed(r) => Failure::Transient(format!("AUTH {} {}", r.code(), r.message())),
        other => Failure::Transient(other.to_string()),
    }
}

/// mail-send always writes CRLF before the final dot; drop ours so the peer stores the exact bytes.
fn body(message: &[u8]) -> &[u8] {
    message.strip_suffix(b"\r\n").unwrap_or(message)
}

fn addr(a: &str) -> Address<'_> {
    Address { email: Cow::Borrowed(a), parameters: Default::default() }
}

fn connector(
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<TlsConnector, Failure> {
    demail_smtp::tls::client_config(ca, client).map(TlsConnector::from).map_err(Failure::Transient)
}

const TIMEOUT: Duration = Duration::from_secs(120);

/// What a provider transaction achieved when DATA was accepted.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Recipients the provider accepted (the message is theirs now).
    pub accepted: Vec<String>,
    /// Recipients refused for good at RCPT (5xx): bounce just these.
    pub refused: Vec<(String, String)>,
    /// Recipients refused for now at RCPT (4xx): try again later.
    pub deferred: Vec<(String, String)>,
}

/// A TOTP (RFC 6238: SHA-1, 6 digits, 30 s, one step of clock skew) from a base32
/// secret, as authenticator apps and hardware tokens take it.
pub fn totp(secret_b32: &str) -> Result<totp_rs::TOTP, Error> {
    let bad = |e: String| {
        Error::new(
            "totp.secret_invalid",
            "Das TOTP-Geheimnis ist kein gültiges Base32 (mindestens 128 Bit).",
            "The TOTP secret is not valid base32 (at least 128 bits).",
        )
        .caused_by(e)
    };
    let secret = totp_rs::Secret::Encoded(secret_b32.trim().to_ascii_uppercase());
    let bytes = secret.to_bytes().map_err(|e| bad(format!("{e:?}")))?;
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).map_err(|e| bad(e.to_string()))
}

/// The provider login's password: the token secret, followed by the current TOTP code
/// when the provider has a second factor configured (`totp_secret_*`): the login at
/// level "hoch" (reference §4).
pub fn provider_password(p: &Provider) -> Result<String, Error> {
    let mut password = p.secret().read()?;
    let second = Secret {
        secret_env: p.totp_secret_env.clone(),
        secret_keyring: p.totp_secret_keyring.clone(),
        credential: p.totp_secret_credential.clone(),
    };
    if second.sources() > 0 {
        let code = totp(&second.read()?)?.generate_current().map_err(|e| {
            Error::new("totp.clock", "Die Systemuhr ist nicht lesbar.", "The system clock cannot be read.").caused_by(e)
        })?;
        password.push_str(&code);
    }
    Ok(password)
}

/// Submit one message to a provider. Recipients are judged one by one: refusing some
/// does not stop the others. `before_data` runs just before DATA: from then on the
/// provider may hold the message even if we never see its answer.
pub async fn to_provider(
    p: &Provider,
    helo: &str,
    from: &str,
    rcpts: &[String],
    message: &[u8],
    before_data: impl FnOnce(),
) -> Result<Delivered, Failure> {
    let secret = provider_password(p).map_err(|e| Failure::Transient(e.to_string()))?;
    let client = match (&p.client_cert, &p.client_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let mut b = SmtpClientBuilder::new_with_tls_connector(p.host.clone(), p.port, connector(&p.ca, client)?)
        .implicit_tls(p.tls == TlsMode::Implicit)
        .helo_host(helo)
        .timeout(TIMEOUT)
        .credentials((p.username.clone(), secret));
    if let Some(name) = &p.tls_name {
        b.tls_hostname = name.clone();
    }
    if p.tls == TlsMode::None {
        return Err(Failure::Transient(format!("provider {}: TLS is mandatory / TLS ist Pflicht", p.name)));
    }
    let mut c = b.connect().await.map_err(classify)?;
    c.mail_from(from, &Default::default()).await.map_err(classify)?;
    let mut out = Delivered::default();
    for r in rcpts {
        match c.rcpt_to(r, &Default::default()).await {
            Ok(()) => out.accepted.push(r.clone()),
            Err(e) => match classify(e) {
                Failure::Permanent(why) => out.refused.push((r.clone(), why)),
                Failure::Transient(why) => out.deferred.push((r.clone(), why)),
            },
        }
    }
    if out.accepted.is_empty() {
        let _ = c.rset().await;
        tokio::spawn(async move {
            let _ = c.quit().await;
        });
        return Ok(out);
    }
    before_data();
    c.data(body(message)).await.map_err(classify)?;
    // QUIT in the background: the caller removes the message from the spool at once,
    // which keeps the window for a duplicate after a crash as small as possible.
    tokio::spawn(async move {
        let _ = c.quit().await;
    });
    Ok(out)
}

/// What the internal mail server did with each recipient.
#[derive(Debug, Default)]
pub struct Internal {
    pub done: Vec<String>,
    /// Refused for good, each with the server's answer.
    pub refused: Vec<(String, String)>,
    /// A temporary failure: it and every recipient after it are not settled.
    pub failure: Option<Failure>,
}

/// Deliver to the internal server, one session per recipient (LMTP answers per recipient
/// anyway). A permanent refusal of one recipient does not stop the others; a temporary
/// failure stops the attempt.
pub async fn to_internal(t: &Target, helo: &str, from: &str, rcpts: &[String], message: &[u8]) -> Internal {
    let mut out = Internal::default();
    let tls = match (&t.tls, &t.ca) {
        (TlsMode::None, _) => None,
        (_, Some(ca)) => match connector(ca, None) {
            Ok(c) => Some(c),
            Err(f) => return Internal { failure: Some(f), ..out },
        },
        (_, None) => {
            let f = Failure::Transient("deliver.ca missing for TLS / deliver.ca fehlt für TLS".into());
            return Internal { failure: Some(f), ..out };
        }
    };
    // mail-send wants a connector even for plain connections; an empty one trusts nothing.
    let conn = match &tls {
        Some(c) => c.clone(),
        None => match rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        {
            Ok(b) => TlsConnector::from(std::sync::Arc::new(
                b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth(),
            )),
            Err(e) => return Internal { failure: Some(Failure::Transient(e.to_string())), ..out },
        },
    };
    let mut b = SmtpClientBuilder::new_with_tls_connector(t.host.clone(), t.port, conn)
        .implicit_tls(t.tls == TlsMode::Implicit)
        .lmtp(t.protocol == Protocol::Lmtp)
        .helo_host(helo)
        .timeout(TIMEOUT);
    b.say_ehlo = true;
    for r in rcpts {
        let msg = Message { mail_from: addr(from), rcpt_to: vec![addr(r)], body: Cow::Borrowed(body(message)) };
        let res = if tls.is_some() {
            match b.connect().await {
                Ok(mut c) => {
                    let x = c.send(msg).await;
                    let _ = c.quit().await;
                    x
                }
                Err(e) => Err(e),
            }
        } else {
            match b.connect_plain().await {
                Ok(mut c) => {
                    let x = c.send(msg).await;
                    let _ = c.quit().await;
                    x
                }
                Err(e) => Err(e),
            }
        };
        match res {
            Ok(_) => out.done.push(r.clone()),
            Err(e) => match classify(e) {
                Failure::Permanent(why) => out.refused.push((r.clone(), why)),
                f => return Internal { failure: Some(f), ..out },
            },
        }
    }
    out
}
